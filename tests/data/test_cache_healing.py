"""Caches that heal: damaged files are rebuilt by the next ``prepare_data`` (with a warning naming them), read errors
name the file, settings do not overwrite each other's caches, a killed run leaves nothing for good, and units with a
missing file are skipped with a summary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import ctxir.data.synthetic as synthetic
from ctxir.data import ScanNetDataModule, SyntheticRoomsDataModule, cache
from ctxir.data.dataset import SceneDataset
from ctxir.data.encodings import read_encodings, write_encodings
from ctxir.data.errors import DatasetNotFoundError
from ctxir.data.mesh import LabelledMesh
from ctxir.data.preprocess import preprocess_scenes, preprocessing_params
from data_fixtures import write_scannet_root, write_scannet_scene

TINY = {"num_surface": 50, "num_off_surface": 60, "num_eval": 40}
PARAMS = preprocessing_params(**TINY)


def triangle_room(calls: list[str], missing: tuple[str, ...], unit: str) -> list[LabelledMesh]:
    """Test reader: one small open box per unit; units in ``missing`` lack a raw file."""
    calls.append(unit)
    if unit in missing:
        raise DatasetNotFoundError(f"/raw/{unit}/labels.ply", "the scan's label file")
    corners = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 2)], float) * (1 + len(unit))
    quads = [(0, 1, 3, 2), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5)]
    faces = np.array([tri for q in quads for tri in ((q[0], q[1], q[2]), (q[0], q[2], q[3]))])
    sides = np.repeat(np.arange(5), 2)
    return [LabelledMesh(corners, faces, sides, sides, name=f"room/{unit}")]


def prepare(folder: Path, calls: list[str], units=("a", "b"), missing=()) -> dict[str, list[str]]:
    return preprocess_scenes(partial(triangle_room, calls, missing), list(units), folder, **TINY, progress=False)


def scene_file(folder: Path, unit: str) -> Path:
    return cache.scene_cache_path(folder, f"room/{unit}", PARAMS)


def flip_a_byte(path: Path) -> None:
    """Flip one byte inside the stored data of the largest array (its CRC no longer matches)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "flipped_byte", "not_a_zip"])
