"""Write a reconstructed mesh labelled by class as a coloured PLY, and label such a mesh from labelled points.

The test stage labels 100k points sampled on the extracted surface; :func:`label_vertices_from_points` and
the face-majority rule (:func:`ctxir.core.surface.face_majority`) carry those labels onto the mesh, and
:func:`export_labelled_mesh` writes it with per-face colours and ``label`` plus per-vertex colours (many viewers
show only vertex colours).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ctxir.core.io import atomic_write
from ctxir.core.palette import check_labels, class_colors, label_colors

if TYPE_CHECKING:
    from plyfile import PlyData

_COLOR_FIELDS = [("red", "u1"), ("green", "u1"), ("blue", "u1")]


def export_labelled_mesh(
    path: str | Path,
    vertices: np.ndarray,
    faces: np.ndarray,
    face_labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    colors: np.ndarray | None = None,
) -> Path:
    """Write a binary little-endian PLY mesh coloured by class.

    Elements written:

    * ``vertex``: ``x, y, z`` (float32), ``red, green, blue`` (uchar) and ``label`` (int32): the majority label
      of the labelled faces around the vertex (ties: the lowest-index face among the tied labels), ``-1``
      when no incident face is labelled;
    * ``face``: ``vertex_indices`` (list of int32), ``red, green, blue`` (uchar) and ``label`` (int32).

    Label ``-1`` is grey. Class names, when given, are written as ``comment class <id> <name>`` lines. The file
    is written atomically (:func:`ctxir.core.io.atomic_write`): a crash never leaves a half-written PLY.

    Args:
        path: output ``.ply`` path (parent folders are created).
        vertices: (V, 3) positions.
        faces: (F, 3) vertex indices.
        face_labels: (F,) class ids in ``-1..C-1``.
        class_names: optional names; sets C.
        colors: optional ``(C, 3)`` uint8 palette; default :func:`ctxir.core.palette.class_colors`.
            Without names or colours, C is ``max(face_labels) + 1``.

    Returns:
        The path written.
    """
    path = Path(path)
    ply = labelled_mesh_ply(vertices, faces, face_labels, class_names, colors,
                            where=f"export_labelled_mesh({str(path)!r})")
    return atomic_write(path, lambda temporary: ply.write(str(temporary)))


def labelled_mesh_ply(
    vertices: np.ndarray,
    faces: np.ndarray,
    face_labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    colors: np.ndarray | None = None,
    *,
    coordinate_type: str = "f4",
    where: str = "labelled_mesh_ply",
) -> PlyData:
    """The ``plyfile.PlyData`` that :func:`export_labelled_mesh` writes, built in memory and not yet written.

    For callers that must finish every output before writing any (the scan command), and for coordinates
    that need ``coordinate_type="f8"`` (double): float32 keeps only about 0.5 mm at 5 km from the origin, so
    a scan in a survey frame would lose its detail. ``where`` starts every error message.
    """
    from plyfile import PlyData, PlyElement

    if coordinate_type not in ("f4", "f8"):
        raise ValueError(f"{where}: coordinate_type must be 'f4' or 'f8', got {coordinate_type!r}")
    vertices = np.asarray(vertices)
    faces, face_labels = np.asarray(faces), np.asarray(face_labels)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"{where}: vertices must be (V, 3), got shape {vertices.shape}")
    _check_faces(faces, len(vertices), where)
    if face_labels.shape != (len(faces),):
        raise ValueError(f"{where}: face_labels must be ({len(faces)},) to match faces, got shape {face_labels.shape}")
    palette = _palette(face_labels, class_names, colors, where)
    check_labels(face_labels, len(palette), f"{where}: face_labels")

    vertex_labels = vertex_labels_from_faces(faces, face_labels, len(vertices))
    coordinate = f"<{coordinate_type}"
    vertex_data = np.empty(
        len(vertices),
        dtype=[("x", coordinate), ("y", coordinate), ("z", coordinate), *_COLOR_FIELDS, ("label", "<i4")],
    )
    for axis, name in enumerate("xyz"):
        vertex_data[name] = vertices[:, axis]
    _set_colors(vertex_data, label_colors(vertex_labels, palette))
    vertex_data["label"] = vertex_labels

    face_data = np.empty(
        len(faces),
        dtype=[("vertex_indices", "<i4", (3,)), *_COLOR_FIELDS, ("label", "<i4")],
    )
    face_data["vertex_indices"] = faces
    _set_colors(face_data, label_colors(face_labels, palette))
    face_data["label"] = face_labels

    comments = [f"class {index} {name}" for index, name in enumerate(class_names or ())]
    return PlyData(
        [PlyElement.describe(vertex_data, "vertex"), PlyElement.describe(face_data, "face")],
        text=False,
        byte_order="<",
        comments=["ctxir labelled mesh", *comments],
    )


def vertex_labels_from_faces(faces: np.ndarray, face_labels: np.ndarray, num_vertices: int) -> np.ndarray:
    """Label of each vertex: the majority label of its labelled incident faces, ``-1`` when there are none.

    Ties go to the label of the lowest-index incident face among the tied labels. Vectorised: one sort of the
    (vertex, label) incidences.
    """
    faces = np.asarray(faces, dtype=np.int64)
    face_labels = np.asarray(face_labels, dtype=np.int64)
    labels = np.full(num_vertices, -1, dtype=np.int64)
    labelled = face_labels >= 0
    vertex = faces[labelled].ravel()
    if len(vertex) == 0:
        return labels
    label = np.repeat(face_labels[labelled], 3)
    face = np.repeat(np.flatnonzero(labelled), 3)
    # one row per (vertex, label): its incidence count and its first face
    order = np.lexsort((face, label, vertex))
    vertex, label, face = vertex[order], label[order], face[order]
    starts = np.flatnonzero(np.r_[True, (vertex[1:] != vertex[:-1]) | (label[1:] != label[:-1])])
    counts = np.diff(np.r_[starts, len(vertex)])
    pair_vertex, pair_label, pair_face = vertex[starts], label[starts], face[starts]
    # best pair per vertex: highest count, then lowest first face
    best = np.lexsort((pair_face, -counts, pair_vertex))
    first_of_vertex = np.r_[True, pair_vertex[best][1:] != pair_vertex[best][:-1]]
    winners = best[first_of_vertex]
    labels[pair_vertex[winners]] = pair_label[winners]
    return labels


def label_vertices_from_points(vertices: np.ndarray, points: np.ndarray, point_labels: np.ndarray) -> np.ndarray:
    """Label of each vertex ``(V,) int64``: the label of its nearest labelled point (``-1`` points are skipped).

    Returns all ``-1`` when no point is labelled.
    """
    from scipy.spatial import cKDTree

    vertices, points = np.asarray(vertices, dtype=np.float64), np.asarray(points, dtype=np.float64)
    point_labels = np.asarray(point_labels)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"label_vertices_from_points: vertices must be (V, 3), got shape {vertices.shape}")
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise ValueError(f"label_vertices_from_points: points must be a non-empty (P, 3) array, got {points.shape}")
    if point_labels.shape != (len(points),) or not np.issubdtype(point_labels.dtype, np.integer):
        raise ValueError(
            f"label_vertices_from_points: point_labels must be ({len(points)},) integers, "
            f"got shape {point_labels.shape} dtype {point_labels.dtype}"
        )
    labelled = point_labels >= 0
    if not labelled.any() or len(vertices) == 0:
        return np.full(len(vertices), -1, dtype=np.int64)
    _, nearest = cKDTree(points[labelled]).query(vertices, k=1, workers=-1)
    return point_labels[labelled][nearest].astype(np.int64)


def _check_faces(faces: np.ndarray, num_vertices: int, where: str) -> None:
    """Raise ``ValueError`` unless ``faces`` is an (F, 3) integer array indexing ``num_vertices`` vertices."""
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"{where}: faces must be (F, 3), got shape {faces.shape}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"{where}: faces must hold integer indices, got dtype {faces.dtype}")
    if len(faces) and (faces.min() < 0 or faces.max() >= num_vertices):
        raise ValueError(
            f"{where}: face indices span [{faces.min()}, {faces.max()}] but there are {num_vertices} vertices"
        )


def _palette(
    face_labels: np.ndarray, class_names: Sequence[str] | None, colors: np.ndarray | None, where: str
) -> np.ndarray:
    """The ``(C, 3)`` uint8 palette from explicit colours, else from the class count."""
    if colors is not None:
        colors = np.asarray(colors)
        if colors.ndim != 2 or colors.shape[1] != 3:
            raise ValueError(f"{where}: colors must be (C, 3), got shape {colors.shape}")
        if class_names is not None and len(colors) != len(class_names):
            raise ValueError(f"{where}: {len(colors)} colors for {len(class_names)} class names")
        if colors.min(initial=0) < 0 or colors.max(initial=0) > 255:
            raise ValueError(f"{where}: colors must be in 0..255")
        return colors.astype(np.uint8)
    if class_names is not None:
        return class_colors(len(class_names))
    return class_colors(int(face_labels.max(initial=-1)) + 1)


def _set_colors(data: np.ndarray, rgb: np.ndarray) -> None:
    """Fill the ``red, green, blue`` fields of a structured array from ``(n, 3)`` uint8 colours."""
    for channel, name in enumerate(("red", "green", "blue")):
        data[name] = rgb[:, channel]
