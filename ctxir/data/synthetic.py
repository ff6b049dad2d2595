"""Procedural labelled indoor rooms: the embedded default data set (SPEC §6).

Rooms are open triangle meshes (walls without a closed ceiling, furniture as open box surfaces and slabs)
with a ScanNet-named class and an instance id per face, generated deterministically from a seed.

Several classes are separable **only by context**, never by local shape or absolute position:

- *desk* vs *table*: the same geometry and size distribution; a desk stands with its back against a wall
  with one chair in front, a table stands free in the room with chairs around it.
- *bookshelf* vs *cabinet*: the same open-front shelf unit and size distribution, both against a wall; a
  bookshelf stands beside a desk, a cabinet beside a bed (or a door).
- *chair* vs *sofa*: the same seat/back/legs construction and seat height; they differ by extent only.
- *door*, *window*, *picture*: thin slabs on walls, told apart by their size and height on the wall.
- *floor*, *table*/*desk* top and *bed* top: horizontal planes at different heights.

Room size (so the normalisation scale), shape (rectangle or L) and orientation (a random yaw of the whole
room) vary, so normalised coordinates do not give the classes away.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctxir.data.mesh import LabelledMesh
from ctxir.data.splits import SPLITS

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "wall",
    "floor",
    "cabinet",
    "bed",
    "chair",
    "sofa",
    "table",
    "door",
    "window",
    "bookshelf",
    "picture",
    "desk",
    "ceiling",
)
"""Class names of the synthetic rooms (index = label); ScanNet's names where they exist."""

_CLASS = {name: index for index, name in enumerate(SYNTHETIC_CLASSES)}
_UP = np.array([0.0, 0.0, 1.0])
_SLAB = 0.04  # thickness of table tops, seats, doors, windows, pictures (m)
_LEG = 0.05  # side of square furniture legs (m)


@dataclass
class _Frame:
    """A placement on the floor: local x along ``ex``, local y along ``ey`` (both unit, horizontal)."""

    origin: np.ndarray
    ex: np.ndarray
    ey: np.ndarray

    def to_room(self, local: np.ndarray) -> np.ndarray:
        return self.origin + local[..., :1] * self.ex + local[..., 1:2] * self.ey + local[..., 2:3] * _UP

    def footprint(self, width: float, depth: float) -> tuple[float, float, float, float]:
        """Axis-aligned room-frame rectangle (x0, y0, x1, y1) covered by local [0, width] x [0, depth]."""
        corners = self.to_room(np.array([[0, 0, 0], [width, 0, 0], [0, depth, 0], [width, depth, 0]], float))
        return (*corners[:, :2].min(axis=0), *corners[:, :2].max(axis=0))


