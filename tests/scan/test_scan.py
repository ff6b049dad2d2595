"""``ctxir scan`` on a synthetic room exported as a survey-frame point cloud: the mesh lies where the test stage
puts it (mapped back to the scan's frame), labels are the test stage's, and bad checkpoints and scans write
nothing."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from ctxir.cli import main
from ctxir.core.surface import sample_surface
from ctxir.data import SyntheticRoomsDataModule
from ctxir.data.keys import Key
from ctxir.data.synthetic import SYNTHETIC_CLASSES, generate_room
from ctxir.eval import reconstruction_metrics
from ctxir.nn import ContextModule, PointTransformerUNet, SemanticDecoder, UDFDecoder
from ctxir.scan import ScanError, load_scan_model, reconstruct_scan
from ctxir.scan.command import check_names, run, scan_file
from ctxir.scan.outputs import publish
from ctxir.tasks import ContextualisedTuner, UDFReconstructor, WrongStageError, strip_encoder

NUM_POINTS, RESOLUTION, TEST_POINTS = 512, 24, 4000
YAW, FEET = np.radians(35.0), 3.28084
OFFSET = np.array([3000.0, -7000.0, 250.0]) * FEET  # thousands of metres away, in feet


def trainer(root: Path, steps: int) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, default_root_dir=str(root), max_steps=steps, limit_val_batches=0)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A geometry and a context checkpoint of tiny models, trained for a few steps (real, if weak)."""
    root = tmp_path_factory.mktemp("scan_models")
    dm = SyntheticRoomsDataModule(num_train=2, num_val=1, num_test=1, batch_size=2, cache_dir=str(root / "cache"),
                                  num_points=NUM_POINTS, num_queries=1024, num_surface=NUM_POINTS,
                                  num_off_surface=3000, num_eval=1000)
    L.seed_everything(0)
    encoder = PointTransformerUNet(3, 32, channels=(16, 32, 64), blocks=(1, 1, 1), neighbours=(8, 8, 8))
    geometry = UDFReconstructor(encoder=encoder, udf_decoder=UDFDecoder(32), lr=3e-3, lr_schedule="constant",
                                test_resolution=RESOLUTION)
    t = trainer(root, 6)
    t.fit(geometry, dm)
    t.save_checkpoint(root / "geometry.ckpt")
    context = ContextualisedTuner(context_module=ContextModule(), semantic_decoder=SemanticDecoder(36, 13),
                                  reconstructor_ckpt=str(root / "geometry.ckpt"), lr_schedule="constant")
    t = trainer(root, 2)
    t.fit(context, dm)
    t.save_checkpoint(root / "context.ckpt")
    return {"geometry": root / "geometry.ckpt", "context": root / "context.ckpt"}


def to_survey_frame(points: np.ndarray) -> np.ndarray:
    """Metres of the generated room → rotated about z, in feet, thousands of metres from the origin."""
    c, s = np.cos(YAW), np.sin(YAW)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return points @ rotation.T * FEET + OFFSET


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray | Path]:
    """A synthetic room in the survey frame: its scan as a float64 PLY point cloud and GT surface samples."""
    mesh = generate_room(seed=5)
    vertices = to_survey_frame(np.asarray(mesh.vertices, dtype=np.float64))
    scan, _ = sample_surface(vertices, mesh.faces, 3 * NUM_POINTS, np.random.default_rng(1))
    gt, gt_faces = sample_surface(vertices, mesh.faces, TEST_POINTS, np.random.default_rng(2))
    path = tmp_path_factory.mktemp("room") / "room.ply"
    PlyData([PlyElement.describe(np.rec.fromarrays(scan.T, names="x,y,z", formats="f8,f8,f8"), "vertex")]).write(
        str(path))
    return {"path": path, "scan": scan, "gt": gt, "gt_labels": mesh.face_labels[gt_faces]}


