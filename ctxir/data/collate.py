"""Batch scenes by concatenating their clouds with a per-point cloud index (the Point Transformer layout)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

_GROUPS = {  # batch-index key -> the per-item tensors it indexes
    "point_batch": ("points", "point_labels", "encodings"),
    "query_batch": ("queries", "query_udf", "query_labels"),
    "eval_batch": ("eval_points", "eval_labels"),
}


def collate_scenes(items: Sequence[dict]) -> dict:
    """Concatenate items of :class:`ctxir.data.dataset.SceneDataset` into one batch.

    Returns ``points`` (ΣN,3), ``point_labels`` (ΣN,), ``point_batch`` (ΣN,) int64 (cloud index 0..B-1,
    sorted), ``queries`` (ΣM,3), ``query_udf`` (ΣM,), ``query_labels`` (ΣM,), ``query_batch`` (ΣM,),
    ``scene`` list[str] and, when the items carry them, ``encodings`` (ΣN, d) and ``eval_points``,
    ``eval_labels``, ``eval_batch``.
    """
    if not items:
        raise ValueError("cannot collate an empty list of scenes")
    batch: dict = {"scene": [item["scene"] for item in items]}
    for index_key, keys in _GROUPS.items():
        if keys[0] not in items[0]:
            continue
        for key in keys:
            if key in items[0]:
                batch[key] = torch.cat([item[key] for item in items])
        sizes = torch.tensor([len(item[keys[0]]) for item in items])
        batch[index_key] = torch.repeat_interleave(torch.arange(len(items), dtype=torch.int64), sizes)
    return batch
