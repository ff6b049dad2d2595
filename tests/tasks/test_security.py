"""Crafted checkpoints: a module spec may rebuild only allowed ``nn.Module`` classes, through every entry point
(``build_module``, ``reconstructor_ckpt``, ``load_from_checkpoint``, ``ctxir test --ckpt_path``); anything else
is refused before it is imported or called."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ctxir.cli import cli
from ctxir.nn import UDFDecoder
from ctxir.nn.config import UntrustedModuleError, build_module, module_spec, register_module
from ctxir.tasks import FrozenSemanticTuner, UDFReconstructor
from ctxir.tasks.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[2]
PROBE = "ctxir_security_probe"
"""A module on ``sys.path`` that writes a file when imported: importing it is the attack."""


@pytest.fixture()
def target(tmp_path: Path) -> Path:
    """A file the attacks try to overwrite."""
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    return path


@pytest.fixture()
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the probe module on ``sys.path``; returns the file its import would create."""
    marker = tmp_path / "imported.txt"
    (tmp_path / f"{PROBE}.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nclass Thing: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, PROBE, raising=False)
    return marker


def overwrite(target: Path) -> dict:
    """A spec calling ``write_manifest`` (a ctxir function, not a module) on ``target``."""
    return {"class_path": "ctxir.data.cache.write_manifest",
            "init_args": {"path": str(target), "unit_name": "x", "scene_names": [], "params": {}}}


def import_probe() -> dict:
    """A spec calling ``ctxir.import_module`` (re-exported by the package) on the probe module."""
    return {"class_path": "ctxir.import_module", "init_args": {"name": PROBE}}


def crafted_checkpoint(path: Path, encoder: dict, stage: str = "geometry") -> Path:
    """A checkpoint that looks like a geometry run's, with ``encoder`` as its stored encoder spec."""
    decoder = UDFDecoder(32)
    state = {f"geometry.udf_decoder.{k}": v for k, v in decoder.state_dict().items()}
    state["geometry.encoder.weight"] = torch.zeros(1)
    hparams = {"encoder": encoder, "udf_decoder": module_spec(decoder), "lr_schedule": "constant"}
    torch.save({"state_dict": state, "hyper_parameters": hparams, "ctxir_stage": stage,
                "pytorch-lightning_version": "2.6.6"}, path)
    return path


@pytest.mark.parametrize("spec", [overwrite, import_probe], ids=["write_manifest", "import_module"])
def test_build_module_refuses_callables_that_are_not_allowed_modules(spec, target: Path, probe: Path) -> None:
    made = spec(target) if spec is overwrite else spec()
    with pytest.raises(UntrustedModuleError, match="refusing to build"):
        build_module(made)
    assert target.read_text() == "keep me" and not probe.exists() and PROBE not in sys.modules


@pytest.mark.parametrize("path", ["torch.nn.Linear", f"{PROBE}.Thing", "os.system", "ctxir.nn.ops.knn"])
def test_only_the_allow_list_is_built(path: str, probe: Path) -> None:
    with pytest.raises(UntrustedModuleError):
        build_module({"class_path": path, "init_args": {}})
    assert not probe.exists()


def test_project_modules_build_under_both_names_and_registered_classes_only_once_registered() -> None:
    assert type(build_module({"class_path": "ctxir.nn.UDFDecoder", "init_args": {"feature_channels": 8}})) is UDFDecoder
    assert type(build_module(module_spec(UDFDecoder(8)))) is UDFDecoder

    class Scale(nn.Module):
        def __init__(self, factor: float) -> None:
            super().__init__()
            self.factor = factor

    spec = {"class_path": f"{Scale.__module__}.{Scale.__qualname__}", "init_args": {"factor": 2.0}}
    with pytest.raises(UntrustedModuleError):
        build_module(spec)
    register_module(Scale)
    assert build_module(spec).factor == 2.0
    with pytest.raises(TypeError, match="nn.Module"):
        register_module(print)  # type: ignore[arg-type]
    with pytest.raises(UntrustedModuleError, match="init_args"):
        build_module({"class_path": "ctxir.nn.UDFDecoder", "init_args": [32]})


@pytest.mark.parametrize("spec", [overwrite, import_probe], ids=["write_manifest", "import_module"])
def test_reconstructor_ckpt_with_a_crafted_spec_is_refused(spec, target: Path, probe: Path, tmp_path: Path) -> None:
    made = spec(target) if spec is overwrite else spec()
    checkpoint = crafted_checkpoint(tmp_path / "crafted.ckpt", made)
    with pytest.raises(UntrustedModuleError, match=f"reconstructor_ckpt {checkpoint}"):
        FrozenSemanticTuner(semantic_decoder={"class_path": "ctxir.nn.SemanticDecoder",
                                              "init_args": {"feature_channels": 32, "num_classes": 3}},
                            reconstructor_ckpt=str(checkpoint))
    with pytest.raises(UntrustedModuleError):
        read_checkpoint(checkpoint)
    assert target.read_text() == "keep me" and not probe.exists()


@pytest.mark.parametrize("spec", [overwrite, import_probe], ids=["write_manifest", "import_module"])
def test_load_from_checkpoint_with_a_crafted_spec_is_refused(spec, target: Path, probe: Path, tmp_path: Path) -> None:
    made = spec(target) if spec is overwrite else spec()
    checkpoint = crafted_checkpoint(tmp_path / "crafted.ckpt", made)
    with pytest.raises(UntrustedModuleError, match="refusing to build"):
        UDFReconstructor.load_from_checkpoint(checkpoint)
    assert target.read_text() == "keep me" and not probe.exists()


@pytest.mark.parametrize("spec", [overwrite, import_probe, lambda: {"class_path": f"{PROBE}.Thing"}],
                         ids=["write_manifest", "import_module", "foreign_module"])
def test_cli_ckpt_path_with_a_crafted_spec_is_refused_before_parsing_it(
    spec, target: Path, probe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning merges a ``--ckpt_path`` checkpoint's hyper-parameters into the config, and jsonargparse would
    import the classes they name: the checkpoint is vetted first."""
    monkeypatch.setattr(sys, "argv", ["ctxir"])
    made = spec(target) if spec is overwrite else spec()
    checkpoint = crafted_checkpoint(tmp_path / "crafted.ckpt", made)
    with pytest.raises(UntrustedModuleError, match=f"--ckpt_path {checkpoint}: refusing to build"):
        cli(["test", "--config", str(REPO / "configs" / "synthetic" / "geometry.yaml"), f"--ckpt_path={checkpoint}",
             "--trainer.logger=false", f"--data.init_args.cache_dir={tmp_path / 'cache'}"])
    assert target.read_text() == "keep me" and not probe.exists() and PROBE not in sys.modules
    assert not (tmp_path / "cache").exists()  # refused before any preprocessing


def test_cli_ckpt_path_naming_a_foreign_task_class_is_refused(
    probe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CLI-written checkpoint names its task class (``_class_path``); only an imported LightningModule is taken."""
    monkeypatch.setattr(sys, "argv", ["ctxir"])
    checkpoint = crafted_checkpoint(tmp_path / "crafted.ckpt", module_spec(UDFDecoder(32)))
    stored = torch.load(checkpoint, weights_only=True)
    stored["hyper_parameters"]["_class_path"] = f"{PROBE}.Thing"
    torch.save(stored, checkpoint)
    with pytest.raises(UntrustedModuleError, match=f"refusing the task class '{PROBE}.Thing'"):
        cli(["test", "--config", str(REPO / "configs" / "synthetic" / "geometry.yaml"), f"--ckpt_path={checkpoint}",
             "--trainer.logger=false", f"--data.init_args.cache_dir={tmp_path / 'cache'}"])
    assert not probe.exists() and PROBE not in sys.modules
