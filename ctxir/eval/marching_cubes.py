"""Marching-cubes case table, generated here from first principles, and vectorised polygonisation of cells.

The table is built at import (256 cases, a few milliseconds) rather than copied from any code base:

* corner ``i`` of a cell sits at offset ``(i & 1, (i >> 1) & 1, (i >> 2) & 1)`` (x, y, z) from the cell's
  lowest node; edge ``4·k + j`` joins the ``j``-th corner whose bit ``k`` is 0 to its neighbour along axis ``k``;
* on every cube face, walked counter-clockwise as seen from outside, each run of *inside* corners is cut off
  by one directed segment from the edge where the walk enters the run to the edge where it leaves it. A face
  with alternating corners therefore separates its two inside corners; the rule depends only on that face's
  four signs, so two cells sharing a face always agree and the output is watertight;
* every crossed edge is entered on one of its two faces and left on the other, so the segments chain into
  closed loops, which are triangulated as fans. Triangles are wound so that their normals point from the
  inside (negative) side to the outside (positive) side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Offset (x, y, z) of each of the 8 corners of a cell from its lowest node.
CORNER_OFFSETS = np.array([[(i >> k) & 1 for k in range(3)] for i in range(8)], dtype=np.int64)


def _edge_corners() -> np.ndarray:
    """(12, 2) corner pairs; the first corner of each edge is the lower end along the edge's axis."""
    edges = []
    for axis in range(3):
        for corner in range(8):
            if not (corner >> axis) & 1:
                edges.append((corner, corner | (1 << axis)))
    return np.array(edges, dtype=np.int64)


#: Corner pair of each of the 12 edges, lower end first.
EDGE_CORNERS = _edge_corners()
#: Axis (0 = x, 1 = y, 2 = z) along which each edge runs.
EDGE_AXIS = np.repeat(np.arange(3), 4)


def _faces_ccw() -> list[list[int]]:
    """The 6 cube faces, each as its 4 corners counter-clockwise seen from outside the cube."""
    faces = []
    for axis in range(3):
        for side in (0, 1):
            corners = [c for c in range(8) if (c >> axis) & 1 == side]
            normal = np.zeros(3)
            normal[axis] = 1.0 if side else -1.0
            u = np.roll(np.eye(3)[axis], 1)  # any in-plane axis
            v = np.cross(normal, u)  # (u, v, normal) right-handed
            rel = CORNER_OFFSETS[corners] - CORNER_OFFSETS[corners].mean(axis=0)
            angles = np.arctan2(rel @ v, rel @ u)
            faces.append([corners[i] for i in np.argsort(angles)])
    return faces


def _case_loops(case: int, faces: list[list[int]], edge_of: dict[tuple[int, int], int]) -> list[list[int]]:
    """Closed loops of crossed edges for one sign case (bit ``i`` set = corner ``i`` inside)."""
    inside = [(case >> i) & 1 for i in range(8)]
    successor: dict[int, int] = {}
    for face in faces:
        crossings = []  # (edge, enters_inside) in counter-clockwise order
        for k in range(4):
            a, b = face[k], face[(k + 1) % 4]
            if inside[a] != inside[b]:
                crossings.append((edge_of[(min(a, b), max(a, b))], bool(inside[b])))
        for k, (edge, enters) in enumerate(crossings):
            if enters:
                successor[edge] = crossings[(k + 1) % len(crossings)][0]
    loops = []
    while successor:
        start = min(successor)
        loop = [start]
        while successor[loop[-1]] != start:
            loop.append(successor.pop(loop[-1]))
        successor.pop(loop[-1])
        loops.append(loop)
    return loops


def _fan(loop: list[int], edge_faces: list[set[int]]) -> list[tuple[int, int, int]]:
    """Fan-triangulate a loop in its winding order (normals towards the outside side).

    The apex is chosen so that no triangle has all three vertices on one cube face: such a triangle would
    lie in the face shared with the neighbouring cell, which may emit the same triangle.
    """
    n = len(loop)
    for apex in range(n):
        ring = loop[apex:] + loop[:apex]
        fan = [(ring[0], ring[k], ring[k + 1]) for k in range(1, n - 1)]
        if all(not (edge_faces[a] & edge_faces[b] & edge_faces[c]) for a, b, c in fan):
            return fan
    raise AssertionError(f"no face-free fan for loop {loop}")  # never reached for the 256 cube cases


def _build_triangle_table() -> np.ndarray:
    """(256, max_triangles, 3) edge indices per case, padded with -1."""
    faces = _faces_ccw()
    edge_of = {(int(a), int(b)): e for e, (a, b) in enumerate(EDGE_CORNERS)}
    edge_faces = [{f for f, face in enumerate(faces) if a in face and b in face} for a, b in EDGE_CORNERS]
    per_case = []
    for case in range(256):
        triangles = []
        for loop in _case_loops(case, faces, edge_of):
            triangles += _fan(loop, edge_faces)
        per_case.append(triangles)
    width = max(len(t) for t in per_case)
    table = np.full((256, width, 3), -1, dtype=np.int64)
    for case, triangles in enumerate(per_case):
        if triangles:
            table[case, : len(triangles)] = triangles
    return table