@dataclass
class _MeshBuilder:
    """Accumulates tessellated quads with a label and instance id per face."""

    cell: float
    vertices: list[np.ndarray] = field(default_factory=list)
    faces: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    instances: list[np.ndarray] = field(default_factory=list)
    count: int = 0

    def quad(self, corner: np.ndarray, u: np.ndarray, v: np.ndarray, label: int, instance: int) -> None:
        """Add the parallelogram ``corner + [0,1]u + [0,1]v`` as a grid of about ``cell``-sized triangles pairs."""
        nu = max(1, int(np.ceil(np.linalg.norm(u) / self.cell - 1e-9)))
        nv = max(1, int(np.ceil(np.linalg.norm(v) / self.cell - 1e-9)))
        a, b = np.meshgrid(np.linspace(0, 1, nu + 1), np.linspace(0, 1, nv + 1), indexing="ij")
        self._grid(corner + a[..., None] * u + b[..., None] * v, np.ones((nu, nv), bool), label, instance)

    def _grid(self, points: np.ndarray, keep: np.ndarray, label: int, instance: int) -> None:
        """Add the cells ``keep`` (nu, nv) of a vertex grid ``points`` (nu+1, nv+1, 3), two triangles each."""
        nv1 = points.shape[1]
        i, j = np.nonzero(keep)
        v00, v10, v01, v11 = i * nv1 + j, (i + 1) * nv1 + j, i * nv1 + j + 1, (i + 1) * nv1 + j + 1
        faces = np.concatenate([np.stack([v00, v10, v11], 1), np.stack([v00, v11, v01], 1)])
        used, compact = np.unique(faces, return_inverse=True)
        self.vertices.append(points.reshape(-1, 3)[used])
        self.faces.append(compact.reshape(-1, 3) + self.count)
        self.labels.append(np.full(len(faces), label))
        self.instances.append(np.full(len(faces), instance))
        self.count += len(used)

    def box(
        self, frame: _Frame, lo: tuple[float, ...], hi: tuple[float, ...], label: int, instance: int,
        skip: tuple[str, ...] = ("bottom",),
    ) -> None:
        """Add the sides of the local box [lo, hi] except those named in ``skip``.

        Side names: bottom/top (z = lo/hi), near/far (local y = lo/hi), left/right (local x = lo/hi).
        """
        lo_, hi_ = np.asarray(lo, float), np.asarray(hi, float)
        size = hi_ - lo_
        axes = np.eye(3) * size
        sides = {
            "bottom": (lo_, axes[0], axes[1]),
            "top": (lo_ + axes[2], axes[0], axes[1]),
            "near": (lo_, axes[0], axes[2]),
            "far": (lo_ + axes[1], axes[0], axes[2]),
            "left": (lo_, axes[1], axes[2]),
            "right": (lo_ + axes[0], axes[1], axes[2]),
        }
        for name, (corner, u, v) in sides.items():
            if name in skip:
                continue
            origin = frame.to_room(corner)
            self.quad(origin, frame.to_room(corner + u) - origin, frame.to_room(corner + v) - origin, label, instance)

    def build(self, name: str) -> LabelledMesh:
        return LabelledMesh(
            vertices=np.concatenate(self.vertices),
            faces=np.concatenate(self.faces),
            face_labels=np.concatenate(self.labels),
            face_instances=np.concatenate(self.instances),
            name=name,
        )


@dataclass
class _Room:
    """Floor plan in the room frame: bounding rectangle [0, width] x [0, depth] minus an optional notch."""

    width: float
    depth: float
    height: float
    notch: tuple[float, float, float, float] | None
    occupied: list[tuple[float, float, float, float]] = field(default_factory=list)
    wall_items: dict[int, list[tuple[float, float, float, float]]] = field(default_factory=dict)

    def corners(self) -> np.ndarray:
        """Counter-clockwise floor polygon corners."""
        w, d = self.width, self.depth
        if self.notch is None:
            return np.array([[0, 0], [w, 0], [w, d], [0, d]], float)
        nx, ny = self.notch[0], self.notch[1]  # notch = [nx, w] x [ny, d]
        return np.array([[0, 0], [w, 0], [w, ny], [nx, ny], [nx, d], [0, d]], float)

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        keep = (x >= 0) & (x <= self.width) & (y >= 0) & (y <= self.depth)
        if self.notch is not None:
            keep &= ~((x > self.notch[0]) & (y > self.notch[1]))
        return keep

    def rect_free(self, rect: tuple[float, float, float, float], margin: float = 0.05) -> bool:
        x0, y0, x1, y1 = rect
        if not self.inside(np.array([x0, x1, x0, x1]), np.array([y0, y0, y1, y1])).all():
            return False
        if self.notch is not None and _overlap(rect, (*self.notch[:2], self.width, self.depth), 0.0):
            return False
        return not any(_overlap(rect, other, margin) for other in self.occupied)

    def wall_free(self, wall: int, item: tuple[float, float, float, float], margin: float = 0.1) -> bool:
        return not any(_overlap(item, other, margin) for other in self.wall_items.get(wall, []))


def _overlap(a: tuple[float, ...], b: tuple[float, ...], margin: float) -> bool:
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


