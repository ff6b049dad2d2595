"""Configuration errors come before any heavy work, name the option, and reach the user as ctxir's own message
(through the CLI too, not as jsonargparse's "Does not validate against any of the Union subtypes")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ctxir.cli import cli
from ctxir.data import SyntheticRoomsDataModule
from ctxir.data.mesh import LabelledMesh, clean_mesh
from ctxir.eval import extract_mesh
from ctxir.nn import PointTransformerUNet, UDFDecoder
from ctxir.nn.config import module_spec
from ctxir.tasks import UDFReconstructor, WrongStageError

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "configs" / "synthetic"


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["ctxir"])


def fit_args(config: str, cache: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(SYNTHETIC / f"{config}.yaml"), "--trainer.logger=false",
            f"--data.init_args.cache_dir={cache}", *extra]


def tuner_checkpoint(path: Path, stage: str) -> Path:
    """A checkpoint with a real encoder and UDF decoder, as written by ``stage``."""
    encoder = PointTransformerUNet(3, 32, channels=(16, 32), blocks=(1, 1), neighbours=(8, 8))
    decoder = UDFDecoder(32)
    state = {**{f"geometry.encoder.{k}": v for k, v in encoder.state_dict().items()},
             **{f"geometry.udf_decoder.{k}": v for k, v in decoder.state_dict().items()}}
    torch.save({"state_dict": state, "ctxir_stage": stage,
                "hyper_parameters": {"encoder": module_spec(encoder), "udf_decoder": module_spec(decoder)}}, path)
    return path


def test_a_missing_reconstructor_ckpt_is_the_cli_error_itself(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"^reconstructor_ckpt {tmp_path}/none.ckpt: checkpoint not found$"):
        cli(fit_args("frozen", tmp_path / "cache", f"--model.init_args.reconstructor_ckpt={tmp_path}/none.ckpt"))
    assert not (tmp_path / "cache").exists()  # before any preprocessing


def test_a_reconstructor_ckpt_of_the_wrong_stage_is_named_through_the_cli(tmp_path: Path) -> None:
    checkpoint = tuner_checkpoint(tmp_path / "unfrozen.ckpt", "unfrozen")
    with pytest.raises(WrongStageError, match=f"reconstructor_ckpt {checkpoint}: written by the unfrozen stage.*"
                                              "accept_any_stage=True"):
        cli(fit_args("context", tmp_path / "cache", f"--model.init_args.reconstructor_ckpt={checkpoint}"))
    assert not (tmp_path / "cache").exists()


def test_the_console_script_prints_the_library_error_as_one_paragraph(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env.pop("CTXIR_TRACEBACK", None)
    done = subprocess.run(
        [sys.executable, "-m", "ctxir", *fit_args("frozen", tmp_path / "cache",
                                                  f"--model.init_args.reconstructor_ckpt={tmp_path}/none.ckpt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1
    error = done.stderr[done.stderr.index("ctxir: error:"):]
    assert error == (f"ctxir: error: reconstructor_ckpt {tmp_path}/none.ckpt: checkpoint not found\n"
                     "(set CTXIR_TRACEBACK=1 for the full traceback)\n")
    assert "Traceback" not in done.stderr and "Union subtypes" not in done.stderr and "Namespace(" not in done.stderr


@pytest.mark.parametrize(
    "option, value",
    [("batch_size", 0), ("num_points", -5), ("num_workers", -1), ("preprocess_workers", -1), ("num_queries", 0)],
)
def test_bad_datamodule_options_are_refused_before_preprocessing(option: str, value: int, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"^SyntheticRoomsDataModule: {option} must be an integer >= ., got {value}$"):
        cli(fit_args("geometry", tmp_path / "cache", f"--data.init_args.{option}={value}"))
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ratios": (0.0, 0.0, 0.0)}, "ratios must be >= 0 with a positive sum"),
        ({"sigmas": (0.1, -0.02, 0.003)}, "sigmas must be positive"),
        ({"sigmas": (0.1, 0.02)}, "need one ratio per sigma"),
        ({"num_val": -1}, "num_val must be an integer >= 0"),
        ({"cell_size": 0.0}, "cell_size must be positive"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
        ({"predict_splits": ("dev",)}, "predict_splits must be among"),
    ],
)
def test_datamodule_options_are_checked_where_they_are_given(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"SyntheticRoomsDataModule: {message}"):
        SyntheticRoomsDataModule(**options)


@pytest.mark.parametrize("chunk_size", [0, -3, 1.5])
def test_extract_mesh_names_a_bad_chunk_size(chunk_size: object) -> None:
    with pytest.raises(ValueError, match=f"chunk_size must be a positive integer .*got {chunk_size}"):
        extract_mesh(lambda q: q.norm(dim=1), ((-1, -1, -1), (1, 1, 1)), 8, chunk_size=chunk_size)


def test_an_unusable_mesh_names_its_file() -> None:
    vertices = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]])  # one face, of zero area
    mesh = LabelledMesh(vertices, [[0, 1, 2]], [0], [0], name="scene0000_00", source="/raw/scene0000_00.ply")
    with pytest.raises(ValueError, match=r"mesh 'scene0000_00' \(from /raw/scene0000_00.ply\): empty after cleaning"):
        clean_mesh(mesh)


@pytest.mark.parametrize("option, value, message", [
    ("test_resolution", 1, "test_resolution must be an integer >= 2, got 1"),
    ("test_num_points", 0, "test_num_points must be an integer >= 1, got 0"),
    ("lr", 0.0, "lr must be positive, got 0.0"),
    ("clamp", -0.1, "clamp must be positive, got -0.1"),
])
def test_bad_task_options_are_refused_when_the_task_is_built(option: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^UDFReconstructor: {message}$"):
        UDFReconstructor(encoder=PointTransformerUNet(3, 32, channels=(16, 32), blocks=(1, 1), neighbours=(8, 8)),
                         udf_decoder=UDFDecoder(32), **{option: value})
