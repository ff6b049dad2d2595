"""A diverged model gets an error, not a score: NaN/Inf in a UDF during extraction and in a checkpoint's weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ctxir.eval import extract_mesh
from ctxir.nn import PointTransformerUNet, UDFDecoder
from ctxir.tasks import UDFReconstructor
from ctxir.tasks.backbone import GeometryBackbone
from ctxir.tasks.checkpoint import read_checkpoint

BOUNDS = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))


def sphere(queries: torch.Tensor) -> torch.Tensor:
    return (queries.norm(dim=1) - 0.3).abs()


def test_a_finite_sphere_still_extracts() -> None:
    vertices, faces = extract_mesh(sphere, BOUNDS, 24)
    assert len(faces) > 100 and np.abs(np.linalg.norm(vertices, axis=1) - 0.3).max() < 0.02


@pytest.mark.parametrize("narrow_band", [True, False])
@pytest.mark.parametrize(
    "broken",
    [
        lambda q: torch.full_like(q[:, 0], float("nan")),  # fully diverged: was an empty mesh
        lambda q: torch.where(q[:, 0] > 0, torch.nan, sphere(q)),  # was half the surface, silently
        lambda q: torch.where(q[:, 2] > 0.4, torch.inf, sphere(q)),
    ],
    ids=["nan_everywhere", "nan_on_half", "inf_on_top"],
)
def test_non_finite_udf_values_stop_extraction(broken, narrow_band: bool) -> None:
    with pytest.raises(FloatingPointError, match=r"the UDF returned NaN or Inf at \d+ of \d+ query points"):
        extract_mesh(broken, BOUNDS, 24, narrow_band=narrow_band)


def test_non_finite_values_are_caught_on_the_finite_difference_path_too() -> None:
    def detached(queries: torch.Tensor) -> torch.Tensor:  # no graph: gradients by finite differences
        return torch.where(queries[:, 1] < -0.2, torch.nan, sphere(queries)).detach()

    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        extract_mesh(detached, BOUNDS, 24, gradient="finite_difference")


def geometry_checkpoint(path: Path, poison: bool) -> Path:
    model = UDFReconstructor(encoder=PointTransformerUNet(3, 32, channels=(16, 32), blocks=(1, 1), neighbours=(8, 8)),
                             udf_decoder=UDFDecoder(32), lr_schedule="constant")
    state = model.state_dict()
    if poison:
        state["geometry.udf_decoder.out.bias"].fill_(float("nan"))
        state["geometry.encoder.head.0.weight"][0, 0] = float("inf")
    torch.save({"state_dict": state, "hyper_parameters": dict(model.hparams), "ctxir_stage": "geometry",
                "pytorch-lightning_version": "2.6.6"}, path)
    return path


def test_checkpoints_with_nan_or_inf_weights_are_refused_everywhere(tmp_path: Path) -> None:
    good = geometry_checkpoint(tmp_path / "good.ckpt", poison=False)
    assert GeometryBackbone.restore(good).encoder is not None
    bad = geometry_checkpoint(tmp_path / "bad.ckpt", poison=True)
    message = rf"{bad}: NaN or Inf weights .* in 2 tensors: geometry\.encoder\.head\.0\.weight \(1 of \d+\)"
    with pytest.raises(FloatingPointError, match=message):
        read_checkpoint(bad)
    with pytest.raises(FloatingPointError, match=rf"reconstructor_ckpt {bad}: NaN or Inf"):
        GeometryBackbone.restore(bad, option="reconstructor_ckpt")
    with pytest.raises(FloatingPointError, match=r"UDFReconstructor checkpoint: NaN or Inf weights.*out\.bias"):
        UDFReconstructor.load_from_checkpoint(bad)
