"""Stanford 2D-3D-S reader: ``area_N/3d/semantic.obj`` -> one ``LabelledMesh`` per room, 13 classes.

The semantic mesh stores each face's object as its OBJ material, ``usemtl class_instance_roomType_roomNum_area``
(e.g. ``chair_3_office_1_1``; room types hold no underscore), so the material names alone give the class,
the instance and the room: ``assets/semantic_labels.json`` only encodes those same names as colours and is
not needed. Faces of ``<UNK>_0_<UNK>_0_0`` (class ``<UNK>``) form a pseudo-room that is dropped. Each room
keeps only the vertices its faces use, re-indexed in file order. A face's instance id is the index of its
material among the room's materials (sorted by name), so ``chair_1`` and ``wall_1`` stay distinct.

The OBJ files are hundreds of MB: they are parsed with numpy on the raw bytes (line kinds from the first
bytes, numbers with one ``np.fromstring`` call per kind), never with a Python loop per line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctxir.data.errors import CorruptFileError, DatasetNotFoundError
from ctxir.data.mesh import IGNORE_LABEL, LabelledMesh, clean_mesh
from ctxir.data.splits import check_split, existing_items, read_split

CLASS_NAMES: tuple[str, ...] = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa", "bookcase",
    "board", "clutter",
)  # fmt: skip
UNKNOWN_CLASS = "<UNK>"
LAYOUT = "<root>/area_N/3d/semantic.obj (Stanford 2D-3D-S release layout; areas 1-4 and 6)"

_NEWLINE, _SPACE, _TAB, _RETURN, _SLASH = (ord(c) for c in "\n \t\r/")


@dataclass
class MaterialMesh:
    """An OBJ mesh with the material of each face.

    Attributes:
        vertices: (V, 3) float64 (extra per-vertex columns such as colours are dropped).
        faces: (F, 3) int64 zero-based vertex indices.
        face_material: (F,) int64 index into ``materials``.
        materials: distinct material names, sorted.
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_material: np.ndarray
    materials: list[str]


def read_area(area_dir: str | Path) -> dict[str, LabelledMesh]:
    """Split an area's semantic mesh into rooms named ``'<area>/<roomType>_<roomNum>'`` (e.g. 'area_1/office_3').

    Meshes are not cleaned (``read_item`` cleans). Class names outside the 13 (none in the release) become
    ``clutter``, with a warning, as the S3DIS tools do.

    Raises:
        DatasetNotFoundError: ``area_dir/3d/semantic.obj`` is missing.
        CorruptFileError: the OBJ cannot be parsed, has no face, a material name does not follow the pattern, or
            no face belongs to a room (every material is ``<UNK>``).
    """
    area_dir = Path(area_dir)
    obj_path = area_dir / "3d" / "semantic.obj"
    if not obj_path.is_file():
        raise DatasetNotFoundError(obj_path, LAYOUT)
    mesh = read_material_obj(obj_path)
    if not len(mesh.faces):
        raise CorruptFileError(obj_path, "no faces (empty or truncated file)")
    material_class, material_room, rooms = _parse_materials(mesh.materials, obj_path)
    if not rooms:
        raise CorruptFileError(
            obj_path, f"no usable room: all {len(mesh.materials)} materials are {UNKNOWN_CLASS} (class or room type)"
        )
    face_room = material_room[mesh.face_material]
    order = np.argsort(face_room, kind="stable")
    bounds = np.searchsorted(face_room[order], np.arange(len(rooms) + 1))
    result = {}
    for room_index, room in enumerate(rooms):  # one pass per room (tens per area), not per face
        face_index = order[bounds[room_index] : bounds[room_index + 1]]
        used, local_faces = np.unique(mesh.faces[face_index], return_inverse=True)
        _, face_instances = np.unique(mesh.face_material[face_index], return_inverse=True)
        name = f"{area_dir.name}/{room}"
        result[name] = LabelledMesh(
            vertices=mesh.vertices[used],
            faces=local_faces.reshape(-1, 3),
            face_labels=material_class[mesh.face_material[face_index]],
            face_instances=face_instances,
            name=name,
            source=str(obj_path),
        )
    return result


def list_items(root: str | Path, split: str) -> list[str]:
    """Area names of the split ('train': area_1..area_4; 'val' and 'test': area_6) present under ``root``.

    Raises:
        DatasetNotFoundError: ``root`` is missing or holds no ``area_*/3d/semantic.obj``.
        ValueError: unknown split.
    """
    check_split(split)
    root = Path(root)
    if not root.is_dir() or not any(root.glob("area_*/3d/semantic.obj")):
        raise DatasetNotFoundError(root, LAYOUT)
    return existing_items(
        read_split("stanford", split),
        lambda area: (root / area / "3d" / "semantic.obj").is_file(),
        f"2D-3D-S {root} {split}",
    )


def read_item(root: str | Path, item: str) -> list[LabelledMesh]:
    """Read and clean every room of area ``item`` (e.g. 'area_1') of the data set at ``root``."""
    return [clean_mesh(mesh) for mesh in read_area(Path(root) / item).values()]


