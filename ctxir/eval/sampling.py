"""Area-uniform point samples on an extracted triangle mesh (the evaluation's 100k prediction points).

The test stage extracts a mesh from the UDF, samples points uniformly by area on it and labels them with the
semantic decoder (SPEC §4). The sampling itself is the preprocessing's
:func:`ctxir.core.surface.sample_surface` (one implementation for both stages); this module checks the
mesh first, because an extracted mesh can legitimately be empty or degenerate and that must fail with a clear
message rather than an index error deep inside numpy.
"""

from __future__ import annotations

import numpy as np

from ctxir.core.surface import sample_surface


def sample_mesh_surface(
    vertices: np.ndarray, faces: np.ndarray, num_points: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``num_points`` points uniformly by area on a triangle mesh.

    Each point picks a face with probability proportional to its area (zero-area faces are never picked) and a
    uniform position inside it. The same ``seed`` gives the same points.

    Args:
        vertices: (V, 3) vertex positions.
        faces: (F, 3) vertex indices.
        num_points: number of samples (≥ 0).
        seed: seed of the numpy generator.

    Returns:
        ``(points (num_points, 3) float32, face_index (num_points,) int64)``.

    Raises:
        ValueError: bad shapes, out-of-range indices, non-finite vertices, an empty mesh or one whose total
            area is zero.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"sample_mesh_surface: vertices must be (V, 3), got shape {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"sample_mesh_surface: faces must be (F, 3), got shape {faces.shape}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"sample_mesh_surface: faces must hold integer indices, got dtype {faces.dtype}")
    if num_points < 0:
        raise ValueError(f"sample_mesh_surface: num_points must be >= 0, got {num_points}")
    if len(faces) == 0 or len(vertices) == 0:
        raise ValueError(
            f"sample_mesh_surface: cannot sample an empty mesh ({len(vertices)} vertices, {len(faces)} faces); "
            "surface extraction found no surface"
        )
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(
            f"sample_mesh_surface: face indices span [{faces.min()}, {faces.max()}] "
            f"but there are {len(vertices)} vertices"
        )
    if not np.isfinite(vertices).all():
        raise ValueError("sample_mesh_surface: vertices contain NaN or infinite coordinates")
    try:
        points, face_index = sample_surface(vertices, faces.astype(np.int64), num_points, np.random.default_rng(seed))
    except ValueError as error:  # zero total area: every face is degenerate
        raise ValueError(f"sample_mesh_surface: {error}") from error
    return points.astype(np.float32), face_index.astype(np.int64)
