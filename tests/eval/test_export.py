"""Area-uniform mesh sampling, labelling a mesh from labelled points and the labelled-PLY export.

Sampling (``ctxir.eval.sampling``) is tested here because it is the first step of the same test-stage pipeline:
extract a mesh, sample points on it, label them, carry the labels back onto the mesh and export it.
"""

from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData

from ctxir.data.synthetic import SYNTHETIC_CLASSES, generate_room
from ctxir.eval.export import (
    export_labelled_mesh,
    label_vertices_from_points,
    vertex_labels_from_faces,
)
from ctxir.core.palette import IGNORE_COLOR, class_colors
from ctxir.core.surface import face_majority
from ctxir.eval.sampling import sample_mesh_surface

# two triangles in the z = 0 plane with areas 1 and 3, plus a zero-area (collinear) face
AREA_VERTICES = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3.0, 3.0, 0.0], [4.0, 0.0, 0.0]])
AREA_FACES = np.array([[0, 1, 2], [1, 3, 4], [0, 1, 4]])  # areas 1, 3, 0


def barycentric(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of each point w.r.t. its triangle's corners (normal equations, so valid in 3-D)."""
    edges = np.stack([corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]], axis=2)  # (n, 3, 2)
    gram = np.einsum("nki,nkj->nij", edges, edges)
    rhs = np.einsum("nki,nk->ni", edges, points - corners[:, 0])
    u, v = np.linalg.solve(gram, rhs[..., None])[..., 0].T
    return np.column_stack([1.0 - u - v, u, v])


def rgb(data: np.ndarray) -> np.ndarray:
    """The ``(n, 3)`` colours of a PLY element's structured data."""
    return np.column_stack([data["red"], data["green"], data["blue"]])


# --- sampling ---------------------------------------------------------------------------------------------


def test_sampling_is_area_uniform_and_skips_zero_area_faces() -> None:
    count = 200_000
    points, face_index = sample_mesh_surface(AREA_VERTICES, AREA_FACES, count, seed=0)
    assert points.shape == (count, 3) and points.dtype == np.float32 and face_index.dtype == np.int64
    share = np.bincount(face_index, minlength=3) / count
    tolerance = 5.0 * np.sqrt(0.75 * 0.25 / count)  # five binomial standard deviations
    assert abs(share[1] - 0.75) < tolerance and abs(share[0] - 0.25) < tolerance
    assert share[2] == 0.0
    # uniform inside a triangle too: the medial triangle holds a quarter of its points
    weights = barycentric(points[face_index == 1].astype(np.float64), AREA_VERTICES[AREA_FACES[1]][None])
    medial = (weights < 0.5).all(axis=1).mean()
    assert abs(medial - 0.25) < 5.0 * np.sqrt(0.25 * 0.75 / (face_index == 1).sum())


def test_sampled_points_lie_on_their_faces() -> None:
    room = generate_room(1)
    points, face_index = sample_mesh_surface(room.vertices, room.faces, 5000, seed=1)
    corners = np.asarray(room.vertices, dtype=np.float64)[room.faces[face_index]]
    weights = barycentric(points.astype(np.float64), corners)
    assert (weights > -1e-4).all() and np.allclose(weights.sum(axis=1), 1.0)
    rebuilt = np.einsum("nk,nkd->nd", weights, corners)
    np.testing.assert_allclose(rebuilt, points, atol=1e-5)  # on the plane, not just inside the prism


def test_sampling_is_deterministic_per_seed() -> None:
    first = sample_mesh_surface(AREA_VERTICES, AREA_FACES, 1000, seed=7)
    again = sample_mesh_surface(AREA_VERTICES, AREA_FACES, 1000, seed=7)
    other = sample_mesh_surface(AREA_VERTICES, AREA_FACES, 1000, seed=8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_sampling_rejects_empty_and_degenerate_meshes() -> None:
    with pytest.raises(ValueError, match="empty mesh"):
        sample_mesh_surface(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), 10)
    with pytest.raises(ValueError, match="zero surface area"):
        sample_mesh_surface(AREA_VERTICES, AREA_FACES[2:], 10)
    with pytest.raises(ValueError, match="face indices span"):
        sample_mesh_surface(AREA_VERTICES, np.array([[0, 1, 5]]), 10)
    with pytest.raises(ValueError, match=r"faces must be \(F, 3\)"):
        sample_mesh_surface(AREA_VERTICES, np.array([0, 1, 2]), 10)
    with pytest.raises(ValueError, match="NaN"):
        sample_mesh_surface(np.full((3, 3), np.nan), np.array([[0, 1, 2]]), 10)
    assert sample_mesh_surface(AREA_VERTICES, AREA_FACES, 0)[0].shape == (0, 3)


# --- labelling a mesh from points ---------------------------------------------------------------------------


def test_label_vertices_from_points_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    vertices, points = rng.random((300, 3)), rng.random((500, 3))
    point_labels = rng.integers(-1, 6, 500)
    labels = label_vertices_from_points(vertices, points, point_labels)
    labelled = point_labels >= 0
    distances = np.linalg.norm(vertices[:, None] - points[labelled][None], axis=2)
    np.testing.assert_array_equal(labels, point_labels[labelled][distances.argmin(axis=1)])
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(label_vertices_from_points(vertices, points, np.full(500, -1)), -1)
    with pytest.raises(ValueError, match="point_labels"):
        label_vertices_from_points(vertices, points, point_labels[:-1])
    with pytest.raises(ValueError, match="non-empty"):
        label_vertices_from_points(vertices, np.zeros((0, 3)), np.zeros(0, dtype=np.int64))