def test_pipeline_puts_the_test_stage_mesh_and_labels_into_the_scan_frame(
    checkpoints: dict[str, Path], room: dict, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", "--ckpt_path", str(checkpoints["context"]), "--num_points", str(NUM_POINTS),
              "--resolution", str(RESOLUTION), "--out_dir", str(out), str(room["path"])])
    assert exit_info.value.code == 0
    assert sorted(p.name for p in out.iterdir()) == ["room.json", "room.ply", "room.png", "room_points.ply"]

    # the test stage on the same room: normalised by the scan's bounding box, seeded random subset of 512
    scan, gt = room["scan"], room["gt"]
    lo, hi = scan.min(axis=0), scan.max(axis=0)
    center, scale = (lo + hi) / 2, float((hi - lo).max())
    normalised = torch.from_numpy(((scan - center) / scale).astype(np.float32))
    subset = torch.from_numpy(np.sort(np.random.default_rng(0).choice(len(scan), NUM_POINTS, replace=False)))
    model = ContextualisedTuner.load_from_checkpoint(checkpoints["context"], test_resolution=RESOLUTION,
                                                  test_num_points=TEST_POINTS).eval()
    batch = {Key.SCENE: ["room"], Key.POINTS: normalised[subset], Key.POINT_BATCH: torch.zeros(NUM_POINTS, dtype=torch.long),
             Key.EVAL_POINTS: torch.from_numpy(((gt - center) / scale).astype(np.float32)),
             Key.EVAL_LABELS: torch.from_numpy(room["gt_labels"]), Key.EVAL_BATCH: torch.zeros(len(gt), dtype=torch.long)}
    meshes = []
    extract = model.scene_mesh
    model.scene_mesh = lambda *args: meshes.append(extract(*args)) or meshes[-1]  # keep the test stage's mesh
    model.test_step(batch, 0)
    test_cd = float(model.test_reconstruction.compute()["cd_l1"])
    test_vertices, test_faces = meshes[0]
    assert len(test_faces) > 0

    mesh = PlyData.read(str(out / "room.ply"))
    vertices = np.column_stack([mesh["vertex"][axis] for axis in "xyz"])
    faces = np.stack(mesh["face"]["vertex_indices"]).astype(np.int64)
    assert vertices.dtype == np.float64
    np.testing.assert_array_equal(faces, test_faces)
    np.testing.assert_allclose((vertices - center) / scale, test_vertices, atol=1e-5)
    # Chamfer in the scan's own frame and units against the room, ÷ scale = the test stage's
    samples, _ = sample_surface(vertices, faces, TEST_POINTS, np.random.default_rng(0))
    scan_cd = reconstruction_metrics(samples, gt)["cd_l1"] / scale
    assert scan_cd == pytest.approx(test_cd, rel=1e-3)
    assert scan_cd < 0.5 * float(np.linalg.norm(hi - lo)) / scale  # on the room, not somewhere near the origin

    # labels: the semantic decoder on the test stage's features at the face centroids and at every scan point
    with torch.no_grad():
        _, features = model.scene_fields(batch)
        centroids = torch.from_numpy(test_vertices[test_faces].mean(axis=1))
        face_labels = model.semantic_decoder(batch[Key.POINTS], features, centroids).argmax(1).numpy()
        point_labels = model.semantic_decoder(batch[Key.POINTS], features, normalised).argmax(1).numpy()
    np.testing.assert_array_equal(mesh["face"]["label"], face_labels)
    cloud = PlyData.read(str(out / "room_points.ply"))["vertex"]
    np.testing.assert_array_equal(np.column_stack([cloud[axis] for axis in "xyz"]), scan)
    np.testing.assert_array_equal(cloud["label"], point_labels)

    report = json.loads((out / "room.json").read_text())
    assert report["stage"] == "context" and report["class_names"] == list(SYNTHETIC_CLASSES)
    np.testing.assert_allclose(report["normalisation"]["center"], center, rtol=0, atol=1e-9)
    assert report["normalisation"]["scale"] == pytest.approx(scale, rel=1e-12)
    corners = test_vertices[test_faces].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    assert report["total_area"] == pytest.approx(area.sum() * scale**2, rel=1e-4)  # square feet
    by_class = np.bincount(face_labels, weights=area, minlength=13) * scale**2
    assert [report["class_area"][name] for name in SYNTHETIC_CLASSES] == pytest.approx(by_class.tolist(), rel=1e-4, abs=1e-9)
    assert report["num_input_points"] == 3 * NUM_POINTS and report["num_encoded_points"] == NUM_POINTS
    assert {"read", "encode", "extract", "label", "render"} <= set(report["timings_s"])
    assert (out / "room.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_geometry_checkpoint_gives_an_unlabelled_mesh_and_bad_scans_write_nothing(
    checkpoints: dict[str, Path], room: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    few, holes = tmp_path / "few.xyz", tmp_path / "holes.npy"
    np.savetxt(few, room["scan"][:100])
    bad = room["scan"].copy()
    bad[3, 0] = np.nan
    np.save(holes, bad)
    out = tmp_path / "out"
    status = run(["--ckpt_path", str(checkpoints["geometry"]), "--num_points", str(NUM_POINTS), "--out_dir", str(out),
                  str(few), str(room["path"]), str(holes)])
    errors = capsys.readouterr().err
    assert status == 1
    assert f"{few}: has 100 points, but the model reads {NUM_POINTS}: give a denser scan (at least {NUM_POINTS} points)" in errors
    assert f"{holes}: 1 of {3 * NUM_POINTS} points have NaN or infinite coordinates (first: row 3)" in errors
    assert sorted(p.name for p in out.iterdir()) == ["room.json", "room.ply", "room.png", "room_points.ply"]
    mesh = PlyData.read(str(out / "room.ply"))
    assert len(mesh["face"]) > 0 and set(mesh["face"]["label"].tolist()) == {-1}
    assert {int(mesh["face"][c].min()) for c in ("red", "green", "blue")} == {128}  # grey
    assert set(PlyData.read(str(out / "room_points.ply"))["vertex"]["label"].tolist()) == {-1}
    report = json.loads((out / "room.json").read_text())
    assert report["stage"] == "geometry" and not report["labelled"] and report["class_names"] == []
    assert set(report["class_area"]) == {"unlabelled"} and report["class_area"]["unlabelled"] > 0
    assert report["resolution"] == RESOLUTION  # the checkpoint's test_resolution


def test_checkpoints_of_the_wrong_kind_are_refused_by_name(
    checkpoints: dict[str, Path], room: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    headless = strip_encoder(checkpoints["context"], tmp_path / "headless.ckpt")
    unstaged = tmp_path / "unstaged.ckpt"
    checkpoint = torch.load(checkpoints["geometry"], weights_only=False)
    del checkpoint["ctxir_stage"]
    torch.save(checkpoint, unstaged)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    cases = {
        headless: "a context checkpoint without encoder weights (written by strip_encoder)",
        unstaged: "records no ctxir stage",
        text: "not a readable checkpoint",
        tmp_path / "missing.ckpt": "checkpoint not found",
    }
    for path, message in cases.items():
        out = tmp_path / f"out_{path.stem}"
        assert run(["--ckpt_path", str(path), "--out_dir", str(out), str(room["path"])]) == 1
        errors = capsys.readouterr().err
        assert message in errors and str(path) in errors
        assert not out.exists()
    with pytest.raises(WrongStageError, match="records no ctxir stage"):
        load_scan_model(unstaged)


def test_a_scan_without_surface_writes_nothing_and_leaves_earlier_outputs(
    checkpoints: dict[str, Path], room: dict, tmp_path: Path
) -> None:
    model = load_scan_model(checkpoints["geometry"])
    with torch.no_grad():
        model.geometry.udf_decoder.out.bias.fill_(100.0)  # the distance field never comes near zero
    (tmp_path / "room.ply").write_bytes(b"an earlier output")
    with pytest.raises(ScanError, match=r"room\.ply: no surface was extracted at resolution 24"):
        scan_file(room["path"], model, tmp_path, checkpoint=None, num_points=NUM_POINTS, resolution=None, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["room.ply"]
    assert (tmp_path / "room.ply").read_bytes() == b"an earlier output"
    with pytest.raises(ValueError, match="num_points must be positive"):
        reconstruct_scan(room["scan"], model, num_points=0)


def test_publish_is_all_or_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(b"old")
    with pytest.raises(TypeError):
        publish({tmp_path / "a.json": b"new", tmp_path / "b.ply": b"mesh", tmp_path / "c.png": "not bytes"})  # type: ignore[dict-item]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary left either
    assert (tmp_path / "a.json").read_bytes() == b"old"
    assert publish({tmp_path / "a.json": b"new", tmp_path / "b.ply": b"mesh"}) == [tmp_path / "a.json", tmp_path / "b.ply"]
    assert (tmp_path / "a.json").read_bytes() == b"new" and (tmp_path / "b.ply").read_bytes() == b"mesh"


def test_output_names_may_not_collide_or_overwrite_inputs(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match=r"b/room\.npy: has the same name as .*a/room\.ply"):
        check_names([tmp_path / "a" / "room.ply", tmp_path / "b" / "room.npy"], tmp_path / "out")
    with pytest.raises(ScanError, match=r"room\.ply: its output .*room\.ply would overwrite an input file"):
        check_names([tmp_path / "room.ply"], tmp_path)
    check_names([tmp_path / "room.ply"], tmp_path / "out")
