"""The labelled triangle mesh every reader returns and every preprocessing step consumes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np

from ctxir.core.surface import face_majority

IGNORE_LABEL = -1
"""Label of faces/points that carry no class (unannotated or outside the benchmark classes)."""


@dataclass
class LabelledMesh:
    """A scene mesh with per-face semantic labels and instance ids.

    Attributes:
        vertices: (V, 3) float32/float64 vertex positions.
        faces: (F, 3) integer vertex indices.
        face_labels: (F,) int64 class index in ``0..C-1``, ``-1`` = ignore.
        face_instances: (F,) int64 instance id, ``-1`` = none.
        vertex_labels: optional (V,) int64 class index per vertex (``-1`` = ignore).
        vertex_instances: optional (V,) int64 instance id per vertex (``-1`` = none).
        vertex_colors: optional (V, 3) uint8 RGB.
        name: scene identifier (used in cache file names and error messages).
        source: the file the mesh was read from, named in error messages (empty for generated meshes).
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_labels: np.ndarray
    face_instances: np.ndarray
    vertex_labels: np.ndarray | None = None
    vertex_instances: np.ndarray | None = None
    vertex_colors: np.ndarray | None = None
    name: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices)
        self.faces = np.asarray(self.faces, dtype=np.int64)
        self.face_labels = np.asarray(self.face_labels, dtype=np.int64)
        self.face_instances = np.asarray(self.face_instances, dtype=np.int64)
        if self.vertex_labels is not None:
            self.vertex_labels = np.asarray(self.vertex_labels, dtype=np.int64)
        if self.vertex_instances is not None:
            self.vertex_instances = np.asarray(self.vertex_instances, dtype=np.int64)
        if self.vertex_colors is not None:
            self.vertex_colors = np.asarray(self.vertex_colors, dtype=np.uint8)
        self._check_shapes()

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def where(self) -> str:
        """How error messages name the mesh: ``mesh 'scene0000_00' (from <file>)``."""
        named = f"mesh {self.name!r}" if self.name else "mesh"
        return f"{named} (from {self.source})" if self.source else named

    def _check_shapes(self) -> None:
        where = self.where
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"{where}: vertices must have shape (V, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"{where}: faces must have shape (F, 3), got {self.faces.shape}")
        per_face = {"face_labels": self.face_labels, "face_instances": self.face_instances}
        for key, value in per_face.items():
            if value.shape != (self.num_faces,):
                raise ValueError(f"{where}: {key} must have shape ({self.num_faces},), got {value.shape}")
        per_vertex = {
            "vertex_labels": self.vertex_labels,
            "vertex_instances": self.vertex_instances,
        }
        for key, value in per_vertex.items():
            if value is not None and value.shape != (self.num_vertices,):
                raise ValueError(f"{where}: {key} must have shape ({self.num_vertices},), got {value.shape}")
        if self.vertex_colors is not None and self.vertex_colors.shape != (self.num_vertices, 3):
            raise ValueError(f"{where}: vertex_colors must have shape ({self.num_vertices}, 3)")
        if self.num_faces and (self.faces.min() < 0 or self.faces.max() >= self.num_vertices):
            raise ValueError(f"{where}: face indices out of range [0, {self.num_vertices})")


def mesh_from_vertex_ids(
    vertex: np.ndarray,
    faces: np.ndarray,
    class_ids: np.ndarray,
    instances: np.ndarray,
    valid_ids: tuple[int, ...],
    *,
    name: str,
    source: str,
    with_colors: bool = False,
) -> LabelledMesh:
    """A :class:`LabelledMesh` from a PLY vertex record with per-vertex raw class ids and instance ids.

    ScanNet and SceneNN both annotate vertices with NYU40 ids: faces take the vertices' majority
    (:func:`~ctxir.core.surface.face_majority`, RangeUDF's rule) for the class and the instance, and raw
    ids become class indices through ``valid_ids`` (:func:`ids_to_classes`).
    """
    class_ids = np.asarray(class_ids, dtype=np.int64)
    instances = np.asarray(instances, dtype=np.int64)
    colors = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1) if with_colors else None
    return LabelledMesh(
        vertices=np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64),
        faces=faces,
        face_labels=ids_to_classes(face_majority(class_ids, faces), valid_ids),
        face_instances=face_majority(instances, faces),
        vertex_labels=ids_to_classes(class_ids, valid_ids),
        vertex_instances=instances,
        vertex_colors=colors,
        name=name,
        source=source,
    )


