"""SceneNN reader for the nyu40-labelled 76-scene release (Pointwise / RangeUDF): ``<id>/<id>.ply``.

Vertex properties: float x,y,z,nx,ny,nz; uint ``label`` (instance id); ushort ``nyu_class`` (nyu40 id,
0 = unannotated); uchar red,green,blue. The colours are *class* colours, not RGB (they would leak the
labels into the input), so they are not returned. Two class sets:
- ``"scannet20"`` (default, the paper's choice): the ScanNet 20 benchmark classes.
- ``"rangeudf11"``: RangeUDF's nyu40 ids [1,2,3,4,5,6,7,14,25,29,40].
Every other nyu40 id, 0 included, becomes ``IGNORE_LABEL``. Faces take the majority of their vertices'
nyu40 ids (tie -> first vertex) and of their instance ids, as for ScanNet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctxir.data import scannet
from ctxir.data.errors import DatasetNotFoundError
from ctxir.data.mesh import LabelledMesh, clean_mesh, mesh_from_vertex_ids
from ctxir.data.ply import read_ply
from ctxir.data.splits import check_split, existing_items, read_split

CLASS_SETS: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    "scannet20": (scannet.NYU40_IDS, scannet.CLASS_NAMES),
    "rangeudf11": (
        (1, 2, 3, 4, 5, 6, 7, 14, 25, 29, 40),
        ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "desk", "television", "box", "prop"),
    ),
}
"""Class set name -> (nyu40 id of each class, class names), in class-index order."""
CLASS_NAMES: tuple[str, ...] = CLASS_SETS["scannet20"][1]
"""Names of the default class set."""
LAYOUT = "<root>/<id>/<id>.ply, optionally under <root>/scenenn_dec24_data/ (nyu40 SceneNN release)"


def class_names(classes: str = "scannet20") -> tuple[str, ...]:
    """Names of a class set (``"scannet20"`` or ``"rangeudf11"``)."""
    return CLASS_SETS[_check_classes(classes)][1]


def read_scene(ply_path: str | Path, classes: str = "scannet20") -> LabelledMesh:
    """Read one scene PLY into a mesh with class indices and instance ids, in file vertex order (not cleaned).

    Raises:
        DatasetNotFoundError: the file is missing.
        CorruptFileError: unparsable or truncated PLY, or a required property missing.
        ValueError: unknown class set.
    """
    nyu40_ids, _ = CLASS_SETS[_check_classes(classes)]
    ply = read_ply(ply_path, ("x", "y", "z", "label", "nyu_class"))
    vertex = ply.vertex
    nyu40 = vertex["nyu_class"].astype(np.int64)
    instances = vertex["label"].astype(np.int64)
    return mesh_from_vertex_ids(vertex, ply.faces, nyu40, instances, nyu40_ids, name=Path(ply_path).stem,
                                source=str(ply_path))


def list_items(root: str | Path, split: str) -> list[str]:
    """Scene ids of the split (56 train / 20 test; 'val' = the test list) present under ``root``.

    Raises:
        DatasetNotFoundError: ``root`` is missing or holds no ``<id>/<id>.ply``.
        ValueError: unknown split.
    """
    check_split(split)
    scenes = _scenes_dir(Path(root))
    return existing_items(
        read_split("scenenn", "test" if split == "val" else split),
        lambda scene: (scenes / scene / f"{scene}.ply").is_file(),
        f"SceneNN {scenes} {split}",
    )


def read_item(root: str | Path, item: str, classes: str = "scannet20") -> list[LabelledMesh]:
    """Read and clean scene ``item`` (e.g. '005') of the data set at ``root``."""
    scenes = _scenes_dir(Path(root))
    return [clean_mesh(read_scene(scenes / item / f"{item}.ply", classes))]


def _scenes_dir(root: Path) -> Path:
    """The folder holding the ``<id>/`` scene folders: ``root`` or ``root/scenenn_dec24_data``."""
    for candidate in (root / "scenenn_dec24_data", root):
        if candidate.is_dir() and any(p.stem == p.parent.name for p in candidate.glob("*/*.ply")):
            return candidate
    raise DatasetNotFoundError(root, LAYOUT)


def _check_classes(classes: str) -> str:
    if classes not in CLASS_SETS:
        raise ValueError(f"unknown SceneNN class set {classes!r}; choose one of {sorted(CLASS_SETS)}")
    return classes
