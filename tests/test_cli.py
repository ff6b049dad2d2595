"""The ``ctxir`` command: every shipped config parses, the synthetic ones run end to end (geometry → joint /
frozen / context → test) on tiny rooms, DDP over 3 CPU processes gives the validation and test metrics of one
process on uneven splits, and a crashed fit resumes from its checkpoint without replaying steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_jaccard_index

from ctxir.cli import cli
from ctxir.data import SyntheticRoomsDataModule
from ctxir.data.collate import collate_scenes
from ctxir.tasks import UDFReconstructor

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*/*.yaml"))
SYNTHETIC = REPO / "configs" / "synthetic"


def small(cache: Path, batch_size: int = 1) -> list[str]:
    """Overrides that shrink any config's scenes, queries and test protocol."""
    data = dict(batch_size=batch_size, num_points=1024, num_queries=512, num_surface=1024, num_off_surface=1500,
                num_eval=1500, preprocess_workers=0, cache_dir=str(cache))
    return [f"--data.init_args.{key}={value}" for key, value in data.items()] + [
        "--model.init_args.test_resolution=24", "--model.init_args.test_num_points=1000",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.check_val_every_n_epoch=1",
    ]


def tiny(cache: Path, rooms: tuple[int, int, int] = (2, 1, 1), batch_size: int = 1) -> list[str]:
    """A synthetic config shrunk to a few small rooms."""
    train, val, test = rooms
    counts = [f"--data.init_args.num_train={train}", f"--data.init_args.num_val={val}",
              f"--data.init_args.num_test={test}"]
    return counts + small(cache, batch_size)


