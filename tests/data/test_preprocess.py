"""Scene preprocessing: exact distances and labels against brute force, sample layout, caching, bad scenes."""

from __future__ import annotations

import json
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from ctxir.data import cache
from ctxir.data.errors import CorruptFileError
from ctxir.data.mesh import LabelledMesh
from ctxir.data.preprocess import (
    closest_points_on_mesh,
    label_points,
    preprocess_scenes,
    preprocessing_params,
    sample_scene,
)

SMALL = {"num_surface": 600, "num_off_surface": 1500, "num_eval": 700}


def brute_force_distances(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(P, T) exact point-to-triangle distances in float64 (closest point by Voronoi region, Ericson 5.1.5)."""
    p = np.asarray(points, np.float64)[:, None, :]
    a, b, c = (np.asarray(vertices, np.float64)[faces[:, k]][None] for k in range(3))
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v_in, w_in = vb / denom, vc / denom
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
    closest = a + v_in[..., None] * ab + w_in[..., None] * ac  # interior
    regions = [  # later regions take precedence over earlier ones where both hold: order as in Ericson
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), b + t_bc[..., None] * (c - b)),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), a + t_ac[..., None] * ac),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), a + t_ab[..., None] * ab),
        ((d6 >= 0) & (d5 <= d6), c),
        ((d3 >= 0) & (d4 <= d3), b),
        ((d1 <= 0) & (d2 <= 0), a),
    ]
    for mask, point in regions:
        closest = np.where(mask[..., None], np.broadcast_to(point, closest.shape), closest)
    return np.linalg.norm(p - closest, axis=-1)


def open_box(name: str = "open_box") -> LabelledMesh:
    """A 2 x 1 x 1 box without its top face: five sides, two triangles each, label = side index."""
    corners = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 2)], float)
    quads = [(0, 1, 3, 2), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5)]  # bottom, 4 sides
    faces = np.array([tri for q in quads for tri in ((q[0], q[1], q[2]), (q[0], q[2], q[3]))])
    sides = np.repeat(np.arange(5), 2)
    return LabelledMesh(corners + [3.0, -1.0, 0.5], faces, sides, sides, name=name)


def test_brute_force_reference_on_known_points() -> None:
    triangle = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    points = np.array([[0.2, 0.2, 0.5], [-1, -1, 0], [2, 0, 0], [0.5, -1, 0], [1, 1, 0], [-1, 0.5, 1]])
    expected = [0.5, np.sqrt(2), 1.0, 1.0, np.sqrt(2) / 2, np.sqrt(2)]
    np.testing.assert_allclose(brute_force_distances(points, triangle, np.array([[0, 1, 2]]))[:, 0], expected)


def test_distances_exact_on_open_box() -> None:
    out = sample_scene(open_box(), **SMALL, seed=3)
    vertices, faces = out["mesh_vertices"], out["mesh_faces"]
    for i in range(3):
        reference = brute_force_distances(out[f"off_points_{i}"], vertices, faces).min(axis=1)
        assert np.abs(out[f"off_udf_{i}"] - reference).max() <= 1e-6
    rng = np.random.default_rng(0)
    far = rng.uniform(-1.5, 1.5, (3000, 3))  # includes points inside the open box and far outside
    distances, face_ids = closest_points_on_mesh(vertices, faces, far)
    all_distances = brute_force_distances(far, vertices, faces)
    assert np.abs(distances - all_distances.min(axis=1)).max() <= 1e-6
    np.testing.assert_allclose(all_distances[np.arange(len(far)), face_ids], distances, atol=1e-6)


def test_labels_match_brute_force_closest_face_away_from_ties() -> None:
    mesh = open_box()
    out = sample_scene(mesh, **SMALL, seed=1)
    points = np.concatenate([out[f"off_points_{i}"] for i in range(3)])
    labels = np.concatenate([out[f"off_labels_{i}"] for i in range(3)])
    distances = brute_force_distances(points, out["mesh_vertices"], out["mesh_faces"])
    best = distances.argmin(axis=1)
    expected = mesh.face_labels[best]
    other_label = mesh.face_labels[None, :] != expected[:, None]
    runner_up = np.where(other_label, distances, np.inf).min(axis=1)
    clear = runner_up > distances.min(axis=1) + 1e-4
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(labels[clear], expected[clear])
    # surface and evaluation samples carry the label of the face they lie on
    for key in ("surface", "eval"):
        pts = out[f"{key}_points"]
        on = brute_force_distances(pts, out["mesh_vertices"], out["mesh_faces"])
        same_label = mesh.face_labels[None] == out[f"{key}_labels"][:, None]
        assert np.where(same_label, on, np.inf).min(axis=1).max() < 1e-6


def test_instance_boundary_rule() -> None:
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [3, 0, 0], [4, 0, 0], [3, 1, 0]], float)
    faces = np.array([[0, 1, 2], [1, 3, 2], [4, 5, 6]])
    mesh = LabelledMesh(
        vertices, faces, face_labels=[3, 7, 5], face_instances=[0, 1, 2],
        vertex_labels=[3, 3, 7, 7, 1, 1, 1], vertex_instances=[0, 0, 1, 1, 2, 2, 2],
    )  # fmt: skip
    points = np.array([[0.1, 0.8, 0.05], [0.1, 0.1, 0.05], [0.9, 0.05, 0.0], [3.2, 0.2, 0.1]])
    face_ids = np.array([0, 0, 0, 2])
    # face 0 spans instances 0 and 1: the nearest vertex decides; face 2 is one instance: its face label
    np.testing.assert_array_equal(label_points(mesh, vertices, points, face_ids), [7, 3, 3, 5])
    without = LabelledMesh(vertices, faces, [3, 7, 5], [0, 1, 2])
    np.testing.assert_array_equal(label_points(without, vertices, points, face_ids), [3, 3, 3, 5])
    out = sample_scene(mesh, num_surface=2000, num_off_surface=100, num_eval=100)
    surface = out["surface_points"] * out["scale"] + out["center"]
    on_first = (surface[:, 0] + surface[:, 1] < 0.99) & (surface[:, 0] < 2)
    nearest = np.linalg.norm(surface[on_first, None] - vertices[None, :3], axis=2).argmin(axis=1)
    np.testing.assert_array_equal(out["surface_labels"][on_first], np.array([3, 3, 7])[nearest])


def test_sample_scene_layout_normalisation_and_determinism() -> None:
    mesh = open_box()
    out = sample_scene(mesh, num_surface=123, num_off_surface=456, sigmas=(0.1, 0.01), num_eval=78, seed=5)
    expected = {
        "center": ((3,), np.float64), "scale": ((), np.float64), "surface_points": ((123, 3), np.float32),
        "surface_labels": ((123,), np.int64), "sigmas": ((2,), np.float64), "off_points_0": ((456, 3), np.float32),
        "off_udf_0": ((456,), np.float32), "off_labels_0": ((456,), np.int64), "off_points_1": ((456, 3), np.float32),
        "off_udf_1": ((456,), np.float32), "off_labels_1": ((456,), np.int64), "eval_points": ((78, 3), np.float32),
        "eval_labels": ((78,), np.int64), "mesh_vertices": ((8, 3), np.float32), "mesh_faces": ((10, 3), np.int64),
        "mesh_face_labels": ((10,), np.int64),
    }  # fmt: skip
    assert {k: (v.shape, v.dtype) for k, v in out.items()} == expected
    np.testing.assert_allclose(out["center"], [4.0, -0.5, 1.0])
    assert out["scale"] == 2.0
    np.testing.assert_allclose(out["mesh_vertices"].min(0), [-0.5, -0.25, -0.25])
    np.testing.assert_allclose(out["mesh_vertices"].max(0), [0.5, 0.25, 0.25])
    # the noise level of each pool is its sigma
    for i, sigma in enumerate((0.1, 0.01)):
        assert 0.5 * sigma < np.median(out[f"off_udf_{i}"]) < 1.5 * sigma
    again = sample_scene(mesh, num_surface=123, num_off_surface=456, sigmas=(0.1, 0.01), num_eval=78, seed=5)
    for key in out:
        np.testing.assert_array_equal(out[key], again[key])
    other = sample_scene(mesh, num_surface=123, num_off_surface=456, sigmas=(0.1, 0.01), num_eval=78, seed=6)
    assert not np.array_equal(other["surface_points"], out["surface_points"])


def test_sample_scene_rejects_bad_meshes() -> None:
    flat = LabelledMesh(np.zeros((3, 3)), [[0, 1, 2]], [0], [0], name="dot")
    with pytest.raises(ValueError, match="'dot'"):
        sample_scene(flat)
    bad = LabelledMesh(np.array([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]]), [[0, 1, 2]], [0], [0], name="nan")
    with pytest.raises(ValueError, match="'nan'.*NaN"):
        sample_scene(bad)


# -- caching ---------------------------------------------------------------------------------------
def read_boxes(calls: list[str] | None, bad: tuple[str, ...], unit: str) -> list[LabelledMesh]:
    """Test reader: unit 'u<k>' holds one open box scaled by k+1 (and one more for 'multi'); bad units raise."""
    if calls is not None:
        calls.append(unit)
    if unit in bad:
        raise CorruptFileError(f"/raw/{unit}.ply", "truncated")
    box = open_box(name=f"set/{unit}")
    box.vertices = box.vertices * (1 + int(unit[1:]))
    meshes = [box]
    if unit == "u9":
        meshes.append(open_box(name="set/u9_extra"))
    return meshes


TINY = {"num_surface": 50, "num_off_surface": 60, "num_eval": 40}


def test_cache_reuse_and_invalidation(tmp_path: Path) -> None:
    calls: list[str] = []
    reader = partial(read_boxes, calls, ())
    first = preprocess_scenes(reader, ["u0", "u9"], tmp_path, **TINY, progress=False)
    assert first == {"u0": ["set/u0"], "u9": ["set/u9", "set/u9_extra"]}
    assert calls == ["u0", "u9"]
    path = cache.scene_cache_path(tmp_path, "set/u9", preprocessing_params(**TINY))
    stored = cache.read_scene_cache(path)
    assert str(stored["scene_name"]) == "set/u9" and stored["off_points_2"].shape == (60, 3)
    with np.load(path, allow_pickle=False) as data:  # loadable without pickle, parameters recorded
        assert json.loads(str(data["params_json"]))["num_off_surface"] == 60
    mtime = path.stat().st_mtime_ns
    assert preprocess_scenes(reader, ["u0", "u9"], tmp_path, **TINY, progress=False) == first
    assert calls == ["u0", "u9"] and path.stat().st_mtime_ns == mtime  # reused, nothing re-read or rewritten
    changed = {**TINY, "num_off_surface": 70}
    preprocess_scenes(reader, ["u0", "u9"], tmp_path, **changed, progress=False)
    assert calls == ["u0", "u9", "u0", "u9"]
    changed_path = cache.scene_cache_path(tmp_path, "set/u9", preprocessing_params(**changed))
    assert changed_path != path and cache.read_scene_cache(changed_path)["off_points_0"].shape == (70, 3)
    preprocess_scenes(reader, ["u0"], tmp_path, **changed, source={"classes": "other"}, progress=False)
    assert calls[-1] == "u0" and len(calls) == 5
    names = {p.name for p in tmp_path.glob("*.npz")}
    assert len(names) == 7 and all("/" not in n for n in names)  # 3 + 3 + 1 scenes: every setting kept


def test_safe_names_are_distinct() -> None:
    names = ["area_1/office_1", "area_1_office_1", "a b", "a_b", "scene0000_00"]
    stems = [cache.safe_name(n) for n in names]
    assert len(set(stems)) == len(stems)
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") for s in stems)


def test_interrupted_write_leaves_no_partial_file_and_resumes(tmp_path: Path, monkeypatch) -> None:
    real_savez = np.savez

    def failing_savez(stream, **arrays) -> None:
        stream.write(b"PK\x03\x04 partial")  # half a zip file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.np, "savez", failing_savez)
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        preprocess_scenes(partial(read_boxes, calls, ()), ["u1", "u2"], tmp_path, **TINY, progress=False)
    assert list(tmp_path.rglob("*")) == []  # no cache file, no temporary file, no manifest
    monkeypatch.setattr(cache.np, "savez", real_savez)
    done = preprocess_scenes(partial(read_boxes, calls, ()), ["u1"], tmp_path, **TINY, progress=False)
    assert done == {"u1": ["set/u1"]}
    # a later interruption only costs the unfinished unit
    monkeypatch.setattr(cache.np, "savez", failing_savez)
    with pytest.raises(KeyboardInterrupt):
        preprocess_scenes(partial(read_boxes, calls, ()), ["u1", "u2"], tmp_path, **TINY, progress=False)
    monkeypatch.setattr(cache.np, "savez", real_savez)
    calls.clear()
    preprocess_scenes(partial(read_boxes, calls, ()), ["u1", "u2"], tmp_path, **TINY, progress=False)
    assert calls == ["u2"]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_skip_invalid_warns_and_summarises(tmp_path: Path) -> None:
    reader = partial(read_boxes, None, ("u2",))
    with pytest.warns(UserWarning) as record:
        done = preprocess_scenes(reader, ["u1", "u2", "u3"], tmp_path, **TINY, progress=False)
    assert done == {"u1": ["set/u1"], "u3": ["set/u3"]}
    messages = [str(w.message) for w in record]
    assert any("'u2'" in m and "/raw/u2.ply" in m and "truncated" in m for m in messages)
    assert any("skipped 1 of 3 units" in m and "u2" in m for m in messages)
    with pytest.raises(CorruptFileError, match="u2.ply"):
        preprocess_scenes(reader, ["u1", "u2"], tmp_path / "strict", **TINY, skip_invalid=False, progress=False)


def test_process_pool_matches_serial(tmp_path: Path) -> None:
    reader = partial(read_boxes, None, ("u2",))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pooled = preprocess_scenes(reader, ["u1", "u2", "u3"], tmp_path / "pool", **TINY, num_workers=2,
                                   progress=False)  # fmt: skip
    assert pooled == {"u1": ["set/u1"], "u3": ["set/u3"]}
    assert any("u2.ply" in str(w.message) for w in record)  # the reader's error text crosses the pool
    serial = preprocess_scenes(reader, ["u1", "u3"], tmp_path / "serial", **TINY, progress=False)
    assert serial == pooled
    for name in ("set/u1", "set/u3"):
        params = preprocessing_params(**TINY)
        a = cache.read_scene_cache(cache.scene_cache_path(tmp_path / "pool", name, params))
        b = cache.read_scene_cache(cache.scene_cache_path(tmp_path / "serial", name, params))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(CorruptFileError, match="u2.ply"):
        preprocess_scenes(reader, ["u1", "u2"], tmp_path / "strict", **TINY, num_workers=2, skip_invalid=False,
                          progress=False)  # fmt: skip
