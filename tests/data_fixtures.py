"""Tiny raw data sets in the exact on-disk formats of ScanNet v2, Stanford 2D-3D-S and SceneNN, for tests.

Every writer takes a target directory, writes the files a real download would hold (binary little-endian
PLY with the real property names and types, OBJ with real material names, JSON/TSV with the real keys;
formats from ``/work/shared/reference/datasets.md``) and returns a small record with the paths written and
the ground truth the readers must recover. Meshes are small but non-trivial: a floor, four walls and three
box objects, about 440 triangles per scene/room, so downstream preprocessing can sample them.

Geometry
- ``room_geometry(seed)``: the shared room (floor 8x8 grid, four 8x3 wall grids, chair/table/books boxes);
  every part has its own vertices; ``RoomGeometry.parts`` names each part's role.

ScanNet v2 (``<root>/scans/<scene>/...``)
- ``write_scannet_label_map(path)``: a 17-column ``scannetv2-labels.combined.tsv`` with real rows.
- ``write_scannet_scene(root, scene_id, seed=0, labels_ply=True, aggregation=True, folder="scans",
  corrupt=None)``: ``_vh_clean_2.ply`` (float x,y,z; uchar red,green,blue,alpha; list uchar int
  vertex_indices), ``_vh_clean_2.labels.ply`` (+ ushort label), ``.aggregation.json``,
  ``_vh_clean_2.0.010000.segs.json``. The labels.ply carries stray 50s (as in scene0270_00), one wall
  segment belongs to no group (nyu40 0, no instance) and one face has three different labels (tie).
  ``corrupt`` in {"mesh", "labels", "aggregation", "segs"} truncates that file. Use ``folder="scans_test",
  labels_ply=False, aggregation=False`` for a test scan. Returns ``ScanNetScene``.
- ``write_scannet_root(root, train=..., val=..., test=..., seed=0)``: the label table plus scans whose ids
  come from the official lists (defaults: 2 train, 1 val, 1 test scan). Returns ``dict[id, ScanNetScene]``.

Stanford 2D-3D-S (``<root>/area_N/3d/semantic.obj``, ``<root>/assets/semantic_labels.json``)
- ``write_stanford_area(root, area="area_1", rooms=(("office", 1), ("hallway", 2)), seed=0,
  unknown=True, corrupt=None)``: one area OBJ; vertices of all rooms shuffled together, faces grouped by
  ``usemtl class_instance_roomType_roomNum_areaNum``, ``f a b c`` and ``f a/ta b/tb c/tc`` faces, one
  material repeated in two blocks, an ``<UNK>_0_<UNK>_0_0`` block. ``corrupt`` in {"truncated",
  "garbage", "quad"}. Returns ``StanfordArea`` (truth per room name ``area_1/office_1``).
- ``write_stanford_root(root, areas=("area_1", ..., "area_6"), rooms_per_area=1, seed=0)``: several areas
  plus ``assets/semantic_labels.json`` (``<UNK>`` first). Returns ``dict[area, StanfordArea]``.

SceneNN (``<root>/<id>/<id>.ply``)
- ``write_scenenn_scene(root, scene_id="005", seed=0, corrupt=None)``: vertex f4 x,y,z,nx,ny,nz,
  u4 label (instance), u2 nyu_class (nyu40, 0 = unannotated), u1 red,green,blue; list uchar int
  vertex_indices. ``corrupt="truncated"`` cuts the file. Returns ``SceneNNScene``.
- ``write_scenenn_root(root, train=("005", "014"), test=("011",), seed=0)``: several scenes.

PLY damage
- ``declare_rows(path, element, count)``: the header declares ``count`` rows of ``element``, the data unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

ROLES = ("floor", "wall", "wall", "wall", "wall", "chair", "table", "books")
"""Role of each part of ``room_geometry``, in part order."""


@dataclass
class RoomGeometry:
    """A small open room: vertices (V,3) float64 on a 1e-4 grid, faces (F,3), part index per vertex/face."""

    vertices: np.ndarray
    faces: np.ndarray
    vertex_part: np.ndarray
    face_part: np.ndarray
    parts: tuple[str, ...] = ROLES


def _grid(origin: np.ndarray, u: np.ndarray, v: np.ndarray, nu: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.meshgrid(np.arange(nu + 1), np.arange(nv + 1), indexing="ij")
    vertices = origin + (i.reshape(-1, 1) / nu) * u + (j.reshape(-1, 1) / nv) * v
    corner = (np.arange(nu)[:, None] * (nv + 1) + np.arange(nv)[None, :]).ravel()
    a, b, c, d = corner, corner + nv + 1, corner + nv + 2, corner + 1
    return vertices, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def _box(low: np.ndarray, high: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The top and four sides of a box (no bottom, as scanned furniture), each a 2x2 grid."""
    x, y, z = np.eye(3) * (high - low)
    return [
        _grid(low + z, x, y, 2, 2),
        _grid(low, x, z, 2, 2),
        _grid(low + y, x, z, 2, 2),
        _grid(low, y, z, 2, 2),
        _grid(low + x, y, z, 2, 2),
    ]