def test_vertex_labels_from_faces_matches_reference() -> None:
    rng = np.random.default_rng(3)
    faces = np.argsort(rng.random((150, 40)), axis=1)[:, :3]  # three distinct vertices of 0..39 per face
    face_labels = rng.integers(-1, 4, 150)
    labels = vertex_labels_from_faces(faces, face_labels, 45)  # vertices 40..44 have no face
    for vertex in range(45):
        incident = [face for face in range(150) if vertex in faces[face] and face_labels[face] >= 0]
        if not incident:
            assert labels[vertex] == -1
            continue
        votes = np.bincount(face_labels[incident])
        tied = np.flatnonzero(votes == votes.max())
        first_face = min(face for face in incident if face_labels[face] in tied)
        assert labels[vertex] == face_labels[first_face], vertex


def test_labels_carried_from_points_back_to_the_mesh() -> None:
    room = generate_room(2)
    points, face_index = sample_mesh_surface(room.vertices, room.faces, 50_000, seed=0)
    vertex_labels = label_vertices_from_points(room.vertices, points, room.face_labels[face_index])
    face_labels = face_majority(vertex_labels, room.faces)
    assert (face_labels == room.face_labels).mean() > 0.9


# --- PLY export ---------------------------------------------------------------------------------------------


def test_export_round_trip(tmp_path: Path) -> None:
    room = generate_room(0)
    face_labels = room.face_labels.copy()
    face_labels[::7] = -1
    target = tmp_path / "out" / "room.ply"
    path = export_labelled_mesh(target, room.vertices, room.faces, face_labels, SYNTHETIC_CLASSES)
    assert path == target
    assert not [name for name in path.parent.iterdir() if name != path]  # temporary file renamed away
    ply = PlyData.read(str(path))
    assert ply.byte_order == "<" and not ply.text
    vertex, face = ply["vertex"].data, ply["face"].data
    positions = np.column_stack([vertex["x"], vertex["y"], vertex["z"]])
    np.testing.assert_array_equal(positions, room.vertices.astype(np.float32))
    np.testing.assert_array_equal(np.stack(face["vertex_indices"]), room.faces)
    np.testing.assert_array_equal(face["label"], face_labels)
    palette = class_colors(len(SYNTHETIC_CLASSES))
    expected_face_rgb = np.where(face_labels[:, None] >= 0, palette[np.maximum(face_labels, 0)], IGNORE_COLOR)
    np.testing.assert_array_equal(rgb(face), expected_face_rgb)
    vertex_labels = vertex_labels_from_faces(room.faces, face_labels, room.num_vertices)
    np.testing.assert_array_equal(vertex["label"], vertex_labels)
    expected_vertex_rgb = np.where(vertex_labels[:, None] >= 0, palette[np.maximum(vertex_labels, 0)], IGNORE_COLOR)
    np.testing.assert_array_equal(rgb(vertex), expected_vertex_rgb)
    assert [f"class {i} {name}" for i, name in enumerate(SYNTHETIC_CLASSES)] == ply.comments[1:]


def test_export_with_custom_colors_and_without_names(tmp_path: Path) -> None:
    vertices = AREA_VERTICES
    colors = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.uint8)
    path = export_labelled_mesh(tmp_path / "a.ply", vertices, AREA_FACES, np.array([1, 0, -1]), colors=colors)
    face = PlyData.read(str(path))["face"].data
    np.testing.assert_array_equal(rgb(face), [[40, 50, 60], [10, 20, 30], IGNORE_COLOR])
    # without names or colours the palette covers labels 0..max
    path = export_labelled_mesh(tmp_path / "b.ply", vertices, AREA_FACES, np.array([2, 0, 1]))
    face = PlyData.read(str(path))["face"].data
    np.testing.assert_array_equal(face["red"], class_colors(3)[[2, 0, 1], 0])


def test_export_rejects_bad_input_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.ply"
    labels = np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError, match=r"bad\.ply.*vertices must be \(V, 3\)"):
        export_labelled_mesh(path, AREA_VERTICES[:, :2], AREA_FACES, labels)
    with pytest.raises(ValueError, match=r"bad\.ply.*faces must be \(F, 3\)"):
        export_labelled_mesh(path, AREA_VERTICES, np.zeros((3, 4), dtype=np.int64), labels)
    with pytest.raises(ValueError, match=r"face_labels must be \(3,\)"):
        export_labelled_mesh(path, AREA_VERTICES, AREA_FACES, labels[:2])
    with pytest.raises(ValueError, match="face indices span"):
        export_labelled_mesh(path, AREA_VERTICES, AREA_FACES + 3, labels)
    with pytest.raises(ValueError, match="only -1"):
        export_labelled_mesh(path, AREA_VERTICES, AREA_FACES, np.array([0, 1, 13]), SYNTHETIC_CLASSES)
    with pytest.raises(ValueError, match="2 colors for 13 class names"):
        export_labelled_mesh(path, AREA_VERTICES, AREA_FACES, labels, SYNTHETIC_CLASSES, colors=np.zeros((2, 3)))
    assert not path.exists()
