"""collate_scenes: concatenation with sorted cloud indices, optional evaluation points."""

from __future__ import annotations

import pytest
import torch

from ctxir.data.collate import collate_scenes


def _item(n: int, m: int, scene: str, eval_points: int = 0) -> dict:
    item = {
        "points": torch.randn(n, 3), "point_labels": torch.randint(-1, 5, (n,)), "queries": torch.randn(m, 3),
        "query_udf": torch.rand(m), "query_labels": torch.randint(-1, 5, (m,)), "scene": scene,
    }  # fmt: skip
    if eval_points:
        item["eval_points"], item["eval_labels"] = torch.randn(eval_points, 3), torch.randint(0, 5, (eval_points,))
    return item


def test_collate_concatenates_with_cloud_index() -> None:
    items = [_item(3, 5, "a"), _item(4, 2, "b"), _item(1, 6, "c")]
    batch = collate_scenes(items)
    assert set(batch) == {"points", "point_labels", "point_batch", "queries", "query_udf", "query_labels",
                          "query_batch", "scene"}  # fmt: skip
    assert batch["scene"] == ["a", "b", "c"]
    assert batch["points"].shape == (8, 3) and batch["queries"].shape == (13, 3)
    assert batch["point_batch"].tolist() == [0, 0, 0, 1, 1, 1, 1, 2]
    assert batch["query_batch"].tolist() == [0] * 5 + [1] * 2 + [2] * 6
    assert batch["point_batch"].dtype == torch.int64 and batch["query_batch"].dtype == torch.int64
    for b, item in enumerate(items):
        torch.testing.assert_close(batch["points"][batch["point_batch"] == b], item["points"])
        torch.testing.assert_close(batch["query_udf"][batch["query_batch"] == b], item["query_udf"])
        torch.testing.assert_close(batch["query_labels"][batch["query_batch"] == b], item["query_labels"])


def test_collate_eval_points_when_present() -> None:
    batch = collate_scenes([_item(2, 2, "a", eval_points=3), _item(2, 2, "b", eval_points=4)])
    assert batch["eval_points"].shape == (7, 3) and batch["eval_labels"].shape == (7,)
    assert batch["eval_batch"].tolist() == [0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="empty"):
        collate_scenes([])
