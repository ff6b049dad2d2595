"""ScanNet v2 reader: one raw scan folder -> a ``LabelledMesh`` in the 20 benchmark classes.

Files read from ``<root>/scans/<scene>/`` (formats in ``reference/datasets.md`` §1):
- ``<scene>_vh_clean_2.ply``: the geometry (float x,y,z; uchar red,green,blue,alpha; triangle faces).
- ``<scene>_vh_clean_2.labels.ply``: ushort vertex ``label`` = nyu40 id (the preferred label source).
- ``<scene>.aggregation.json`` + ``<scene>_vh_clean_2.0.010000.segs.json``: instances (``objectId`` of the
  segment group covering a vertex), and labels when ``labels.ply`` is absent, through
  ``scannetv2-labels.combined.tsv`` (raw_category -> nyu40id). A labelled scan missing either file is read
  without instances, with a warning: the instance-boundary label rule is then off for it.

nyu40 ids outside the 20 benchmark ids (0 = unannotated, non-benchmark classes, stray values > 40 such as
the 50s of scene0270_00) become ``IGNORE_LABEL``. A face takes the majority of its three vertices' nyu40
ids (a tie goes to the first vertex, as RangeUDF), then that id is mapped; face instances likewise.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctxir.data.errors import CorruptFileError, DatasetNotFoundError
from ctxir.data.mesh import IGNORE_LABEL, LabelledMesh, clean_mesh, mesh_from_vertex_ids
from ctxir.data.ply import read_ply
from ctxir.data.splits import check_split, existing_items, read_split

CLASS_NAMES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)  # fmt: skip
NYU40_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
"""nyu40 id of each benchmark class, in class-index order (ScanNet ``VALID_CLASS_IDS``)."""
LABEL_MAP_NAME = "scannetv2-labels.combined.tsv"
LAYOUT = (
    "<root>/scans/<scene>/<scene>_vh_clean_2.ply with <scene>_vh_clean_2.labels.ply or "
    "<scene>.aggregation.json + <scene>_vh_clean_2.0.010000.segs.json (ScanNet v2 release layout)"
)


def read_scene(
    scene_dir: str | Path, label_map_file: str | Path | None = None, require_labels: bool = True
) -> LabelledMesh:
    """Read one scan folder into a mesh with class indices, instances and colours, in file vertex order.

    Args:
        scene_dir: ``.../scans/sceneXXXX_YY``.
        label_map_file: ``scannetv2-labels.combined.tsv``; only needed when ``labels.ply`` is absent. If
            None it is looked for in the scene folder, its parent and the data-set root.
        require_labels: if False, a scan without any label file (e.g. from ``scans_test``) is returned
            with every label ``IGNORE_LABEL`` instead of raising.

    Returns:
        The mesh, not cleaned (``read_item`` cleans), with vertex_labels, vertex_instances (-1 = none),
        face_labels, face_instances and vertex_colors set.

    Raises:
        DatasetNotFoundError: the folder, the mesh, or (with ``require_labels``) every label source is missing.
        CorruptFileError: a file cannot be parsed or disagrees with the mesh's vertex count.
    """
    scene_dir = Path(scene_dir)
    name = scene_dir.name
    if not scene_dir.is_dir():
        raise DatasetNotFoundError(scene_dir, LAYOUT)
    mesh_path = scene_dir / f"{name}_vh_clean_2.ply"
    ply = read_ply(mesh_path, ("x", "y", "z", "red", "green", "blue"))
    num_vertices = len(ply.vertex)
    labels_path = scene_dir / f"{name}_vh_clean_2.labels.ply"
    aggregation_path = scene_dir / f"{name}.aggregation.json"
    segs_path = scene_dir / f"{name}_vh_clean_2.0.010000.segs.json"
    groups = None
    instances = np.full(num_vertices, IGNORE_LABEL, dtype=np.int64)
    if aggregation_path.is_file() and segs_path.is_file():
        groups = _vertex_groups(segs_path, aggregation_path, num_vertices)
        instances = np.where(groups.vertex_group >= 0, groups.object_ids[groups.vertex_group], -1)
    elif labels_path.is_file():
        _warn_no_instances(name, aggregation_path, segs_path)
    if labels_path.is_file():
        labels = read_ply(labels_path, ("label",), need_faces=False).vertex["label"]
        if len(labels) != num_vertices:
            raise CorruptFileError(labels_path, f"{len(labels)} vertices but {mesh_path.name} has {num_vertices}")
        nyu40 = labels.astype(np.int64)
    elif groups is not None:
        nyu40 = _group_nyu40(groups, _label_map_path(scene_dir, label_map_file), aggregation_path)
    elif require_labels:
        raise DatasetNotFoundError(labels_path, f"a label source for {name}: {LAYOUT}")
    else:
        nyu40 = np.zeros(num_vertices, dtype=np.int64)
    return mesh_from_vertex_ids(ply.vertex, ply.faces, nyu40, instances, NYU40_IDS, name=name,
                                source=str(mesh_path), with_colors=True)


def _warn_no_instances(scene: str, aggregation_path: Path, segs_path: Path) -> None:
    """Say that a labelled scan lacks its instance files, and what that changes."""
    missing = [path.name for path in (aggregation_path, segs_path) if not path.is_file()]
    warnings.warn(
        f"ScanNet scene {scene}: {' and '.join(missing)} missing in {segs_path.parent}, so the scene has no "
        "instances: its labels come from labels.ply alone and the instance-boundary label rule (nearest vertex "
        "where a face spans instances) is off for it",
        stacklevel=3,
    )


def list_items(root: str | Path, split: str) -> list[str]:
    """Scene ids of an official split present under ``root/scans`` (test = the official val list).

    Raises:
        DatasetNotFoundError: ``root`` or ``root/scans`` is missing or holds no scan.
        ValueError: unknown split.
    """
    check_split(split)
    scans = Path(root) / "scans"
    if not scans.is_dir() or not any(scans.glob("scene*/scene*_vh_clean_2.ply")):
        raise DatasetNotFoundError(scans, LAYOUT)
    official = read_split("scannet", "val" if split == "test" else split)
    return existing_items(
        official, lambda scene: (scans / scene / f"{scene}_vh_clean_2.ply").is_file(), f"ScanNet {scans} {split}"
    )


def read_item(
    root: str | Path, item: str, label_map_file: str | Path | None = None, require_labels: bool = True
) -> list[LabelledMesh]:
    """Read and clean scan ``item`` of the data set at ``root`` (see ``read_scene`` for the options)."""
    return [clean_mesh(read_scene(Path(root) / "scans" / item, label_map_file, require_labels))]


def read_label_map(path: str | Path) -> dict[str, int]:
    """``raw_category -> nyu40id`` from ``scannetv2-labels.combined.tsv`` (rows with an empty id are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(path, f"the ScanNet label table {LABEL_MAP_NAME}")
    try:
        with path.open(newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file, delimiter="\t"))
    except (UnicodeDecodeError, csv.Error) as error:
        raise CorruptFileError(path, f"unreadable label table ({error})") from error
    if not rows or not {"raw_category", "nyu40id"} <= set(rows[0]):
        raise CorruptFileError(path, "expected a tab-separated header with 'raw_category' and 'nyu40id'")
    try:
        return {row["raw_category"]: int(row["nyu40id"]) for row in rows if (row["nyu40id"] or "").strip()}
    except ValueError as error:
        raise CorruptFileError(path, f"non-integer nyu40id ({error})") from error


