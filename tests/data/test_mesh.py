"""clean_mesh and ids_to_classes: known answers and brute-force references."""

import warnings

import numpy as np
import pytest

from ctxir.data.mesh import IGNORE_LABEL, LabelledMesh, clean_mesh, ids_to_classes


def test_ids_to_classes_maps_valid_ids_and_ignores_the_rest() -> None:
    valid = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
    ids = np.array([1, 39, 14, 0, 13, 40, 50, 65535, -3, 24], dtype=np.int64)
    np.testing.assert_array_equal(ids_to_classes(ids, valid), [0, 19, 12, -1, -1, -1, -1, -1, -1, 14])
    np.testing.assert_array_equal(ids_to_classes(np.array([65535, 2], np.uint16), valid), [-1, 1])


def _square_mesh(**overrides: object) -> LabelledMesh:
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [5, 5, 5]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    fields = dict(vertices=vertices, faces=faces, face_labels=[1, 2], face_instances=[0, 1],
                  vertex_labels=[1, 1, 2, 2, 3], vertex_instances=[0, 0, 1, 1, 2],
                  vertex_colors=np.arange(15).reshape(5, 3), name="square")  # fmt: skip
    fields.update(overrides)
    return LabelledMesh(**fields)


def test_clean_mesh_drops_unreferenced_vertices_and_keeps_arrays_aligned() -> None:
    with pytest.warns(UserWarning, match=r"'square'.*1 unreferenced vertices"):
        cleaned = clean_mesh(_square_mesh())
    np.testing.assert_array_equal(cleaned.vertices, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(cleaned.faces, [[0, 1, 2], [0, 2, 3]])
    np.testing.assert_array_equal(cleaned.vertex_labels, [1, 1, 2, 2])
    np.testing.assert_array_equal(cleaned.vertex_colors, np.arange(12).reshape(4, 3))


def test_clean_mesh_drops_nan_vertices_with_their_faces_and_reindexes() -> None:
    vertices = np.array([[np.nan, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0], [np.inf, 1, 1]])
    mesh = LabelledMesh(vertices=vertices, faces=[[0, 1, 2], [1, 2, 3], [1, 4, 2], [5, 1, 2]],
                        face_labels=[0, 1, 2, 3], face_instances=[5, 6, 7, 8], name="nan")  # fmt: skip
    with pytest.warns(UserWarning, match=r"'nan'.*2 vertices with NaN/inf coordinates, 2 faces using them"):
        cleaned = clean_mesh(mesh)
    np.testing.assert_array_equal(cleaned.vertices, vertices[[1, 2, 3, 4]])
    np.testing.assert_array_equal(cleaned.faces, [[0, 1, 2], [0, 3, 1]])
    np.testing.assert_array_equal(cleaned.face_labels, [1, 2])
    np.testing.assert_array_equal(cleaned.face_instances, [6, 7])


def test_clean_mesh_drops_repeated_index_and_zero_area_faces() -> None:
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [1e6, 0, 0]], dtype=np.float64)
    faces = [[0, 1, 2], [0, 0, 2], [0, 1, 3], [3, 4, 0], [2, 1, 0]]  # 2nd repeated, 3rd/4th collinear
    mesh = LabelledMesh(vertices=vertices, faces=faces, face_labels=[0, 1, 2, 3, 4],
                        face_instances=[0] * 5, name="flat")  # fmt: skip
    with pytest.warns(UserWarning, match=r"'flat'.*3 degenerate faces, 2 unreferenced vertices"):
        cleaned = clean_mesh(mesh)
    np.testing.assert_array_equal(cleaned.face_labels, [0, 4])
    assert cleaned.num_vertices == 3


def test_clean_mesh_keeps_tiny_but_valid_triangles() -> None:
    mesh = LabelledMesh(vertices=np.array([[0, 0, 0], [1e-4, 0, 0], [0, 1e-4, 0]]), faces=[[0, 1, 2]],
                        face_labels=[0], face_instances=[0], name="tiny")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert clean_mesh(mesh) is mesh


def test_clean_mesh_raises_on_empty_mesh_naming_it() -> None:
    empty = LabelledMesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3)), face_labels=[], face_instances=[],
                         name="scene_empty")  # fmt: skip
    with pytest.raises(ValueError, match="scene_empty"):
        clean_mesh(empty)
    all_degenerate = LabelledMesh(vertices=np.zeros((3, 3)), faces=[[0, 1, 2]], face_labels=[IGNORE_LABEL],
                                  face_instances=[-1], name="scene_flat")  # fmt: skip
    with pytest.raises(ValueError, match="scene_flat"):
        clean_mesh(all_degenerate)