def ids_to_classes(ids: np.ndarray, valid_ids: tuple[int, ...]) -> np.ndarray:
    """Map raw data-set ids to class indices: ``valid_ids[k]`` becomes ``k``, every other value ``IGNORE_LABEL``.

    Any integer is accepted (negative ids and stray values such as ScanNet's 50 > 40 become ignore).
    """
    ids = np.asarray(ids).astype(np.int64)
    table = np.full(max(valid_ids) + 1, IGNORE_LABEL, dtype=np.int64)
    table[list(valid_ids)] = np.arange(len(valid_ids))
    inside = (ids >= 0) & (ids < table.size)
    return np.where(inside, table[np.clip(ids, 0, table.size - 1)], IGNORE_LABEL)


def clean_mesh(mesh: LabelledMesh) -> LabelledMesh:
    """Drop what downstream sampling and distance queries cannot use, and say what was dropped.

    Removes, in this order: vertices with NaN/inf coordinates and every face using them; degenerate faces
    (a repeated vertex index, or zero area up to rounding); vertices no remaining face references. Faces
    are re-indexed and every per-vertex / per-face array is kept aligned. A ``warnings.warn`` names the mesh
    and the counts whenever something was dropped; an unchanged mesh is returned as is.

    Raises:
        ValueError: naming the mesh, when no face is left (an empty mesh cannot be sampled).
    """
    where = mesh.where
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = mesh.faces
    finite_vertex = np.isfinite(vertices).all(axis=1)
    uses_bad_vertex = ~finite_vertex[faces].all(axis=1)
    repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
    corners = np.where(finite_vertex[:, None], vertices, 0.0)[faces]
    edges = corners[:, [1, 2, 0]] - corners
    twice_area = np.linalg.norm(np.cross(edges[:, 0], edges[:, 1]), axis=1)
    longest_squared = (edges**2).sum(axis=2).max(axis=1, initial=0.0)
    degenerate = ~uses_bad_vertex & (repeated | (twice_area <= 1e-12 * longest_squared))
    keep_face = ~uses_bad_vertex & ~degenerate
    referenced = np.zeros(mesh.num_vertices, dtype=bool)
    referenced[faces[keep_face].ravel()] = True
    dropped = {
        "vertices with NaN/inf coordinates": int((~finite_vertex).sum()),
        "faces using them": int(uses_bad_vertex.sum()),
        "degenerate faces": int(degenerate.sum()),
        "unreferenced vertices": int((finite_vertex & ~referenced).sum()),
    }
    if not keep_face.any():
        raise ValueError(f"{where}: empty after cleaning ({mesh.num_faces} faces, none usable): {dropped}")
    if not any(dropped.values()):
        return mesh
    warnings.warn(
        f"{where}: dropped " + ", ".join(f"{n} {what}" for what, n in dropped.items() if n),
        stacklevel=2,
    )
    new_index = np.cumsum(referenced) - 1
    per_vertex = {
        key: None if getattr(mesh, key) is None else getattr(mesh, key)[referenced]
        for key in ("vertex_labels", "vertex_instances", "vertex_colors")
    }
    return replace(
        mesh,
        vertices=mesh.vertices[referenced],
        faces=new_index[faces[keep_face]],
        face_labels=mesh.face_labels[keep_face],
        face_instances=mesh.face_instances[keep_face],
        **per_vertex,
    )