def test_a_damaged_cache_file_is_rebuilt_by_the_next_prepare_with_a_warning_naming_it(
    damage: str, tmp_path: Path
) -> None:
    calls: list[str] = []
    prepare(tmp_path, calls)
    path = scene_file(tmp_path, "a")
    original = cache.read_scene_cache(path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a full disk or a killed copy
    elif damage == "flipped_byte":
        flip_a_byte(path)
    else:
        path.write_bytes(b"not an npz at all")
    with pytest.raises(ValueError, match=f"{path}: unreadable cache file .*prepare_data"):
        SceneDataset([path], num_points=10, num_queries=20)[0]
    with pytest.warns(UserWarning, match=f"{path}: damaged cache file .*rebuilding it"):
        assert prepare(tmp_path, calls) == {"a": ["room/a"], "b": ["room/b"]}
    assert calls == ["a", "b", "a"]  # only the damaged unit is prepared again
    rebuilt = cache.read_scene_cache(path)
    assert rebuilt.keys() == original.keys() and all(np.array_equal(rebuilt[k], original[k]) for k in original)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare(tmp_path, calls)  # healed: reused silently
    assert calls == ["a", "b", "a"]


def test_a_damaged_file_of_an_unfinished_unit_is_rebuilt_too(tmp_path: Path) -> None:
    calls: list[str] = []
    prepare(tmp_path, calls)
    cache.manifest_path(tmp_path, "a", PARAMS).unlink()  # as if the run died before finishing the unit
    flip_a_byte(scene_file(tmp_path, "a"))
    message = f"{scene_file(tmp_path, 'a')}: damaged cache file \\(array .* fails its CRC check"
    with pytest.warns(UserWarning, match=message):
        prepare(tmp_path, calls)
    assert cache.damage(scene_file(tmp_path, "a")) is None


def test_an_unreadable_manifest_is_named_and_its_unit_prepared_again(tmp_path: Path) -> None:
    calls: list[str] = []
    prepare(tmp_path, calls)
    manifest = cache.manifest_path(tmp_path, "b", PARAMS)
    manifest.write_text('{"unit": "b", "sce')
    with pytest.warns(UserWarning, match=f"{manifest}: unreadable cache manifest"):
        prepare(tmp_path, calls)
    assert calls == ["a", "b", "b"]


def test_an_unreadable_encodings_file_is_named(tmp_path: Path) -> None:
    path = write_encodings(tmp_path / "scene.npz", np.zeros((4, 3)), np.zeros(4), np.ones((4, 2)))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{path}: unreadable encodings file"):
        read_encodings(path)


def test_settings_keep_their_own_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two configs that differ in a preprocessing parameter: switching back re-preprocesses nothing."""
    sizes = {"num_points": 64, "num_queries": 50, "num_off_surface": 200, "num_eval": 50}
    small = SyntheticRoomsDataModule(num_train=1, num_val=0, num_test=0, cache_dir=str(tmp_path), num_surface=100, **sizes)
    large = SyntheticRoomsDataModule(num_train=1, num_val=0, num_test=0, cache_dir=str(tmp_path), num_surface=150, **sizes)
    small.prepare_data()
    large.prepare_data()
    monkeypatch.setattr(synthetic, "generate_room", lambda *a, **k: pytest.fail("the room was generated again"))
    small.prepare_data()
    large.prepare_data()
    small.setup("fit")
    large.setup("fit")
    (small_file,), (large_file,) = small.datasets["train"].files, large.datasets["train"].files
    assert small_file != large_file
    assert len(cache.read_scene_cache(small_file)["surface_points"]) == 100
    assert len(cache.read_scene_cache(large_file)["surface_points"]) == 150


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    calls: list[str] = []
    prepare(tmp_path, calls)
    (tmp_path / "units").mkdir(exist_ok=True)
    stale = [tmp_path / ".room_a-0123.npz.x1y2z3.tmp", tmp_path / "units" / ".a-0123.json.q9w8.tmp"]
    for path in stale:
        path.write_bytes(b"PK\x03\x04 half")  # what a killed run leaves
    with pytest.warns(UserWarning, match=f"{tmp_path}: removed 2 temporary files an interrupted run left"):
        prepare(tmp_path, calls)
    assert not any(path.exists() for path in stale)
    assert calls == ["a", "b"]


def test_a_cache_folder_that_cannot_be_locked_still_prepares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_locks(*args: object) -> None:
        raise OSError(37, "No locks available")

    monkeypatch.setattr(cache.fcntl, "flock", no_locks)
    (tmp_path / ".room_a.npz.x1y2.tmp").write_bytes(b"perhaps another run's")
    calls: list[str] = []
    with pytest.warns(UserWarning, match="cannot lock the cache folder .*No locks available"):
        assert prepare(tmp_path, calls) == {"a": ["room/a"], "b": ["room/b"]}
    assert (tmp_path / ".room_a.npz.x1y2.tmp").exists()


KILLED_RUN = """
import os, sys, time
from ctxir.data.mesh import LabelledMesh
from ctxir.data.preprocess import preprocess_scenes

def stuck(folder, unit):
    open(os.path.join(folder, f"worker-{unit}.pid"), "w").write(str(os.getpid()))
    time.sleep(120)  # a long scene: still running when the parent is killed
    return []

if __name__ == "__main__":
    import functools
    folder = sys.argv[1]
    preprocess_scenes(functools.partial(stuck, folder), ["u1", "u2"], os.path.join(folder, "cache"), num_workers=2,
                      progress=False)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_worker_processes_die_with_their_parent(tmp_path: Path) -> None:
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("worker-*.pid"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [int(path.read_text()) for path in tmp_path.glob("worker-*.pid")]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers)


def test_skip_invalid_skips_units_with_a_missing_file_with_a_summary(tmp_path: Path) -> None:
    calls: list[str] = []
    with pytest.warns(UserWarning) as record:
        assert prepare(tmp_path, calls, units=("a", "b", "c"), missing=("b",)) == {"a": ["room/a"], "c": ["room/c"]}
    messages = [str(w.message) for w in record]
    assert any("skipping 'b'" in m and "/raw/b/labels.ply" in m for m in messages)
    assert any("skipped 1 of 3 units" in m and ": b" in m for m in messages)
    with pytest.raises(DatasetNotFoundError, match="/raw/b/labels.ply"):
        preprocess_scenes(partial(triangle_room, calls, ("b",)), ["a", "b"], tmp_path / "strict", **TINY,
                          skip_invalid=False, progress=False)


@pytest.mark.filterwarnings("ignore:.*items are missing")
def test_an_unlabelled_scannet_scan_is_skipped_not_fatal(tmp_path: Path) -> None:
    write_scannet_root(tmp_path / "scannet")
    write_scannet_scene(tmp_path / "scannet", "scene0191_02", seed=9, labels_ply=False, aggregation=False)
    sizes = {"num_points": 100, "num_surface": 150, "num_queries": 200, "num_off_surface": 300, "num_eval": 120}
    dm = ScanNetDataModule(str(tmp_path / "scannet"), cache_dir=str(tmp_path / "cache"), **sizes)
    with pytest.warns(UserWarning) as record:
        dm.prepare_data()
    messages = [str(w.message) for w in record]
    assert any("skipping 'scene0191_02'" in m and "label source" in m for m in messages)
    assert any("skipped 1 of 4 units" in m for m in messages)
    with pytest.warns(UserWarning, match="1 units are not in the cache .*scannet:scene0191_02"):
        dm.setup("fit")
    assert len(dm.datasets["train"]) == 2