#: Triangles (as edge indices) of each of the 256 corner-sign cases, -1 padded.
TRIANGLE_TABLE = _build_triangle_table()


@dataclass(frozen=True)
class Grid:
    """A regular grid of nodes: ``shape`` nodes per axis from ``origin`` with ``spacing`` between nodes."""

    origin: np.ndarray  # (3,) float64
    spacing: np.ndarray  # (3,) float64
    shape: tuple[int, int, int]

    @classmethod
    def from_bounds(cls, bounds: np.ndarray, resolution: int | tuple[int, int, int]) -> Grid:
        """Grid whose first and last nodes lie on the bounds; ``resolution`` nodes per axis (int or 3 ints)."""
        lo, hi = bounds
        shape = tuple(int(r) for r in np.broadcast_to(np.asarray(resolution), (3,)))
        if min(shape) < 2:
            raise ValueError(f"resolution must be at least 2 nodes per axis, got {resolution}")
        return cls(lo, (hi - lo) / (np.array(shape) - 1), shape)  # type: ignore[arg-type]

    @property
    def num_nodes(self) -> int:
        return int(np.prod(self.shape))

    @property
    def cell_shape(self) -> tuple[int, int, int]:
        return tuple(s - 1 for s in self.shape)  # type: ignore[return-value]

    def node_positions(self, nodes: np.ndarray) -> np.ndarray:
        """(M, 3) float64 coordinates of linear (C-order) node indices."""
        ijk = np.stack(np.unravel_index(nodes, self.shape), axis=-1)
        return self.origin + ijk * self.spacing

    def cell_corner_nodes(self, cells: np.ndarray) -> np.ndarray:
        """(K, 8) linear node index of each corner of linear (C-order) cell indices."""
        ijk = np.stack(np.unravel_index(cells, self.cell_shape), axis=-1)
        corners = ijk[:, None, :] + CORNER_OFFSETS[None]
        return np.ravel_multi_index(tuple(np.moveaxis(corners, -1, 0)), self.shape)


def polygonise(
    grid: Grid,
    corner_nodes: np.ndarray,
    values: np.ndarray,
    inside: np.ndarray,
    edge_ok: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate many cells at once with one table lookup; vertices shared between cells are merged.

    Args:
        grid: the grid the cells belong to.
        corner_nodes: (K, 8) node index of each cell corner (``Grid.cell_corner_nodes``).
        values: (K, 8) field value at each corner; a vertex is placed on a crossed edge by linear
            interpolation to 0, so inside corners must be ≤ 0 and outside corners > 0.
        inside: (K, 8) bool side of each corner.
        edge_ok: optional (K, 12) bool; triangles using a vertex on an edge marked False are dropped.

    Returns:
        vertices (V, 3) float64 and faces (F, 3) int64. A vertex is keyed by its grid edge (or by its node
        when it falls exactly on a node), so neighbouring cells that see the same crossing share it.
        Degenerate and duplicated triangles are removed and unreferenced vertices dropped.
    """
    weights = 1 << np.arange(8)
    cases = (inside.astype(np.int64) * weights).sum(axis=1)
    triangles = TRIANGLE_TABLE[cases]  # (K, T, 3)
    cell, slot = np.nonzero(triangles[:, :, 0] >= 0)
    edges = triangles[cell, slot]  # (F, 3)
    if edge_ok is not None:
        keep = edge_ok[cell[:, None], edges].all(axis=1)
        cell, edges = cell[keep], edges[keep]
    if len(cell) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)

    cell3 = np.repeat(cell, 3)
    edge_flat = edges.ravel()
    corner_a, corner_b = EDGE_CORNERS[edge_flat, 0], EDGE_CORNERS[edge_flat, 1]
    node_a, node_b = corner_nodes[cell3, corner_a], corner_nodes[cell3, corner_b]
    value_a, value_b = values[cell3, corner_a], values[cell3, corner_b]
    t = value_a / (value_a - value_b)
    keys = np.where(t == 0, node_a * 4 + 3, np.where(t == 1, node_b * 4 + 3, node_a * 4 + EDGE_AXIS[edge_flat]))
    unique_keys, first, faces = np.unique(keys, return_index=True, return_inverse=True)
    pos_a = grid.node_positions(node_a[first])
    pos_b = grid.node_positions(node_b[first])
    vertices = pos_a + t[first, None] * (pos_b - pos_a)
    return drop_degenerate_faces(vertices, faces.reshape(-1, 3))


def drop_degenerate_faces(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop faces with a repeated vertex, duplicated faces (same vertex set) and unreferenced vertices."""
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    faces = faces[np.sort(first)]
    used, remap = np.unique(faces, return_inverse=True)
    return vertices[used], remap.reshape(-1, 3).astype(np.int64)
