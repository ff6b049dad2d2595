"""Triangle-mesh helpers shared by preprocessing and evaluation: area-uniform sampling, face-majority labels."""

from __future__ import annotations

import numpy as np


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``count`` area-uniform points on the triangles; returns ``(points (count, 3) float64, face ids)``.

    A face is picked with probability proportional to its area (zero-area faces never), then a uniform
    position inside it (barycentric coordinates reflected into the triangle).

    Raises:
        ValueError: the total area is zero or not finite.
    """
    corners = np.asarray(vertices, dtype=np.float64)[faces]  # (F, 3, 3)
    edge_u = corners[:, 1] - corners[:, 0]
    edge_v = corners[:, 2] - corners[:, 0]
    areas = 0.5 * np.linalg.norm(np.cross(edge_u, edge_v), axis=1)
    total = areas.sum()
    if not np.isfinite(total) or total <= 0.0:
        raise ValueError("cannot sample a mesh with zero surface area")
    cumulative = np.cumsum(areas)
    face_ids = np.searchsorted(cumulative, rng.random(count) * cumulative[-1], side="right")
    face_ids = np.minimum(face_ids, len(faces) - 1)
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1.0  # reflect the upper half of the unit square onto the triangle
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    points = corners[face_ids, 0] + u[:, None] * edge_u[face_ids] + v[:, None] * edge_v[face_ids]
    return points, face_ids


def face_majority(vertex_values: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-face majority of a per-vertex integer attribute; a three-way tie goes to the first vertex.

    RangeUDF's rule for turning vertex labels (or instance ids) into face labels.

    Args:
        vertex_values: (V,) integer value per vertex.
        faces: (F, 3) vertex indices.

    Returns:
        (F,) int64: the value held by at least two of the face's vertices, else the first vertex's value.
    """
    a, b, c = (np.asarray(vertex_values, dtype=np.int64)[np.asarray(faces)[:, k]] for k in range(3))
    return np.where((a == b) | (a == c), a, np.where(b == c, b, a))
