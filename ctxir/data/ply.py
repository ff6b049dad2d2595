"""Reading binary/ASCII PLY meshes with every vertex property kept (ScanNet ``label``, SceneNN ``nyu_class``).

``plyfile`` is used because open3d drops custom properties and trimesh merges vertices unless told not to.
Triangle faces are memory-mapped as a fixed-length list, which is far faster than plyfile's per-row list
parser on million-face scans; any face that is not a triangle makes the file corrupt for our purposes.
The element counts of the header must match the data exactly: plyfile reads the declared rows and ignores
whatever follows, so a header that declares too few faces would otherwise lose the rest without a word.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from plyfile import PlyData, PlyParseError

from ctxir.data.errors import CorruptFileError, DatasetNotFoundError

FACE_LIST_NAMES = ("vertex_indices", "vertex_index")
"""Names used for the face index list: ScanNet/SceneNN write the first, some tools the second."""


@dataclass
class PlyMesh:
    """Raw content of a PLY mesh file.

    Attributes:
        vertex: (V,) structured array with one field per vertex property, in file order.
        faces: (F, 3) int64 vertex indices (empty (0, 3) when the file has no face element).
    """

    vertex: np.ndarray
    faces: np.ndarray


def read_ply(path: str | Path, vertex_properties: Sequence[str] = ("x", "y", "z"), need_faces: bool = True) -> PlyMesh:
    """Read a PLY file, checking that the vertex properties the caller needs are there.

    Args:
        path: the ``.ply`` file.
        vertex_properties: property names that must exist on the ``vertex`` element.
        need_faces: whether a triangle ``face`` element is required.

    Raises:
        DatasetNotFoundError: the file does not exist.
        CorruptFileError: unparsable, truncated, missing a required property, non-triangle faces or
            face indices out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(path, "a PLY mesh file at this path")
    known = {name: 3 for name in FACE_LIST_NAMES}
    try:
        with path.open("rb") as stream:
            ply = PlyData.read(stream, known_list_len={"face": known})
            _check_nothing_follows(ply, stream, path)
    except (PlyParseError, ValueError, EOFError, OSError, UnicodeDecodeError) as error:
        if isinstance(error, CorruptFileError):
            raise
        raise CorruptFileError(path, f"cannot parse PLY ({error})") from error
    elements = {element.name: element for element in ply.elements}
    if "vertex" not in elements:
        raise CorruptFileError(path, "no 'vertex' element")
    vertex = elements["vertex"].data
    missing = [name for name in vertex_properties if name not in vertex.dtype.names]
    if missing:
        raise CorruptFileError(path, f"vertex element lacks {missing} (has {list(vertex.dtype.names)})")
    faces = np.zeros((0, 3), dtype=np.int64)
    if "face" in elements:
        face = elements["face"].data
        name = next((n for n in FACE_LIST_NAMES if n in (face.dtype.names or ())), None)
        if name is None:
            raise CorruptFileError(path, f"face element has none of the lists {FACE_LIST_NAMES}")
        faces = _triangles(face[name], path)
    elif need_faces:
        raise CorruptFileError(path, "no 'face' element")
    if need_faces and len(faces) == 0:
        raise CorruptFileError(path, "declares 0 faces: an empty mesh")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertex)):
        raise CorruptFileError(path, f"face indices outside [0, {len(vertex)})")
    return PlyMesh(vertex=np.array(vertex), faces=faces)


def _check_nothing_follows(ply: PlyData, stream: BinaryIO, path: Path) -> None:
    """Refuse data after the elements the header declares (a binary ``stream`` is where plyfile stopped reading;
    plyfile closes the stream of an ASCII file, which is read again to count its lines)."""
    declared = ", ".join(f"{element.count} {element.name}" for element in ply.elements)
    if ply.text:
        body = path.read_bytes().split(b"end_header", 1)[-1]
        extra = sum(1 for line in body.splitlines() if line.strip()) - sum(e.count for e in ply.elements)
        unit = "lines"
    else:
        extra = os.fstat(stream.fileno()).st_size - stream.tell()
        unit = "bytes"
    if extra > 0:
        raise CorruptFileError(
            path, f"{extra} {unit} of data follow the elements its header declares ({declared}): the header's "
            "counts do not match the data"
        )


def _triangles(index_lists: np.ndarray, path: Path) -> np.ndarray:
    """(F, 3) int64 from plyfile's face lists: a fixed-shape array (memory-mapped) or one array per face
    (ASCII files), checking every face has three vertices."""
    if index_lists.dtype != object:
        return np.array(index_lists, dtype=np.int64).reshape(-1, 3)  # a copy: nothing keeps the file mapped
    sizes = np.fromiter(map(len, index_lists), dtype=np.int64, count=len(index_lists))
    if np.any(sizes != 3):
        row = int(np.flatnonzero(sizes != 3)[0])
        raise CorruptFileError(path, f"face {row} has {sizes[row]} vertices; only triangle meshes are supported")
    return np.stack(index_lists).astype(np.int64).reshape(-1, 3)