def room_geometry(seed: int = 0) -> RoomGeometry:
    """The fixture room: size and object placement vary with ``seed``; parts follow ``ROLES``."""
    rng = np.random.default_rng(seed)
    width, depth, height = np.round(rng.uniform(3.0, 6.0), 1), np.round(rng.uniform(3.0, 5.0), 1), 2.5
    ex, ey, ez = np.eye(3)
    parts: list[list[tuple[np.ndarray, np.ndarray]]] = [
        [_grid(np.zeros(3), width * ex, depth * ey, 8, 8)],
        [_grid(np.zeros(3), width * ex, height * ez, 8, 3)],
        [_grid(depth * ey, width * ex, height * ez, 8, 3)],
        [_grid(np.zeros(3), depth * ey, height * ez, 8, 3)],
        [_grid(width * ex, depth * ey, height * ez, 8, 3)],
    ]
    for size in ((0.5, 0.5, 0.9), (1.2, 0.8, 0.75), (0.3, 0.2, 0.25)):
        low = np.round([rng.uniform(0.2, width - 1.5), rng.uniform(0.2, depth - 1.0), 0.0], 2)
        parts.append(_box(low, low + np.array(size)))
    vertices, faces, vertex_part, face_part = [], [], [], []
    offset = 0
    for index, patches in enumerate(parts):
        for patch_vertices, patch_faces in patches:
            vertices.append(patch_vertices)
            faces.append(patch_faces + offset)
            vertex_part.append(np.full(len(patch_vertices), index))
            face_part.append(np.full(len(patch_faces), index))
            offset += len(patch_vertices)
    return RoomGeometry(
        vertices=np.round(np.concatenate(vertices), 4),
        faces=np.concatenate(faces).astype(np.int64),
        vertex_part=np.concatenate(vertex_part),
        face_part=np.concatenate(face_part),
    )


def _write_ply(path: Path, vertex: np.ndarray, faces: np.ndarray | None, comments: list[str]) -> None:
    elements = [PlyElement.describe(vertex, "vertex")]
    if faces is not None:
        face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
        face["vertex_indices"] = faces
        elements.append(PlyElement.describe(face, "face"))
    PlyData(elements, text=False, byte_order="<", comments=comments).write(str(path))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


# --------------------------------------------------------------------------------------------- ScanNet

SCANNET_CATEGORY = {"floor": "floor", "wall": "wall", "chair": "chair", "table": "table", "books": "books"}
"""raw_category written into aggregation.json for each role."""
SCANNET_TSV_ROWS = (
    ("wall", 1), ("chair", 5), ("books", 23), ("floor", 2), ("door", 8), ("object", 40), ("window", 9),
    ("table", 7), ("trash can", 39), ("pillow", 18), ("picture", 11), ("ceiling", 22), ("cabinet", 3),
    ("desk", 14), ("couch", 6), ("refrigerator", 24), ("toilet", 33), ("sink", 34), ("bathtub", 36),
)  # fmt: skip
SCANNET_TSV_HEADER = (
    "id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass", "nyu40class",
    "eigen13class", "ModelNet40", "ModelNet10", "ShapeNetCore55", "synsetoffset", "wnsynsetid",
    "wnsynsetkey", "mpcat40", "mpcat40index",
)  # fmt: skip


