"""The labelled triangle mesh every reader returns and every preprocessing step consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_labels: np.ndarray
    face_instances: np.ndarray
    vertex_labels: np.ndarray | None = None
    vertex_instances: np.ndarray | None = None
    vertex_colors: np.ndarray | None = None
    name: str = ""

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

    def _check_shapes(self) -> None:
        where = f"mesh {self.name!r}" if self.name else "mesh"
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
