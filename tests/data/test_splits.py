"""Shipped split lists and the missing-item filter."""

import warnings

import pytest

from ctxir.data.splits import existing_items, read_split


@pytest.mark.parametrize(
    ("dataset", "split", "count", "first"),
    [
        ("scannet", "train", 1201, "scene0191_00"),
        ("scannet", "val", 312, "scene0568_00"),
        ("scannet", "test", 100, "scene0707_00"),
        ("scenenn", "train", 56, "005"),
        ("scenenn", "test", 20, "011"),
        ("stanford", "train", 4, "area_1"),
        ("stanford", "val", 1, "area_6"),
        ("stanford", "test", 1, "area_6"),
    ],
)
def test_read_split_counts_and_order(dataset: str, split: str, count: int, first: str) -> None:
    items = read_split(dataset, split)
    assert len(items) == count == len(set(items))
    assert items[0] == first


def test_splits_are_disjoint() -> None:
    assert not set(read_split("scannet", "train")) & set(read_split("scannet", "val"))
    assert not set(read_split("scenenn", "train")) & set(read_split("scenenn", "test"))
    assert "area_5" not in read_split("stanford", "train") + read_split("stanford", "test")
    assert read_split("stanford", "train") == ["area_1", "area_2", "area_3", "area_4"]


def test_read_split_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="shipped split lists"):
        read_split("s3dis", "train")
    with pytest.raises(ValueError, match=r"no 'val' split list for 'scenenn'"):
        read_split("scenenn", "val")


def test_existing_items_keeps_order_and_warns_once_with_the_count() -> None:
    present = {"c", "a"}
    with pytest.warns(UserWarning, match=r"root X: 2 of 4 items are missing and skipped \(b, d\)") as record:
        assert existing_items(["a", "b", "c", "d"], present.__contains__, "root X") == ["a", "c"]
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert existing_items(["a", "c"], present.__contains__, "root X") == ["a", "c"]
