"""Reading binary/ASCII PLY meshes with every vertex property kept (ScanNet ``label``, SceneNN ``nyu_class``).

``plyfile`` is used because open3d drops custom properties and trimesh merges vertices unless told not to.
Triangle faces are memory-mapped as a fixed-length list, which is far faster than plyfile's per-row list
parser on million-face scans; any face that is not a triangle makes the file corrupt for our purposes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
        ply = PlyData.read(str(path), known_list_len={"face": known})
    except (PlyParseError, ValueError, EOFError, OSError, UnicodeDecodeError) as error:
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
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertex)):
        raise CorruptFileError(path, f"face indices outside [0, {len(vertex)})")
    return PlyMesh(vertex=np.array(vertex), faces=faces)


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