@dataclass
class ScanNetScene:
    """What ``write_scannet_scene`` wrote, and the truth in file vertex order.

    Attributes:
        scene_dir: the scan folder.
        paths: file role ("mesh", "labels", "aggregation", "segs") -> path, for the files written.
        vertices, faces: the mesh as written (vertices as float32 values).
        colors: (V,3) uint8 RGB.
        labels_nyu40: (V,) the ushort ``label`` of labels.ply (with the stray 50s and the tie face).
        aggregation_nyu40: (V,) nyu40 id the aggregation + tsv give (0 where no group).
        instances: (V,) objectId of the covering group, -1 where none.
        tie_face: a face whose three vertices carry labels (5 chair, 22 ceiling, 1 wall) in this order.
    """

    scene_dir: Path
    paths: dict[str, Path]
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    labels_nyu40: np.ndarray
    aggregation_nyu40: np.ndarray
    instances: np.ndarray
    tie_face: int


def write_scannet_label_map(path: str | Path) -> Path:
    """Write a ``scannetv2-labels.combined.tsv`` with the real 17-column header and real rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(SCANNET_TSV_HEADER)]
    for row_id, (raw, nyu40) in enumerate(SCANNET_TSV_ROWS, start=1):
        cells = [str(row_id), raw, raw, "10", str(nyu40)] + [""] * (len(SCANNET_TSV_HEADER) - 5)
        lines.append("\t".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_scannet_scene(
    root: str | Path,
    scene_id: str = "scene0000_00",
    seed: int = 0,
    labels_ply: bool = True,
    aggregation: bool = True,
    folder: str = "scans",
    corrupt: str | None = None,
) -> ScanNetScene:
    """Write one scan folder ``root/folder/scene_id`` in the ScanNet v2 release format (see module doc)."""
    room = room_geometry(seed)
    rng = np.random.default_rng(seed + 1)
    scene_dir = Path(root) / folder / scene_id
    scene_dir.mkdir(parents=True, exist_ok=True)
    count = len(room.vertices)
    tsv = dict(SCANNET_TSV_ROWS)
    local = np.arange(count) - np.searchsorted(room.vertex_part, room.vertex_part)  # index within the part
    segment = room.vertex_part * 100 + 3 * (local // 6)  # non-contiguous segment ids, as in real segs
    unlabelled_segment = 400  # the first segment of the last wall (part 4) is in no group
    groups = []
    for part, role in enumerate(ROLES):
        segments = sorted(set(segment[room.vertex_part == part].tolist()) - {unlabelled_segment})
        groups.append({"id": part, "objectId": part, "segments": segments, "label": SCANNET_CATEGORY[role],
                       "objbbox": [0.0] * 6})  # fmt: skip
    covered = segment != unlabelled_segment
    aggregation_nyu40 = np.where(covered, [tsv[SCANNET_CATEGORY[ROLES[p]]] for p in room.vertex_part], 0)
    instances = np.where(covered, room.vertex_part, -1)
    labels_nyu40 = aggregation_nyu40.copy()
    wall = np.flatnonzero(room.vertex_part == 1)
    labels_nyu40[wall[[3, 4, 12, 13]]] = 50  # stray values > 40 (ScanNet/ScanNet#86)
    tie_face = int(np.flatnonzero(room.face_part == 2)[5])
    labels_nyu40[room.faces[tie_face]] = (5, 22, 1)
    colors = rng.integers(0, 256, (count, 3), dtype=np.uint8)
    vertex = np.empty(count, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"),
                                    ("blue", "u1"), ("alpha", "u1")])  # fmt: skip
    for axis, name in enumerate("xyz"):
        vertex[name] = room.vertices[:, axis]
    vertex["red"], vertex["green"], vertex["blue"], vertex["alpha"] = *colors.T, 255
    paths = {"mesh": scene_dir / f"{scene_id}_vh_clean_2.ply"}
    _write_ply(paths["mesh"], vertex, room.faces, ["VCGLIB generated"])
    if labels_ply:
        labelled = np.empty(count, dtype=vertex.dtype.descr + [("label", "<u2")])
        for name in vertex.dtype.names:
            labelled[name] = vertex[name]
        labelled["label"] = labels_nyu40
        paths["labels"] = scene_dir / f"{scene_id}_vh_clean_2.labels.ply"
        _write_ply(paths["labels"], labelled, room.faces, ["MLIB generated"])
    if aggregation:
        paths["segs"] = scene_dir / f"{scene_id}_vh_clean_2.0.010000.segs.json"
        paths["segs"].write_text(json.dumps({"params": {"kThresh": "0.0001", "segMinVerts": "20"},
                                             "sceneId": scene_id, "segIndices": segment.tolist()}))  # fmt: skip
        paths["aggregation"] = scene_dir / f"{scene_id}.aggregation.json"
        paths["aggregation"].write_text(json.dumps({
            "sceneId": f"scannet.{scene_id}", "appId": "Aggregator.v2", "segGroups": groups,
            "segmentsFile": f"scannet.{scene_id}_vh_clean_2.0.010000.segs.json",
        }))  # fmt: skip
    if corrupt is not None:
        _truncate(paths[corrupt])
    return ScanNetScene(
        scene_dir=scene_dir, paths=paths, vertices=room.vertices.astype(np.float32), faces=room.faces,
        colors=colors, labels_nyu40=labels_nyu40, aggregation_nyu40=aggregation_nyu40,
        instances=instances, tie_face=tie_face,
    )  # fmt: skip


def write_scannet_root(
    root: str | Path,
    train: tuple[str, ...] = ("scene0191_00", "scene0191_01"),
    val: tuple[str, ...] = ("scene0568_00",),
    test: tuple[str, ...] = ("scene0707_00",),
    seed: int = 0,
) -> dict[str, ScanNetScene]:
    """A ScanNet root: the label table, labelled ``scans/`` (train + val ids) and mesh-only ``scans_test/``.

    Use ids from the official lists so ``scannet.list_items`` finds them.
    """
    root = Path(root)
    write_scannet_label_map(root / "scannetv2-labels.combined.tsv")
    scenes = {}
    for index, scene_id in enumerate(train + val):
        scenes[scene_id] = write_scannet_scene(root, scene_id, seed=seed + index)
    for index, scene_id in enumerate(test):
        scenes[scene_id] = write_scannet_scene(
            root, scene_id, seed=seed + 100 + index, labels_ply=False, aggregation=False, folder="scans_test"
        )
    return scenes


# --------------------------------------------------------------------------------------------- 2D-3D-S

STANFORD_CLASS = {"floor": "floor", "wall": "wall", "chair": "chair", "table": "table", "books": "clutter"}
"""2D-3D-S class written into the material name for each role."""
STANFORD_CLASSES = ("ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
                    "bookcase", "board", "clutter")  # fmt: skip
UNKNOWN_MATERIAL = "<UNK>_0_<UNK>_0_0"


@dataclass
class StanfordRoom:
    """Truth for one room: vertices (float64) and faces in the generator's order, class and material per face."""

    vertices: np.ndarray
    faces: np.ndarray
    face_labels: np.ndarray
    face_materials: list[str]