class _Generator:
    """Places the objects of one room; every random choice comes from ``rng``."""

    def __init__(self, rng: np.random.Generator, cell: float) -> None:
        self.rng = rng
        self.mesh = _MeshBuilder(cell)
        self.next_instance = 0
        self.room = self._floor_plan()
        self.walls = self._wall_frames()

    def instance(self) -> int:
        self.next_instance += 1
        return self.next_instance - 1

    def uniform(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def _floor_plan(self) -> _Room:
        step = 0.25
        width = step * self.rng.integers(16, 33)  # 4-8 m
        depth = step * self.rng.integers(14, 29)  # 3.5-7 m
        notch = None
        if self.rng.random() < 0.5:  # L-shape: cut one corner rectangle off
            notch = (step * self.rng.integers(int(width / step * 0.5), int(width / step * 0.75) + 1),
                     step * self.rng.integers(int(depth / step * 0.5), int(depth / step * 0.75) + 1), 0.0, 0.0)
        return _Room(float(width), float(depth), self.uniform(2.4, 3.0), notch)

    def _wall_frames(self) -> list[tuple[_Frame, float]]:
        corners = self.room.corners()
        frames = []
        for a, b in zip(corners, np.roll(corners, -1, axis=0)):
            length = float(np.linalg.norm(b - a))
            ex = np.append((b - a) / length, 0.0)
            ey = np.array([-ex[1], ex[0], 0.0])  # inward normal of a counter-clockwise polygon
            frames.append((_Frame(np.append(a, 0.0), ex, ey), length))
        return frames

    # -- structure -------------------------------------------------------------------------------------
    def structure(self) -> None:
        cell = self.mesh.cell
        room = self.room
        nx, ny = int(np.ceil(room.width / cell)), int(np.ceil(room.depth / cell))
        gx, gy = np.meshgrid(np.linspace(0, room.width, nx + 1), np.linspace(0, room.depth, ny + 1), indexing="ij")
        centres_x, centres_y = (gx[:-1, :-1] + gx[1:, 1:]) / 2, (gy[:-1, :-1] + gy[1:, 1:]) / 2
        inside = room.inside(centres_x, centres_y)
        floor = np.stack([gx, gy, np.zeros_like(gx)], axis=-1)
        self.mesh._grid(floor, inside, _CLASS["floor"], self.instance())
        for frame, length in self.walls:
            self.mesh.quad(frame.origin, frame.ex * length, _UP * room.height, _CLASS["wall"], self.instance())
        if self.rng.random() < 0.5:  # partial ceiling: a strip along one side of the room
            strip = self.uniform(0.5, 1.5)
            band = centres_y < strip if self.rng.random() < 0.5 else centres_x < strip
            ceiling = floor + np.array([0.0, 0.0, room.height])
            self.mesh._grid(ceiling, inside & band, _CLASS["ceiling"], self.instance())

    # -- wall slabs ------------------------------------------------------------------------------------
    def wall_slab(self, name: str) -> tuple[int, float, float] | None:
        """Door, window or picture on a random wall; returns (wall, start, width) or None if nothing fits."""
        for _ in range(20):
            if name == "door":
                width, height, bottom = self.uniform(0.8, 0.95), self.uniform(2.0, 2.1), 0.0
            elif name == "window":
                width, height = self.uniform(0.8, 1.6), self.uniform(0.9, 1.4)
                bottom = self.uniform(0.8, 1.1)
            else:  # picture
                width, height = self.uniform(0.4, 1.2), self.uniform(0.3, 0.9)
                bottom = self.uniform(1.5, 1.8) - height / 2
            wall = int(self.rng.integers(len(self.walls)))
            frame, length = self.walls[wall]
            if length < width + 0.6:
                continue
            start = self.uniform(0.3, length - width - 0.3)
            item = (start, bottom, start + width, bottom + height)
            if not self.room.wall_free(wall, item):
                continue
            if name == "door":  # keep the floor in front of a door free
                local = _Frame(frame.to_room(np.array([start, 0.0, 0.0])), frame.ex, frame.ey)
                clearance = local.footprint(width, 0.9)
                if not self.room.rect_free(clearance, margin=0.0):
                    continue
                self.room.occupied.append(clearance)
            self.room.wall_items.setdefault(wall, []).append(item)
            self.mesh.box(frame, (start, 0.0, bottom), (start + width, _SLAB, bottom + height), _CLASS[name],
                          self.instance(), skip=("near",))
            return wall, start, width
        return None

    # -- furniture builders (local frame: x width, y depth, z up) --------------------------------------
    def _legs(self, frame: _Frame, width: float, depth: float, height: float, label: int, instance: int) -> None:
        for x in (0.0, width - _LEG):
            for y in (0.0, depth - _LEG):
                self.mesh.box(frame, (x, y, 0.0), (x + _LEG, y + _LEG, height), label, instance,
                              skip=("bottom", "top"))

    def table_geometry(self, frame: _Frame, width: float, depth: float, height: float, label: int) -> None:
        instance = self.instance()
        self.mesh.box(frame, (0.0, 0.0, height - _SLAB), (width, depth, height), label, instance)
        self._legs(frame, width, depth, height - _SLAB, label, instance)

    def seat_geometry(self, frame: _Frame, width: float, depth: float, seat: float, label: int) -> None:
        """Chair and sofa: seat slab, backrest along local y = depth, four legs. Front faces local -y."""
        instance = self.instance()
        self.mesh.box(frame, (0.0, 0.0, seat - _SLAB), (width, depth, seat), label, instance)
        self.mesh.box(frame, (0.0, depth - 0.06, seat), (width, depth, seat + 0.45), label, instance)
        self._legs(frame, width, depth, seat - _SLAB, label, instance)

    def shelf_geometry(self, frame: _Frame, width: float, depth: float, height: float, label: int) -> None:
        """Bookshelf and cabinet: open-front unit with shelves; back at local y = 0 (against the wall)."""
        instance = self.instance()
        self.mesh.box(frame, (0.0, 0.0, 0.0), (width, depth, height), label, instance, skip=("bottom", "far"))
        shelves = max(1, int(height / 0.4))
        for z in np.linspace(0.05, height, shelves + 1)[:-1]:
            self.mesh.quad(frame.to_room(np.array([0.0, 0.0, z])), frame.ex * width, frame.ey * depth, label, instance)

    # -- placements ------------------------------------------------------------------------------------
    def against_wall(self, width: float, depth: float, tries: int = 30,
                     wall: int | None = None, near: float | None = None) -> tuple[int, _Frame, float] | None:
        """A free spot of width x depth with its local y = 0 side on a wall (optionally near position ``near``)."""
        for _ in range(tries):
            index = int(self.rng.integers(len(self.walls))) if wall is None else wall
            frame, length = self.walls[index]
            if length < width + 0.1:
                continue
            if near is None:
                start = self.uniform(0.05, length - width - 0.05)
            else:
                start = near + self.rng.choice([-1.0, 1.0]) * self.uniform(0.0, 0.2)
                start = float(np.clip(start, 0.05, length - width - 0.05))
            local = _Frame(frame.to_room(np.array([start, 0.0, 0.0])), frame.ex, frame.ey)
            rect = local.footprint(width, depth)
            if self.room.rect_free(rect):
                return index, local, start
        return None

    def claim(self, wall: int | None, frame: _Frame, width: float, depth: float, height: float, start: float) -> None:
        self.room.occupied.append(frame.footprint(width, depth))
        if wall is not None:
            self.room.wall_items.setdefault(wall, []).append((start, 0.0, start + width, height))

    def desk_with_chair_and_bookshelf(self) -> None:
        width, depth, height = self.uniform(1.0, 1.6), self.uniform(0.6, 0.9), self.uniform(0.72, 0.76)
        spot = self.against_wall(width, depth + 0.6)  # room for the chair in front
        if spot is None:
            return
        wall, frame, start = spot
        self.claim(wall, frame, width, depth + 0.6, height, start)
        self.table_geometry(frame, width, depth, height, _CLASS["desk"])
        self.chair_facing(frame, width, depth)
        shelf_width = self.uniform(0.6, 1.2)
        side = start + width + 0.1 if self.rng.random() < 0.5 else start - shelf_width - 0.1
        self.shelf_unit("bookshelf", wall, side, shelf_width)

    def chair_facing(self, frame: _Frame, table_width: float, table_depth: float) -> None:
        """A chair in front of the local y = table_depth edge of a table/desk, facing it."""
        width, depth = self.uniform(0.45, 0.55), self.uniform(0.45, 0.6)
        x = table_width / 2 + width / 2 + self.uniform(-0.15, 0.15)
        y = table_depth - self.uniform(0.05, 0.2)
        origin = frame.to_room(np.array([x, y, 0.0]))  # chair local x runs along -ex, y along +ey
        chair = _Frame(origin, -frame.ex, frame.ey)
        self.seat_geometry(chair, width, depth, self.uniform(0.42, 0.48), _CLASS["chair"])

    def shelf_unit(self, name: str, wall: int, start: float, width: float) -> None:
        depth, height = self.uniform(0.35, 0.45), self.uniform(0.8, 2.0)
        spot = self.against_wall(width, depth, tries=6, wall=wall, near=start)
        if spot is None:
            return
        wall, frame, start = spot
        if not self.room.wall_free(wall, (start, 0.0, start + width, height), margin=0.02):
            return
        self.claim(wall, frame, width, depth, height, start)
        self.shelf_geometry(frame, width, depth, height, _CLASS[name])

    def bed_with_cabinets(self) -> None:
        width, length, top = self.uniform(0.9, 1.8), self.uniform(1.9, 2.1), self.uniform(0.45, 0.6)
        spot = self.against_wall(width, length)
        if spot is None:
            return
        wall, frame, start = spot
        self.claim(wall, frame, width, length, 1.1, start)
        instance = self.instance()
        self.mesh.box(frame, (0.0, 0.0, 0.0), (width, length, top), _CLASS["bed"], instance)
        self.mesh.box(frame, (0.0, 0.0, top), (width, 0.06, 1.1), _CLASS["bed"], instance)  # headboard
        for side in self.rng.permutation(2)[: int(self.rng.integers(1, 3))]:
            shelf_width = self.uniform(0.6, 1.2)
            position = start + width + 0.1 if side else start - shelf_width - 0.1
            self.shelf_unit("cabinet", wall, position, shelf_width)

    def sofa(self) -> None:
        width, depth = self.uniform(1.5, 2.2), self.uniform(0.6, 0.8)
        spot = self.against_wall(width, depth)
        if spot is None:
            return
        wall, frame, start = spot
        self.claim(wall, frame, width, depth, 0.9, start)
        # seat_geometry puts the backrest at local y = depth: mirror the wall frame so the back is on the wall
        mirrored = _Frame(frame.to_room(np.array([width, depth, 0.0])), -frame.ex, -frame.ey)
        self.seat_geometry(mirrored, width, depth, self.uniform(0.42, 0.48), _CLASS["sofa"])

    def table_with_chairs(self) -> None:
        width, depth, height = self.uniform(1.0, 1.6), self.uniform(0.6, 0.9), self.uniform(0.72, 0.76)
        pad = 0.6  # chairs around
        for _ in range(30):
            x = self.uniform(0.3 + pad, self.room.width - width - pad - 0.3)
            y = self.uniform(0.3 + pad, self.room.depth - depth - pad - 0.3)
            rect = (x - pad, y - pad, x + width + pad, y + depth + pad)
            if self.room.rect_free(rect, margin=0.1):
                break
        else:
            return
        self.room.occupied.append(rect)
        frame = _Frame(np.array([x, y, 0.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
        self.table_geometry(frame, width, depth, height, _CLASS["table"])
        sides = (  # (origin, ex, outward ey, edge length) of each table edge, in the room frame
            ((x, y), (1.0, 0.0), (0.0, -1.0), width),
            ((x + width, y + depth), (-1.0, 0.0), (0.0, 1.0), width),
            ((x + width, y), (0.0, 1.0), (1.0, 0.0), depth),
            ((x, y + depth), (0.0, -1.0), (-1.0, 0.0), depth),
        )
        for origin, ex, ey, edge in sides:  # a chair on a random subset of the edges, facing the table
            if self.rng.random() < 0.4:
                side = _Frame(np.array([*origin, 0.0]), np.array([*ex, 0.0]), np.array([*ey, 0.0]))
                self.chair_facing(side, edge, 0.0)

    def generate(self) -> None:
        self.structure()
        for _ in range(int(self.rng.integers(1, 3))):
            self.wall_slab("door")
        if self.rng.random() < 0.7:
            self.bed_with_cabinets()
        for _ in range(int(self.rng.integers(1, 3))):
            self.desk_with_chair_and_bookshelf()
        if self.rng.random() < 0.6:
            self.sofa()
        for _ in range(int(self.rng.integers(1, 3))):
            self.table_with_chairs()
        for _ in range(int(self.rng.integers(1, 4))):
            self.wall_slab("window")
        for _ in range(int(self.rng.integers(1, 4))):
            self.wall_slab("picture")


def subdivide(mesh: LabelledMesh, times: int) -> LabelledMesh:
    """Split every triangle into four at its edge midpoints, ``times`` times (shared edges stay shared)."""
    vertices, faces = np.asarray(mesh.vertices, float), mesh.faces
    labels, instances = mesh.face_labels, mesh.face_instances
    for _ in range(times):
        edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        mid = (len(vertices) + inverse.reshape(-1, 3)).astype(np.int64)
        vertices = np.concatenate([vertices, vertices[unique].mean(axis=1)])
        a, b, c = faces.T
        ab, bc, ca = mid.T
        faces = np.concatenate([np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
        labels, instances = np.tile(labels, 4), np.tile(instances, 4)
    return LabelledMesh(vertices, faces, labels, instances, name=mesh.name)


def generate_room(seed: int, cell_size: float = 0.25, subdivisions: int = 0, name: str | None = None) -> LabelledMesh:
    """Generate one labelled open room mesh (z up, metres), deterministic for ``seed``.

    Args:
        seed: random seed; equal seeds give identical meshes.
        cell_size: target edge length (m) of the tessellation of floor, walls and furniture faces (smaller →
            more faces; the default gives a few thousand faces per room).
        subdivisions: further midpoint subdivisions of every triangle (each multiplies the face count by 4);
            for benchmarks needing large meshes.
        name: scene name (default ``f"room_{seed}"``).

    Labels index :data:`SYNTHETIC_CLASSES`; every object, wall and the floor is its own instance.
    """
    if cell_size <= 0:
        raise ValueError(f"cell_size must be positive, got {cell_size}")
    rng = np.random.default_rng(seed)
    generator = _Generator(rng, cell_size)
    generator.generate()
    mesh = generator.mesh.build(name if name is not None else f"room_{seed}")
    yaw = rng.uniform(0.0, 2.0 * np.pi)
    c, s = np.cos(yaw), np.sin(yaw)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    mesh.vertices = mesh.vertices @ rotation.T
    return subdivide(mesh, subdivisions) if subdivisions else mesh


def synthetic_room_seed(generator_seed: int, unit: str) -> int:
    """Seed of the room named ``unit`` ('train_0003'): distinct per generator seed, split and index."""
    split, _, index = unit.rpartition("_")
    if split not in SPLITS or not index.isdigit():
        raise ValueError(f"synthetic room names look like 'train_0003', got {unit!r}")
    return int(np.random.SeedSequence([generator_seed, SPLITS.index(split), int(index)]).generate_state(1)[0])


def read_synthetic_room(generator_seed: int, cell_size: float, unit: str) -> list[LabelledMesh]:
    """The 'reader' of the synthetic data set: generate room ``unit`` (a light, picklable top-level function)."""
    return [generate_room(synthetic_room_seed(generator_seed, unit), cell_size=cell_size, name=unit)]