@dataclass
class _Groups:
    """Segment groups of a scan: the group covering each vertex (-1 none), and per group objectId / label."""

    vertex_group: np.ndarray
    object_ids: np.ndarray
    labels: list[str]


def _vertex_groups(segs_path: Path, aggregation_path: Path, num_vertices: int) -> _Groups:
    segs = _read_json(segs_path)
    aggregation = _read_json(aggregation_path)
    try:
        segment_of_vertex = np.asarray(segs["segIndices"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptFileError(segs_path, f"needs an integer list 'segIndices' ({error!r})") from error
    if segment_of_vertex.shape != (num_vertices,):
        raise CorruptFileError(segs_path, f"segIndices has {segment_of_vertex.size} entries, mesh has {num_vertices}")
    try:
        groups = [(int(g["objectId"]), str(g["label"]), np.asarray(g["segments"], dtype=np.int64))
                  for g in aggregation["segGroups"]]  # fmt: skip
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptFileError(
            aggregation_path, f"needs 'segGroups' with 'objectId', 'label', 'segments' ({error!r})"
        ) from error
    segment_ids, segment_index = np.unique(segment_of_vertex, return_inverse=True)
    group_of_segment = np.full(segment_ids.size, -1, dtype=np.int64)
    for group, (_, _, segments) in enumerate(groups):  # one pass per annotated object, not per vertex
        position = np.searchsorted(segment_ids, segments).clip(max=segment_ids.size - 1)
        group_of_segment[position[segment_ids[position] == segments]] = group
    object_ids = np.array([object_id for object_id, _, _ in groups], dtype=np.int64)
    return _Groups(group_of_segment[segment_index], object_ids, [label for _, label, _ in groups])


def _group_nyu40(groups: _Groups, label_map_path: Path, aggregation_path: Path) -> np.ndarray:
    """Per-vertex nyu40 id from the group labels; unannotated vertices and unknown categories get 0."""
    label_map = read_label_map(label_map_path)
    group_nyu40 = np.array([label_map.get(label, 0) for label in groups.labels] + [0], dtype=np.int64)
    return group_nyu40[groups.vertex_group]  # index -1 picks the trailing 0


def _label_map_path(scene_dir: Path, label_map_file: str | Path | None) -> Path:
    if label_map_file is not None:
        return Path(label_map_file)
    candidates = [scene_dir / LABEL_MAP_NAME, scene_dir.parent / LABEL_MAP_NAME, scene_dir.parent.parent / LABEL_MAP_NAME]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise DatasetNotFoundError(
            candidates[-1], f"{LABEL_MAP_NAME} (to label {scene_dir.name} from its aggregation: no labels.ply)"
        )
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptFileError(path, f"invalid JSON ({error})") from error
