"""Area-uniform surface sampling and the face-majority rule (ctxir.core.surface)."""

import numpy as np
import pytest

from ctxir.core.surface import face_majority, sample_surface


def _majority_reference(values: list[int]) -> int:
    return max(values, key=values.count)  # the first of the most frequent: RangeUDF's rule


def test_face_majority_known_answers() -> None:
    vertex_values = np.array([7, 7, 3, 9, 3])
    faces = np.array([[0, 1, 2], [2, 0, 1], [2, 3, 4], [3, 2, 4], [2, 3, 0], [0, 0, 0]])
    np.testing.assert_array_equal(face_majority(vertex_values, faces), [7, 7, 3, 3, 3, 7])


def test_face_majority_matches_brute_force_on_random_input() -> None:
    rng = np.random.default_rng(1)
    values = rng.integers(-1, 4, 50)
    faces = rng.integers(0, 50, (400, 3))
    expected = [_majority_reference([int(values[v]) for v in face]) for face in faces]
    np.testing.assert_array_equal(face_majority(values, faces), expected)


def test_sample_surface_lies_on_its_faces_in_proportion_to_their_area() -> None:
    # Two triangles in z = 0 and z = 1, the second four times the area of the first, plus a zero-area one.
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 0, 1], [0, 2, 1], [5, 5, 5]], float)
    faces = np.array([[0, 1, 2], [3, 4, 5], [6, 6, 6]])
    points, face_ids = sample_surface(vertices, faces, 20_000, np.random.default_rng(0))
    assert points.shape == (20_000, 3) and points.dtype == np.float64
    assert set(np.unique(face_ids)) == {0, 1}  # never the zero-area face
    np.testing.assert_array_equal(points[:, 2], face_ids.astype(float))  # each point on its own face's plane
    scale = np.where(face_ids == 0, 1.0, 2.0)
    assert (points[:, 0] >= 0).all() and (points[:, 1] >= 0).all()
    assert (points[:, 0] + points[:, 1] <= scale + 1e-12).all()  # inside the triangle
    assert abs((face_ids == 1).mean() - 0.8) < 0.01  # 4:1 area ratio
    first = points[face_ids == 0]
    assert abs(first[:, 0].mean() - 1 / 3) < 0.01  # uniform in the triangle: centroid at (1/3, 1/3)


def test_sample_surface_is_deterministic_for_a_seed_and_refuses_zero_area() -> None:
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    faces = np.array([[0, 1, 2]])
    first, _ = sample_surface(vertices, faces, 100, np.random.default_rng(3))
    second, _ = sample_surface(vertices, faces, 100, np.random.default_rng(3))
    np.testing.assert_array_equal(first, second)
    with pytest.raises(ValueError, match="zero surface area"):
        sample_surface(vertices, np.array([[0, 0, 1]]), 10, np.random.default_rng(0))
