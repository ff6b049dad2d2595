"""Batch scenes by concatenating their clouds with a per-point cloud index (the Point Transformer layout)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ctxir.data.keys import BATCH_GROUPS, Key


def collate_scenes(items: Sequence[dict]) -> dict:
    """Concatenate items of :class:`ctxir.data.dataset.SceneDataset` into one batch.

    Every tensor of a group of :data:`~ctxir.data.keys.BATCH_GROUPS` that the items carry is concatenated and
    the group's cloud index (``point_batch``, ``query_batch``, ``eval_batch``: 0..B-1, sorted) is added;
    ``scene`` becomes the list of scene names. Keys: :class:`~ctxir.data.keys.Key`.
    """
    if not items:
        raise ValueError("cannot collate an empty list of scenes")
    batch: dict = {Key.SCENE: [item[Key.SCENE] for item in items]}
    for index_key, keys in BATCH_GROUPS.items():
        if keys[0] not in items[0]:
            continue
        for key in keys:
            if key in items[0]:
                batch[key] = torch.cat([item[key] for item in items])
        sizes = torch.tensor([len(item[keys[0]]) for item in items])
        batch[index_key] = torch.repeat_interleave(torch.arange(len(items), dtype=torch.int64), sizes)
    return batch