@dataclass
class StanfordArea:
    """What ``write_stanford_area`` wrote: the OBJ path, the materials used, the truth per room name."""

    obj_path: Path
    materials: list[str]
    rooms: dict[str, StanfordRoom] = field(default_factory=dict)


def write_stanford_area(
    root: str | Path,
    area: str = "area_1",
    rooms: tuple[tuple[str, int], ...] = (("office", 1), ("hallway", 2)),
    seed: int = 0,
    unknown: bool = True,
    corrupt: str | None = None,
) -> StanfordArea:
    """Write ``root/area/3d/semantic.obj`` (+ ``semantic.mtl``) holding ``rooms`` (see module doc)."""
    rng = np.random.default_rng(seed)
    area_number = area.split("_")[1].rstrip("ab")
    all_vertices, blocks, result_rooms = [], [], {}
    offset = 0
    for room_index, (room_type, room_number) in enumerate(rooms):
        room = room_geometry(seed + room_index)
        vertices = room.vertices + np.array([20.0 * room_index, 0.0, 0.0])
        per_class: dict[str, int] = {}
        materials = []
        for role in room.parts:
            cls = STANFORD_CLASS[role]
            per_class[cls] = per_class.get(cls, 0) + 1
            materials.append(f"{cls}_{per_class[cls]}_{room_type}_{room_number}_{area_number}")
        face_materials = [materials[p] for p in room.face_part]
        result_rooms[f"{area}/{room_type}_{room_number}"] = StanfordRoom(
            vertices=vertices, faces=room.faces,
            face_labels=np.array([STANFORD_CLASSES.index(STANFORD_CLASS[room.parts[p]]) for p in room.face_part]),
            face_materials=face_materials,
        )  # fmt: skip
        for part, material in enumerate(materials):
            part_faces = room.faces[room.face_part == part] + offset
            blocks.append((material, part_faces))
        all_vertices.append(vertices)
        offset += len(vertices)
    floor_material, floor_faces = blocks[0]
    blocks[0] = (floor_material, floor_faces[:40])
    blocks.insert(3, (floor_material, floor_faces[40:]))  # a material used in two separate blocks
    if unknown:
        patch_vertices, patch_faces = _grid(np.array([-30.0, 0.0, 0.0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 2, 1)
        blocks.append((UNKNOWN_MATERIAL, patch_faces + offset))
        all_vertices.append(patch_vertices)
    vertices = np.concatenate(all_vertices)
    order = rng.permutation(len(vertices))  # file order; position of generator vertex k is rank[k]
    rank = np.argsort(order)
    lines = ["# fixture in the 2D-3D-S semantic.obj layout", "mtllib semantic.mtl"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices[order]]
    lines += ["vt 0.000000 0.000000", "vt 1.000000 0.000000", "vt 0.000000 1.000000"]
    for block_index, (material, faces) in enumerate(blocks):
        lines.append(f"usemtl {material}")
        one_based = rank[faces] + 1
        if block_index % 2:
            lines += [f"f {a}/1 {b}/2 {c}/3" for a, b, c in one_based]
        else:
            lines += [f"f {a} {b} {c}" for a, b, c in one_based]
    text = "\n".join(lines) + "\n"
    if corrupt == "truncated":
        text = text[: text.rstrip("\n").rfind(" ")] + "\n"  # the last face line loses its third index
    elif corrupt == "garbage":
        text = text.replace("\nv ", "\nv 1.0 nan-ish ", 1)
    elif corrupt == "quad":
        text = text.replace("\nf ", "\nf 1 ", 1)
    elif corrupt is not None:
        raise ValueError(f"unknown corrupt option {corrupt!r}")
    obj_path = Path(root) / area / "3d" / "semantic.obj"
    obj_path.parent.mkdir(parents=True, exist_ok=True)
    obj_path.write_text(text)
    names = list(dict.fromkeys(material for material, _ in blocks))
    (obj_path.parent / "semantic.mtl").write_text("".join(f"newmtl {n}\nKd 0.5 0.5 0.5\n\n" for n in names))
    return StanfordArea(obj_path=obj_path, materials=names, rooms=result_rooms)


def write_stanford_root(
    root: str | Path,
    areas: tuple[str, ...] = ("area_1", "area_2", "area_3", "area_4", "area_6"),
    rooms_per_area: int = 1,
    seed: int = 0,
) -> dict[str, StanfordArea]:
    """A 2D-3D-S root: ``area_N/3d/semantic.obj`` per area and ``assets/semantic_labels.json``."""
    root = Path(root)
    room_types = ("office", "hallway", "conferenceRoom", "WC")
    written = {}
    for index, area in enumerate(areas):
        rooms = tuple((room_types[k % len(room_types)], k + 1) for k in range(rooms_per_area))
        written[area] = write_stanford_area(root, area, rooms, seed=seed + 10 * index)
    labels = [UNKNOWN_MATERIAL] + sorted({m for a in written.values() for m in a.materials} - {UNKNOWN_MATERIAL})
    (root / "assets").mkdir(parents=True, exist_ok=True)
    (root / "assets" / "semantic_labels.json").write_text(json.dumps(labels))
    return written


# --------------------------------------------------------------------------------------------- SceneNN

SCENENN_NYU40 = {"floor": 2, "wall": 1, "chair": 5, "table": 14, "books": 29}
"""nyu40 id written as ``nyu_class`` for each role (desk and box: one in both class sets, one only in 11)."""


@dataclass
class SceneNNScene:
    """What ``write_scenenn_scene`` wrote: the path and the truth per vertex in file order.

    ``tie_face`` has vertex nyu40 ids (7 table, 25 television, 1 wall) in this order.
    """

    path: Path
    vertices: np.ndarray
    faces: np.ndarray
    nyu40: np.ndarray
    instances: np.ndarray
    tie_face: int


def write_scenenn_scene(
    root: str | Path, scene_id: str = "005", seed: int = 0, corrupt: str | None = None
) -> SceneNNScene:
    """Write ``root/scene_id/scene_id.ply`` in the nyu40 SceneNN format (see module doc)."""
    room = room_geometry(seed)
    rng = np.random.default_rng(seed + 2)
    count = len(room.vertices)
    nyu40 = np.array([SCENENN_NYU40[ROLES[p]] for p in room.vertex_part])
    wall = np.flatnonzero(room.vertex_part == 3)
    nyu40[wall[:6]] = 0  # unannotated
    nyu40[wall[20:24]] = 40  # prop: in the 11-class set only
    tie_face = int(np.flatnonzero(room.face_part == 4)[7])
    nyu40[room.faces[tie_face]] = (7, 25, 1)
    instances = (8000 + 37 * room.vertex_part).astype(np.uint32)
    normals = np.tile([0.0, 0.0, 1.0], (count, 1))
    vertex = np.empty(count, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("nx", "f4"), ("ny", "f4"),
                                    ("nz", "f4"), ("label", "<u4"), ("nyu_class", "<u2"), ("red", "u1"),
                                    ("green", "u1"), ("blue", "u1")])  # fmt: skip
    for axis, name in enumerate("xyz"):
        vertex[name] = room.vertices[:, axis]
        vertex["n" + name] = normals[:, axis]
    vertex["label"], vertex["nyu_class"] = instances, nyu40
    class_colours = rng.integers(0, 256, (41, 3), dtype=np.uint8)[nyu40]
    vertex["red"], vertex["green"], vertex["blue"] = class_colours.T
    path = Path(root) / scene_id / f"{scene_id}.ply"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_ply(path, vertex, room.faces, [])
    if corrupt == "truncated":
        _truncate(path)
    elif corrupt is not None:
        raise ValueError(f"unknown corrupt option {corrupt!r}")
    return SceneNNScene(path=path, vertices=room.vertices.astype(np.float32), faces=room.faces, nyu40=nyu40,
                        instances=instances.astype(np.int64), tie_face=tie_face)  # fmt: skip


def write_scenenn_root(
    root: str | Path, train: tuple[str, ...] = ("005", "014"), test: tuple[str, ...] = ("011",), seed: int = 0
) -> dict[str, SceneNNScene]:
    """A SceneNN root with the given scene ids (use ids from the shipped lists)."""
    return {scene_id: write_scenenn_scene(root, scene_id, seed=seed + index)
            for index, scene_id in enumerate(train + test)}  # fmt: skip


def declare_rows(path: str | Path, element: str, count: int) -> None:
    """Rewrite the PLY header at ``path`` to declare ``count`` rows of ``element``; the data stays as written."""
    path = Path(path)
    data = path.read_bytes()
    end = data.index(b"end_header") + len(b"end_header")
    lines = [
        f"element {element} {count}".encode() if line.startswith(f"element {element} ".encode()) else line
        for line in data[:end].split(b"\n")
    ]
    path.write_bytes(b"\n".join(lines) + data[end:])
