"""The published train/val/test lists shipped with the package (``ctxir/data/splits/<dataset>/*.txt``).

Files, one item per line:
- ``scannet``: the official ScanNet v2 lists ``scannetv2_{train,val,test}.txt`` (1201 / 312 / 100 scans;
  the official test scans have no labels, so evaluation uses the val list: see ``ctxir.data.scannet``).
- ``scenenn``: the Pointwise/RangeUDF 56 / 20 scene ids ``{train,test}.txt``.
- ``stanford``: 2D-3D-S areas ``{train,val,test}.txt``: areas 1-4, area 6, area 6 (area 5 is excluded).

``read_split`` returns a file's lines verbatim; the protocol choices (ScanNet test = val, SceneNN val = test)
live in each reader's ``list_items``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from importlib import resources

_FILES: dict[str, dict[str, str]] = {
    "scannet": {split: f"scannetv2_{split}.txt" for split in ("train", "val", "test")},
    "scenenn": {"train": "train.txt", "test": "test.txt"},
    "stanford": {split: f"{split}.txt" for split in ("train", "val", "test")},
}


def read_split(dataset: str, split: str) -> list[str]:
    """Items (scene ids or area names) of a shipped split list, in file order.

    Raises:
        ValueError: unknown data set or split, naming the ones that exist.
    """
    if dataset not in _FILES:
        raise ValueError(f"unknown data set {dataset!r}; shipped split lists: {sorted(_FILES)}")
    if split not in _FILES[dataset]:
        raise ValueError(f"no {split!r} split list for {dataset!r}; shipped: {sorted(_FILES[dataset])}")
    text = resources.files("ctxir.data").joinpath("splits", dataset, _FILES[dataset][split]).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The splits every DataModule and reader knows."""


def check_split(split: str) -> str:
    """``split`` itself, or ``ValueError`` unless it is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
    return split


def existing_items(items: list[str], is_present: Callable[[str], bool], where: str) -> list[str]:
    """The items of a split that are present on disk, in split order; one warning says how many are not.

    Args:
        items: the split's items.
        is_present: whether an item's files exist under the data-set root.
        where: the data-set root and split, used in the warning.
    """
    present = [item for item in items if is_present(item)]
    missing = len(items) - len(present)
    if missing:
        found = set(present)
        examples = ", ".join(item for item in items if item not in found)
        warnings.warn(
            f"{where}: {missing} of {len(items)} items are missing and skipped ({_shorten(examples)})",
            stacklevel=3,
        )
    return present


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