def read_material_obj(path: str | Path) -> MaterialMesh:
    """Parse the ``v``, ``f`` and ``usemtl`` lines of a triangle OBJ, vectorised over lines.

    Faces may be ``f a b c``, ``f a/t b/t c/t``, ``f a//n ...`` or ``f a/t/n ...`` (only ``a`` is kept). Every
    other line (comments, ``vt``, ``vn``, ``mtllib``, ``g``, ``o``, ``s``) is ignored.

    Raises:
        CorruptFileError: non-numeric values, a ``v`` line with fewer than 3 or a varying number of values,
            a face that is not a triangle, an index out of range, or faces before the first ``usemtl``.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        data += b"\n"
    buffer = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buffer == _NEWLINE)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    vertex_lines = _lines_starting(buffer, starts, ends, b"v ") | _lines_starting(buffer, starts, ends, b"v\t")
    face_lines = _lines_starting(buffer, starts, ends, b"f ") | _lines_starting(buffer, starts, ends, b"f\t")
    material_lines = np.flatnonzero(_lines_starting(buffer, starts, ends, b"usemtl"))
    vertex_values, vertex_counts = _numbers(_line_text(buffer, lengths, vertex_lines), path, "v")
    bad_lines = np.flatnonzero((vertex_counts < 3) | (vertex_counts != vertex_counts[:1]))
    if bad_lines.size:
        line = np.flatnonzero(vertex_lines)[bad_lines[0]] + 1
        raise CorruptFileError(path, f"line {line}: v line with {vertex_counts[bad_lines[0]]} values")
    vertices = vertex_values.reshape(len(vertex_counts), -1)[:, :3] if vertex_counts.size else np.zeros((0, 3))
    index_values, index_counts = _numbers(
        _line_text(buffer, lengths, face_lines), path, "f", keep_slash_prefix=True
    )
    if np.any(index_counts != 3):
        bad = int(np.flatnonzero(index_counts != 3)[0])
        raise CorruptFileError(
            path, f"line {np.flatnonzero(face_lines)[bad] + 1}: face with {index_counts[bad]} vertices, expected 3"
        )
    faces = index_values.astype(np.int64).reshape(-1, 3) - 1
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise CorruptFileError(path, f"face index outside 1..{len(vertices)} (relative indices are not supported)")
    block = np.searchsorted(material_lines, np.flatnonzero(face_lines)) - 1
    if np.any(block < 0):
        raise CorruptFileError(path, "faces before the first usemtl line")
    names = [data[starts[line] + 6 : ends[line]].decode("utf-8", "replace").strip() for line in material_lines]
    materials, block_material = np.unique(np.array(names, dtype=object), return_inverse=True)
    return MaterialMesh(
        vertices=vertices.astype(np.float64),
        faces=faces,
        face_material=block_material.reshape(-1)[block].astype(np.int64),
        materials=[str(name) for name in materials],
    )


def _parse_materials(materials: list[str], path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Class index and room index per material (``<UNK>``: class -1, room -1) and the sorted room names."""
    tokens = [name.split("_") for name in materials]
    malformed = [name for name, parts in zip(materials, tokens) if len(parts) != 5]
    if malformed:
        raise CorruptFileError(path, f"materials not named class_instance_roomType_roomNum_area: {malformed[:5]}")
    known = [parts[0] != UNKNOWN_CLASS and parts[2] != UNKNOWN_CLASS for parts in tokens]
    rooms = sorted({f"{parts[2]}_{parts[3]}" for parts, ok in zip(tokens, known) if ok})
    strays = sorted({parts[0] for parts, ok in zip(tokens, known) if ok and parts[0] not in CLASS_NAMES})
    if strays:
        warnings.warn(f"{path}: classes {strays} are not among the 13; labelled 'clutter'", stacklevel=3)
    classes = [CLASS_NAMES.index(p[0]) if p[0] in CLASS_NAMES else CLASS_NAMES.index("clutter") for p in tokens]
    material_class = np.where(known, classes, IGNORE_LABEL).astype(np.int64)
    room_of = {room: index for index, room in enumerate(rooms)}
    material_room = np.array([room_of[f"{p[2]}_{p[3]}"] if ok else -1 for p, ok in zip(tokens, known)], np.int64)
    return material_class, material_room, rooms


def _lines_starting(buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray, prefix: bytes) -> np.ndarray:
    """Mask of the lines whose first bytes are ``prefix``."""
    mask = ends - starts >= len(prefix)
    for offset, byte in enumerate(prefix):
        mask &= buffer[np.minimum(starts + offset, buffer.size - 1)] == byte
    return mask


def _line_text(buffer: np.ndarray, lengths: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """The selected lines (``lengths`` include the newline; lines tile the buffer) as one byte array, with each
    line's keyword byte blanked."""
    text = buffer[np.repeat(selected, lengths)]
    text[np.cumsum(lengths[selected]) - lengths[selected]] = _SPACE
    return text


def _numbers(text: np.ndarray, path: Path, keyword: str, keep_slash_prefix: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """All numbers of ``text`` and how many there are on each line.

    With ``keep_slash_prefix`` a token ``a/b/c`` counts as the number ``a`` only (OBJ face references).
    """
    if text.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    separator = (text == _SPACE) | (text == _TAB) | (text == _NEWLINE) | (text == _RETURN)
    slash = text == _SLASH if keep_slash_prefix else np.zeros(text.size, dtype=bool)
    separator |= slash
    token_start = np.flatnonzero(~separator[1:] & separator[:-1]) + 1
    text = np.where(slash, _SPACE, text).astype(np.uint8) if keep_slash_prefix else text
    dtype = np.int64 if keep_slash_prefix else np.float64
    try:
        values = np.fromstring(text.tobytes(), dtype=dtype, sep=" ")
    except ValueError as error:
        raise CorruptFileError(path, f"non-numeric value on a '{keyword}' line ({error})") from error
    if values.size != token_start.size:
        raise CorruptFileError(path, f"non-numeric value on a '{keyword}' line")
    keep = ~slash[token_start - 1]
    tokens_before_newline = np.searchsorted(token_start[keep], np.flatnonzero(text == _NEWLINE))
    return values[keep], np.diff(tokens_before_newline, prepend=0)
