"""Scene data: labelled meshes, readers for the real data sets, preprocessing, synthetic rooms, DataModules.

The DataModules, datasets and preprocessing functions are exported lazily (PEP 562), so importing a small
piece such as ``ctxir.data.mesh`` (e.g. in a preprocessing worker process) does not pull in Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

from ctxir.data.mesh import IGNORE_LABEL, LabelledMesh

_LAZY = {
    "SceneDataModule": "ctxir.data.datamodules",
    "SyntheticRoomsDataModule": "ctxir.data.datamodules",
    "ScanNetDataModule": "ctxir.data.datamodules",
    "SceneNNDataModule": "ctxir.data.datamodules",
    "Stanford2D3DSDataModule": "ctxir.data.datamodules",
    "TriadDataModule": "ctxir.data.datamodules",
    "SceneDataset": "ctxir.data.dataset",
    "query_counts": "ctxir.data.dataset",
    "collate_scenes": "ctxir.data.collate",
    "sample_scene": "ctxir.data.preprocess",
    "preprocess_scenes": "ctxir.data.preprocess",
    "SYNTHETIC_CLASSES": "ctxir.data.synthetic",
    "generate_room": "ctxir.data.synthetic",
}

__all__ = ["IGNORE_LABEL", "LabelledMesh", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ctxir.data' has no attribute {name!r}")
