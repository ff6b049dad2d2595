"""The three tasks on tiny synthetic rooms: losses go down, frozen parts stay bitwise frozen, checkpoints
restore strictly, tuning works from stored encodings without the encoder, and the test protocol runs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from ctxir.data import SyntheticRoomsDataModule
from ctxir.eval import extract_mesh, reconstruction_metrics
from ctxir.eval.sampling import sample_mesh_surface
from ctxir.nn import ContextModule, PointTransformerUNet, SemanticDecoder, UDFDecoder
from ctxir.tasks import (
    CheckpointMismatchError,
    ContextualisedTuner,
    EncodingWriter,
    FrozenSemanticTuner,
    TestReport,
    UDFReconstructor,
    WrongStageError,
    strip_encoder,
)
from ctxir.tasks.base import TEST_BOUNDS

SIZES = dict(num_points=512, num_queries=1024, num_surface=512, num_off_surface=3000, num_eval=3000)
C = 13


def small_encoder() -> PointTransformerUNet:
    return PointTransformerUNet(3, 32, channels=(16, 32, 64), blocks=(1, 1, 1), neighbours=(8, 8, 8))


def trainer(root: Path, **kwargs: object) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=str(root), max_epochs=1)
    options.update(kwargs)
    return L.Trainer(**options)


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRoomsDataModule:
    dm = SyntheticRoomsDataModule(num_train=4, num_val=2, num_test=1, batch_size=2,
                                  cache_dir=str(tmp_path_factory.mktemp("cache")), **SIZES)
    dm.prepare_data()
    return dm


@pytest.fixture(scope="module")
def geometry_ckpt(datamodule: SyntheticRoomsDataModule, tmp_path_factory: pytest.TempPathFactory) -> Path:
    L.seed_everything(0)
    model = UDFReconstructor(encoder=small_encoder(), udf_decoder=UDFDecoder(32), lr_schedule="constant")
    root = tmp_path_factory.mktemp("geometry")
    t = trainer(root, max_epochs=2)
    t.fit(model, datamodule)
    path = root / "geometry.ckpt"
    t.save_checkpoint(path)
    return path


def batch_of(datamodule: SyntheticRoomsDataModule) -> dict:
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


def overfit(model: L.LightningModule, batch: dict, steps: int) -> list[float]:
    optimiser = model.configure_optimizers()
    model.train()
    losses = []
    for _ in range(steps):
        loss = model.training_step(batch, 0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


def test_geometry_fit_of_one_batch_beats_predicting_zero(datamodule: SyntheticRoomsDataModule) -> None:
    torch.manual_seed(0)
    model = UDFReconstructor(encoder=small_encoder(), udf_decoder=UDFDecoder(32), lr=3e-3, lr_schedule="constant")
    model.log = lambda *a, **k: None  # no trainer attached
    batch = batch_of(datamodule)
    zero = float(batch["query_udf"].clamp(max=0.1).sum()) / len(batch["scene"])  # the loss of predicting 0
    losses = overfit(model, batch, 100)
    assert losses[0] == pytest.approx(zero, rel=0.2)  # the output layer starts near 0 (output_init_scale)
    assert losses[-1] < 0.7 * zero


def test_geometry_loss_has_a_gradient_when_every_distance_is_predicted_below_zero(
    datamodule: SyntheticRoomsDataModule,
) -> None:
    torch.manual_seed(0)
    model = UDFReconstructor(encoder=small_encoder(), udf_decoder=UDFDecoder(32), lr_schedule="constant")
    model.log = lambda *a, **k: None
    with torch.no_grad():
        model.geometry.udf_decoder.out.bias.fill_(-100.0)  # the final ReLU outputs 0 everywhere
    batch = batch_of(datamodule)
    model.train()
    assert bool((model(batch)["udf"] == 0).all())
    model.training_step(batch, 0).backward()
    assert float(model.geometry.udf_decoder.out.bias.grad) < 0  # pushed up, out of the dead zone


def test_joint_baseline_learns_uncertainty_weights(datamodule: SyntheticRoomsDataModule) -> None:
    torch.manual_seed(0)
    model = UDFReconstructor(encoder=small_encoder(), udf_decoder=UDFDecoder(32), semantic_decoder=SemanticDecoder(32, C),
                             lr_schedule="constant")
    model.log = lambda *a, **k: None
    batch = batch_of(datamodule)
    losses = overfit(model, batch, 20)
    assert losses[-1] < losses[0]
    assert not torch.equal(model.loss_weighting.log_vars.detach(), torch.zeros(2))
    out = model(batch)
    assert out["logits"].shape == (batch["queries"].shape[0], C) and bool((out["udf"] >= 0).all())


def _frozen_state(model: L.LightningModule) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("geometry.encoder.", "geometry.udf_decoder."))}


class AssertFrozen(L.Callback):
    """Check at every training step that the frozen modules are in eval mode and carry no gradient."""

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args: object) -> None:
        for frozen in module.frozen_modules():
            assert not frozen.training
            assert not any(p.requires_grad for p in frozen.parameters())
        assert module.semantic_decoder.training


@pytest.mark.parametrize("kind", ["frozen", "context"])
def test_tuners_keep_encoder_and_udf_decoder_bitwise(
    kind: str, datamodule: SyntheticRoomsDataModule, geometry_ckpt: Path, tmp_path: Path
) -> None:
    if kind == "frozen":
        model = FrozenSemanticTuner(semantic_decoder=SemanticDecoder(32, C), reconstructor_ckpt=str(geometry_ckpt))
    else:
        model = ContextualisedTuner(context_module=ContextModule(), semantic_decoder=SemanticDecoder(36, C), reconstructor_ckpt=str(geometry_ckpt))
    checkpoint = torch.load(geometry_ckpt, weights_only=True)["state_dict"]
    before = _frozen_state(model)
    assert before.keys() == {k for k in checkpoint if k.startswith(("geometry.encoder.", "geometry.udf_decoder."))}
    assert all(torch.equal(before[k], checkpoint[k]) for k in before)
    decoder_before = {k: v.clone() for k, v in model.semantic_decoder.state_dict().items()}
    t = trainer(tmp_path, max_epochs=2, callbacks=[AssertFrozen()])
    t.fit(model, datamodule)
    after = _frozen_state(model)
    assert all(torch.equal(after[k], checkpoint[k]) for k in after)  # weights and BatchNorm statistics
    assert any(not torch.equal(v, model.semantic_decoder.state_dict()[k]) for k, v in decoder_before.items())
    assert "val/miou" in t.callback_metrics and "val/udf_mae" in t.callback_metrics
    assert model.class_names[:2] == ["wall", "floor"]  # adopted from the DataModule
    # the tuner's own checkpoint rebuilds without the reconstructor checkpoint
    t.save_checkpoint(tmp_path / "tuner.ckpt")
    reloaded = type(model).load_from_checkpoint(tmp_path / "tuner.ckpt", reconstructor_ckpt="/nonexistent")
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_unfrozen_encoder_is_trained_by_segmentation_alone(
    datamodule: SyntheticRoomsDataModule, geometry_ckpt: Path, tmp_path: Path
) -> None:
    model = FrozenSemanticTuner(semantic_decoder=SemanticDecoder(32, C), reconstructor_ckpt=str(geometry_ckpt), freeze_encoder=False)
    before = _frozen_state(model)
    trainer(tmp_path).fit(model, datamodule)
    after = _frozen_state(model)
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("geometry.encoder."))
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("geometry.udf_decoder."))


def test_context_decoder_width_must_match(geometry_ckpt: Path) -> None:
    with pytest.raises(ValueError, match="32 \\+ 4 = 36"):
        ContextualisedTuner(context_module=ContextModule(), semantic_decoder=SemanticDecoder(32, C), reconstructor_ckpt=str(geometry_ckpt))


def test_mismatching_checkpoint_names_keys_and_shapes(geometry_ckpt: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(geometry_ckpt, weights_only=False)
    state = checkpoint["state_dict"]
    key = next(k for k in state if k.startswith("geometry.udf_decoder.") and k.endswith("weight") and state[k].ndim == 2)
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    del state["geometry.encoder.head.0.bias"]
    state["geometry.encoder.extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.ckpt"
    torch.save(checkpoint, bad)
    with pytest.raises(CheckpointMismatchError) as info:
        FrozenSemanticTuner(semantic_decoder=SemanticDecoder(32, C), reconstructor_ckpt=str(bad))
    message = str(info.value)
    assert key in message and "shape mismatches" in message
    state[key] = state[key][:-1]
    torch.save(checkpoint, bad)
    with pytest.raises(CheckpointMismatchError) as info:
        FrozenSemanticTuner(semantic_decoder=SemanticDecoder(32, C), reconstructor_ckpt=str(bad))
    assert "geometry.encoder.head.0.bias" in str(info.value) and "geometry.encoder.extra.weight" in str(info.value)
    with pytest.raises(FileNotFoundError):
        FrozenSemanticTuner(semantic_decoder=SemanticDecoder(32, C), reconstructor_ckpt=str(tmp_path / "missing.ckpt"))


def test_tuning_from_stored_encodings_without_the_encoder(
    datamodule: SyntheticRoomsDataModule, geometry_ckpt: Path, tmp_path: Path
) -> None:
    # 1. write every scene's encodings with the trained reconstructor
    reconstructor = UDFReconstructor.load_from_checkpoint(geometry_ckpt)
    writer_dm = SyntheticRoomsDataModule(num_train=4, num_val=2, num_test=1, batch_size=2,
                                         cache_dir=datamodule.cache_dir, predict_splits=("train", "val", "test"),
                                         **SIZES)
    out = tmp_path / "encodings"
    trainer(tmp_path, callbacks=[EncodingWriter(str(out))]).predict(reconstructor, writer_dm, return_predictions=False)
    assert len(list(out.glob("*.npz"))) == 7
    # 2. a checkpoint with the encoder deleted
    headless = strip_encoder(geometry_ckpt, tmp_path / "no_encoder.ckpt")
    assert not any(k.startswith("geometry.encoder.") for k in torch.load(headless, weights_only=True)["state_dict"])
    encoded_dm = SyntheticRoomsDataModule(num_train=4, num_val=2, num_test=1, batch_size=2,
                                          cache_dir=datamodule.cache_dir, encodings_dir=str(out), **SIZES)
    encoded_dm.setup("fit")
    batch = next(iter(encoded_dm.val_dataloader()))
    reconstructor.eval()
    with torch.no_grad():
        computed = reconstructor.geometry.encode(batch["points"], batch["point_batch"])
    torch.testing.assert_close(batch["encodings"], computed, rtol=1e-4, atol=1e-5)
    # 3. a tuner without encoder trains, validates and tests from the stored encodings
    model = ContextualisedTuner(context_module=ContextModule(), semantic_decoder=SemanticDecoder(36, C), reconstructor_ckpt=str(headless),
                                test_resolution=24, test_num_points=500)
    assert model.geometry.encoder is None
    t = trainer(tmp_path / "headless")
    t.fit(model, encoded_dm)
    stored = t.validate(model, encoded_dm, verbose=False)[0]
    assert {"test/cd_l1", "test/miou", "test/mf1"} <= set(t.test(model, encoded_dm, verbose=False)[0])
    # 4. the same weights with the encoder and raw points give the same validation metrics
    with_encoder = ContextualisedTuner(context_module=ContextModule(), semantic_decoder=SemanticDecoder(36, C), reconstructor_ckpt=str(geometry_ckpt))
    with_encoder.context_module.load_state_dict(model.context_module.state_dict())
    with_encoder.semantic_decoder.load_state_dict(model.semantic_decoder.state_dict())
    recomputed = trainer(tmp_path / "encoder").validate(with_encoder, datamodule, verbose=False)[0]
    assert stored.keys() == recomputed.keys()
    for key, value in recomputed.items():
        assert stored[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    with pytest.raises(ValueError, match="no encoder weights"):
        FrozenSemanticTuner(semantic_decoder=SemanticDecoder(32, C), reconstructor_ckpt=str(headless), freeze_encoder=False)


class SphereUDF(torch.nn.Module):
    """An exact UDF (sphere of radius 0.3) standing in for a trained decoder, so the extracted surface is known."""

    k = 4

    def forward(self, points: torch.Tensor, codes: torch.Tensor, queries: torch.Tensor, *_: object, **__: object) -> torch.Tensor:
        return (queries.norm(dim=1) - 0.3).abs() + 0 * codes.sum()


def test_test_stage_reports_the_paper_metrics(
    datamodule: SyntheticRoomsDataModule, geometry_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model = UDFReconstructor.load_from_checkpoint(geometry_ckpt, test_resolution=32, test_num_points=2000)
    model.geometry.udf_decoder = SphereUDF()
    metrics = trainer(tmp_path, callbacks=[TestReport()]).test(model, datamodule, verbose=False)[0]
    assert set(metrics) == {"test/cd_l1", "test/cd_l2", "test/f1", "test/f1_2delta", "test/num_scenes"}
    assert "CD-L1" in capsys.readouterr().out
    # the same numbers by hand: extract the sphere, sample it, score it against the test scene's GT points
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))
    vertices, faces = extract_mesh(lambda q: SphereUDF()(q, q, q), TEST_BOUNDS, 32)
    samples, _ = sample_mesh_surface(vertices, faces, 2000, seed=0)
    assert np.abs(np.linalg.norm(samples, axis=1) - 0.3).max() < 0.01
    expected = reconstruction_metrics(samples, batch["eval_points"].numpy())
    for key, value in expected.items():
        assert metrics[f"test/{key}"] == pytest.approx(float(value), rel=1e-5), key


# -- checkpoint stages and diverged models ----------------------------------------------------------------
def relabelled(geometry_ckpt: Path, path: Path, stage: str | None) -> Path:
    """The geometry checkpoint as if another stage (or, with ``None``, no ctxir task) had written it."""
    checkpoint = torch.load(geometry_ckpt, weights_only=True)
    checkpoint.pop("ctxir_stage")
    if stage is not None:
        checkpoint["ctxir_stage"] = stage
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("stage", ["frozen", "unfrozen", "context", None])
def test_reconstructor_ckpt_of_another_stage_needs_accept_any_stage(
    stage: str | None, geometry_ckpt: Path, tmp_path: Path
) -> None:
    path = relabelled(geometry_ckpt, tmp_path / "other.ckpt", stage)
    found = f"written by the {stage} stage" if stage else "records no stage"
    with pytest.raises(WrongStageError, match=rf"reconstructor_ckpt {path}: {found}.*geometry or joint.*accept_any_stage"):
        FrozenSemanticTuner(semantic_decoder=SemanticDecoder(32, C), reconstructor_ckpt=str(path))
    with pytest.raises(WrongStageError, match=found):
        ContextualisedTuner(context_module=ContextModule(), semantic_decoder=SemanticDecoder(36, C),
                            reconstructor_ckpt=str(path))
    model = FrozenSemanticTuner(semantic_decoder=SemanticDecoder(32, C), reconstructor_ckpt=str(path),
                                accept_any_stage=True)
    state = torch.load(geometry_ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(value, state[key]) for key, value in _frozen_state(model).items())
    assert model.hparams.accept_any_stage is True


def test_joint_checkpoints_are_geometry_models(geometry_ckpt: Path, tmp_path: Path) -> None:
    path = relabelled(geometry_ckpt, tmp_path / "joint.ckpt", "joint")
    assert FrozenSemanticTuner(semantic_decoder=SemanticDecoder(32, C), reconstructor_ckpt=str(path)).geometry.encoder


class NaNUDF(torch.nn.Module):
    """A UDF decoder that has diverged."""

    k = 4

    def forward(self, points: torch.Tensor, codes: torch.Tensor, queries: torch.Tensor, *_: object, **__: object) -> torch.Tensor:
        return torch.full_like(queries[:, 0], float("nan")) + 0 * codes.sum()


def test_a_diverged_model_gets_an_error_not_a_score(
    datamodule: SyntheticRoomsDataModule, geometry_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model = UDFReconstructor.load_from_checkpoint(geometry_ckpt, test_resolution=16, test_num_points=200)
    model.geometry.udf_decoder = NaNUDF()
    with pytest.raises(FloatingPointError, match=r"UDFReconstructor at step 0, validation batch 0 \(scenes val_0000, "
                                                 r"val_0001\): 2048 of 2048 predicted distances are NaN or Inf"):
        trainer(tmp_path).validate(model, datamodule, verbose=False)
    with pytest.raises(FloatingPointError, match="test scene test_0000: the UDF returned NaN or Inf"):
        trainer(tmp_path, callbacks=[TestReport()]).test(model, datamodule, verbose=False)
    assert "CD-L1" not in capsys.readouterr().out  # no Table 1 row for a diverged model
    tuner = FrozenSemanticTuner(semantic_decoder=SemanticDecoder(32, C), reconstructor_ckpt=str(geometry_ckpt))
    with torch.no_grad():
        tuner.semantic_decoder.out.bias[3] = float("inf")
    with pytest.raises(FloatingPointError, match=r"FrozenSemanticTuner at step 0, validation batch 0 .* class logits"):
        trainer(tmp_path).validate(tuner, datamodule, verbose=False)


class HeightClasses(torch.nn.Module):
    """A semantic decoder whose answer is known: floor, wall or ceiling by the height of the query."""

    num_classes = C

    def forward(self, points: torch.Tensor, features: torch.Tensor, queries: torch.Tensor, *_: object, **__: object) -> torch.Tensor:
        return torch.nn.functional.one_hot(height_class(queries), C).float() + 0 * features.sum()


def height_class(queries: torch.Tensor | np.ndarray) -> torch.Tensor:
    z = torch.as_tensor(queries)[:, 2]
    return torch.where(z < -0.15, 1, torch.where(z > 0.15, 12, 0))  # floor, wall, ceiling


def f_score_by_hand(pred: np.ndarray, gt: np.ndarray, threshold: float) -> float:
    """F1 at ``threshold`` between two point sets, from the full distance matrix."""
    distances = np.linalg.norm(pred[:, None] - gt[None], axis=2)
    precision, recall = (distances.min(1) <= threshold).mean(), (distances.min(0) <= threshold).mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def semantics_by_hand(pred: np.ndarray, labels: np.ndarray, gt: np.ndarray, gt_labels: np.ndarray) -> dict[str, float]:
    """mIoU, mF1-δ and mF1-2δ of one scene by brute force, as SPEC §4 and ``ctxir.eval.functional`` define them."""
    nearest = gt_labels[np.linalg.norm(pred[:, None] - gt[None], axis=2).argmin(1)]
    keep = nearest >= 0
    pred, labels, nearest = pred[keep], labels[keep], nearest[keep]
    classes = np.unique(gt_labels[gt_labels >= 0])
    iou, f1, f1_2delta = [], [], []
    for c in classes:
        true_pos = np.sum((labels == c) & (nearest == c))
        union = np.sum((labels == c) | (nearest == c))
        iou.append(true_pos / union if union else 0.0)
        predicted = (labels == c).any()
        f1.append(f_score_by_hand(pred[labels == c], gt[gt_labels == c], 0.005) if predicted else 0.0)
        f1_2delta.append(f_score_by_hand(pred[labels == c], gt[gt_labels == c], 0.01) if predicted else 0.0)
    return {"miou": float(np.mean(iou)), "mf1": float(np.mean(f1)), "mf1_2delta": float(np.mean(f1_2delta))}


def test_test_stage_semantic_metrics_on_two_scenes_per_batch_match_a_brute_force_computation(
    datamodule: SyntheticRoomsDataModule, geometry_ckpt: Path, tmp_path: Path
) -> None:
    two = SyntheticRoomsDataModule(num_train=4, num_val=2, num_test=2, batch_size=2, cache_dir=datamodule.cache_dir,
                                   **SIZES)
    two.prepare_data()  # only the second test room is new
    model = FrozenSemanticTuner(semantic_decoder=SemanticDecoder(32, C), reconstructor_ckpt=str(geometry_ckpt),
                                test_resolution=32, test_num_points=1500)
    model.geometry.udf_decoder, model.semantic_decoder = SphereUDF(), HeightClasses()
    metrics = trainer(tmp_path).test(model, two, verbose=False)[0]
    two.setup("test")
    (batch,) = list(two.test_dataloader())
    assert batch["scene"] == ["test_0000", "test_0001"]
    vertices, faces = extract_mesh(lambda q: SphereUDF()(q, q, q), TEST_BOUNDS, 32)
    per_scene = []
    for scene in range(2):
        samples, _ = sample_mesh_surface(vertices, faces, 1500, seed=scene)
        rows = (batch["eval_batch"] == scene).numpy()
        per_scene.append(semantics_by_hand(samples, height_class(samples).numpy(), batch["eval_points"].numpy()[rows],
                                           batch["eval_labels"].numpy()[rows]))
    assert per_scene[0]["miou"] != pytest.approx(per_scene[1]["miou"], abs=1e-3)  # the scene mean is not one scene's
    assert metrics["test/num_scenes"] == 2
    for key in ("miou", "mf1", "mf1_2delta"):
        assert metrics[f"test/{key}"] == pytest.approx(np.mean([s[key] for s in per_scene]), rel=1e-5), key