def csv_logger(save_dir: Path) -> list[str]:
    """A local logger in place of W&B (the learning-rate monitor of the configs needs one)."""
    return ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={save_dir}"]


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightningCLI warns when pytest's own arguments sit in ``sys.argv`` beside ``args``."""
    monkeypatch.setattr(sys, "argv", ["ctxir"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_config_set_is_complete() -> None:
    names = {f"{path.parent.name}/{path.stem}" for path in CONFIGS}
    stages = ("geometry", "joint", "frozen", "context")
    expected = {f"{data}/{stage}" for data in ("synthetic", "scannet", "scenenn", "stanford") for stage in stages}
    assert names == expected | {"triad/geometry"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_config_parses(config: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: ctxir.tasks." in printed and "class_path: ctxir.data." in printed
    assert "WandbLogger" in printed and "BestAndLastCheckpoint" in printed
    if config.parent.name != "synthetic":  # the paper's recipe on real data
        assert "devices: 3" in printed and "strategy: ddp" in printed and "sync_batchnorm: true" in printed
        assert "num_points: 10240" in printed and "num_queries: 50000" in printed and "batch_size: 4" in printed


def test_synthetic_configs_run_the_three_stages(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # the configs write under runs/ and point the tuners at runs/synthetic/geometry
    monkeypatch.setenv("WANDB_MODE", "offline")
    steps = ["--trainer.max_steps=2", "--trainer.limit_val_batches=1"]
    for stage in ("geometry", "joint", "frozen", "context"):
        run = cli(["fit", "--config", str(SYNTHETIC / f"{stage}.yaml"), *tiny(cache), *steps])
        assert run.trainer.global_step == 2, stage
        checkpoints = tmp_path / "runs" / "synthetic" / stage / "checkpoints"
        assert {"best.ckpt", "last.ckpt"} <= {p.name for p in checkpoints.iterdir()}, stage
        assert any((tmp_path / "runs" / "synthetic" / stage / "wandb").glob("offline-run-*")), stage
        metrics = run.trainer.callback_metrics
        assert "val/udf_mae" in metrics and ("val/miou" in metrics) == (stage != "geometry"), stage
    best = tmp_path / "runs" / "synthetic" / "context" / "checkpoints" / "best.ckpt"
    run = cli(["test", "--config", str(SYNTHETIC / "context.yaml"), *tiny(cache), f"--ckpt_path={best}",
               "--trainer.logger=false"])
    assert {"test/cd_l1", "test/f1", "test/miou", "test/mf1_2delta"} <= set(run.trainer.callback_metrics)
    assert "ContextualisedTuner test (1 scenes): CD-L1" in capsys.readouterr().out


def run_ddp(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m ctxir`` on three CPU processes (Lightning's launcher re-runs the command in each)."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    ddp = ["--trainer.accelerator=cpu", "--trainer.devices=3", "--trainer.strategy=ddp"]
    done = subprocess.run([sys.executable, "-m", "ctxir", *args, *ddp], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-1500:]
    return done


def room_predictions(checkpoint: Path, cache: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(predicted class, label) of every validation query of each of the four validation rooms, one room at a time."""
    model = UDFReconstructor.load_from_checkpoint(checkpoint).eval()
    sizes = dict(num_points=1024, num_queries=512, num_surface=1024, num_off_surface=1500, num_eval=1500)
    data = SyntheticRoomsDataModule(num_train=3, num_val=4, num_test=4, cache_dir=str(cache), **sizes)
    data.setup("validate")
    rooms = []
    with torch.no_grad():
        for index in range(len(data.datasets["val"])):
            batch = collate_scenes([data.datasets["val"][index]])
            rooms.append((model(batch)["logits"].argmax(1), batch["query_labels"]))
    return rooms


def pooled_miou(rooms: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Macro IoU over the queries of all ``rooms`` together (what one process validating them all reports)."""
    return float(multiclass_jaccard_index(torch.cat([p for p, _ in rooms]), torch.cat([t for _, t in rooms]), 13,
                                          ignore_index=-1))


def test_ddp_on_three_processes_gives_the_metrics_of_one_process_on_uneven_splits(cache: Path, tmp_path: Path) -> None:
    """Three CPU ranks validate four rooms (2 + 1 + 1) and then test four rooms: the checkpoint's best val/miou and
    every test metric must equal one process evaluating all rooms with the same weights. On these rooms, averaging
    per rank, or Lightning's default sampler (which repeats rooms to even the ranks out), gives other numbers."""
    rooms = tiny(cache, rooms=(3, 4, 4))
    args = ["--config", str(SYNTHETIC / "joint.yaml"), *rooms, f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.callbacks.dirpath={tmp_path / 'checkpoints'}"]
    run_ddp(["fit", *args, "--trainer.max_steps=2", *csv_logger(tmp_path / "fit")], tmp_path)
    best = tmp_path / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    state = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("BestAndLastCheckpoint"))
    assert torch.load(best.with_name("last.ckpt"), map_location="cpu", weights_only=True)["global_step"] == 2
    single = ["--trainer.devices=1", "--trainer.accelerator=cpu", "--trainer.logger=false",
              f"--trainer.default_root_dir={tmp_path / 'single'}", f"--ckpt_path={best}"]
    validated = cli(["validate", *args, *single])
    one_process = float(validated.trainer.callback_metrics["val/miou"])
    assert one_process == pytest.approx(float(state["best_model_score"]), rel=1e-6)
    per_room = room_predictions(best, cache)
    assert pooled_miou(per_room) == pytest.approx(one_process, rel=1e-6)
    per_rank = [[per_room[0], per_room[3]], [per_room[1]], [per_room[2]]]
    assert np.mean([pooled_miou(rank) for rank in per_rank]) != pytest.approx(one_process, rel=0.05)
    padded = [per_room[i] for i in (0, 3, 1, 0, 2, 1)]  # DistributedSampler's 6 slots for 4 rooms on 3 ranks
    assert pooled_miou(padded) != pytest.approx(one_process, rel=0.05)

    done = run_ddp(["test", *args, f"--ckpt_path={best}", *csv_logger(tmp_path / "test")], tmp_path)
    assert "UDFReconstructor test (4 scenes): CD-L1" in done.stdout
    (csv,) = (tmp_path / "test").rglob("metrics.csv")
    header, values = csv.read_text().strip().splitlines()[-2:]
    ddp_metrics = {key: float(value) for key, value in zip(header.split(","), values.split(",")) if value}
    tested = cli(["test", *args, *single]).trainer.callback_metrics
    assert {key for key in ddp_metrics if key.startswith("test/")} == set(tested)
    for key, value in tested.items():
        assert ddp_metrics[key] == pytest.approx(float(value), rel=1e-5, abs=1e-7), key


def test_a_crashed_fit_resumes_from_its_checkpoint_without_replaying_steps(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    common = ["fit", "--config", str(SYNTHETIC / "geometry.yaml"), *tiny(cache, rooms=(4, 1, 1)),
              "--trainer.max_epochs=2", *csv_logger(tmp_path), "--trainer.limit_val_batches=1",
              "--trainer.callbacks.every_n_train_steps=1"]
    uninterrupted = cli([*common, "--trainer.default_root_dir=full", "--trainer.callbacks.dirpath=full"])
    assert uninterrupted.trainer.global_step == 8  # 4 rooms per epoch, batch 1, 2 epochs
    crash = ["--trainer.callbacks+=tests.crash_callback.CrashAtStep", "--trainer.callbacks.step=3"]
    monkeypatch.syspath_prepend(str(REPO))
    with pytest.raises(RuntimeError, match="simulated crash at step 3"):
        cli([*common, "--trainer.default_root_dir=crashed", "--trainer.callbacks.dirpath=crashed", *crash])
    # Lightning runs checkpoint callbacks after the others: the crash after step 3 leaves step 2's state,
    # mid-way through epoch 0 (4 steps)
    last = torch.load(tmp_path / "crashed" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2
    resumed = cli([*common, "--trainer.default_root_dir=crashed", "--trainer.callbacks.dirpath=crashed",
                   "--trainer.callbacks+=tests.crash_callback.StepRecorder", "--ckpt_path=last"])
    (recorder,) = [c for c in resumed.trainer.callbacks if type(c).__name__ == "StepRecorder"]
    assert recorder.start_step == 2 and recorder.steps == 6  # ignored: 8 steps; replayed from epoch start: 8
    assert recorder.start_state.keys() == last["state_dict"].keys()
    assert all(torch.equal(recorder.start_state[k], v) for k, v in last["state_dict"].items())  # restored weights
    assert resumed.trainer.global_step == uninterrupted.trainer.global_step
    assert resumed.trainer.current_epoch == uninterrupted.trainer.current_epoch


def test_cross_training_geometry_from_synthetic_rooms_semantics_on_scannet(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paper Table 2's setting: the geometry checkpoint of one data set, tuned on another (here the ScanNet
    config, on raw-format ScanNet fixtures, with 20 classes instead of the rooms' 13)."""
    from data_fixtures import write_scannet_root

    monkeypatch.chdir(tmp_path)
    write_scannet_root(tmp_path / "scannet")
    geometry = cli(["fit", "--config", str(SYNTHETIC / "geometry.yaml"), *tiny(cache), "--trainer.max_epochs=1",
                    "--trainer.limit_val_batches=1", *csv_logger(tmp_path)])
    checkpoint = geometry.trainer.checkpoint_callback.best_model_path
    single_cpu = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
                  "--trainer.sync_batchnorm=false", "--data.init_args.num_workers=0"]
    tuned = cli(["fit", "--config", str(REPO / "configs" / "scannet" / "context.yaml"), *small(tmp_path / "cache"),
                 *single_cpu, *csv_logger(tmp_path), "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
                 f"--data.init_args.root={tmp_path / 'scannet'}", f"--model.init_args.reconstructor_ckpt={checkpoint}"])
    assert tuned.trainer.global_step == 2 and tuned.model.num_classes == 20
    assert "val/miou" in tuned.trainer.callback_metrics
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in tuned.model.geometry.encoder.state_dict().items():
        assert torch.equal(value, state[f"geometry.encoder.{key}"]), key
