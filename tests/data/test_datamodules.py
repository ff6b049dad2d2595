"""DataModules: item/batch layout, per-access query draws with exact pool counts, splits, caching, real data."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

import ctxir.data.synthetic as synthetic
from ctxir.data import (
    ScanNetDataModule,
    SceneNNDataModule,
    Stanford2D3DSDataModule,
    SyntheticRoomsDataModule,
    TriadDataModule,
)
from ctxir.data.cache import read_scene_cache
from ctxir.data.collate import collate_scenes
from ctxir.data.dataset import query_counts
from data_fixtures import write_scannet_root, write_scannet_scene, write_scenenn_root, write_stanford_root

SIZES = {"num_points": 256, "num_surface": 512, "num_queries": 1000, "num_off_surface": 2000, "num_eval": 300}
REAL_SIZES = {"num_points": 100, "num_surface": 150, "num_queries": 200, "num_off_surface": 300, "num_eval": 120}


@pytest.fixture(scope="module")
def synthetic_dm(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRoomsDataModule:
    dm = SyntheticRoomsDataModule(
        num_train=3, num_val=1, num_test=1, cache_dir=str(tmp_path_factory.mktemp("cache")), batch_size=2, **SIZES
    )
    dm.prepare_data()
    return dm


def test_query_counts_sum_exactly() -> None:
    assert query_counts(50000, (0.01, 0.49, 0.5)).tolist() == [500, 24500, 25000]
    assert query_counts(4096, (0.01, 0.49, 0.5)).tolist() == [41, 2007, 2048]
    for m in (0, 1, 2, 3, 7, 999, 1001, 12345):
        counts = query_counts(m, (0.01, 0.49, 0.5))
        assert counts.sum() == m and (np.abs(counts - np.array([0.01, 0.49, 0.5]) * m) < 1).all()
    assert query_counts(10, (1, 1, 1)).tolist() in ([3, 3, 4], [3, 4, 3], [4, 3, 3])
    with pytest.raises(ValueError):
        query_counts(10, (-1, 1, 1))


def _rows(array: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(array, dtype=np.float32)}


def test_items_layout_and_pool_membership(synthetic_dm: SyntheticRoomsDataModule) -> None:
    synthetic_dm.setup("fit")
    dataset = synthetic_dm.datasets["train"]
    item = dataset[1]
    expected = {
        "points": ((256, 3), torch.float32), "point_labels": ((256,), torch.int64),
        "queries": ((1000, 3), torch.float32), "query_udf": ((1000,), torch.float32),
        "query_labels": ((1000,), torch.int64), "query_band": ((1000,), torch.int64),
    }  # fmt: skip
    assert {k: (tuple(v.shape), v.dtype) for k, v in item.items() if k != "scene"} == expected
    assert item["scene"] == "train_0001"
    cached = read_scene_cache(dataset.files[1])
    # surface points: a random subset without repeats of the cached 512, with their labels
    surface = {row.tobytes(): label for row, label in zip(cached["surface_points"], cached["surface_labels"])}
    assert len(_rows(item["points"].numpy())) == 256
    assert all(surface[row.tobytes()] == label for row, label in zip(item["points"].numpy(), item["point_labels"]))
    # queries: 10 / 490 / 500 from the three pools in order, udf and label of the drawn sample
    start = 0
    for i, count in enumerate((10, 490, 500)):
        pool = {p.tobytes(): (u, l) for p, u, l in zip(cached[f"off_points_{i}"], cached[f"off_udf_{i}"],
                                                        cached[f"off_labels_{i}"])}  # fmt: skip
        for row, udf, label in zip(item["queries"][start : start + count].numpy(),
                                   item["query_udf"][start : start + count], item["query_labels"][start : start + count]):  # fmt: skip
            assert pool[row.tobytes()] == (udf.item(), label.item())
        assert (item["query_band"][start : start + count] == i).all()  # the pool each query came from
        start += count
    assert item["query_labels"].min() >= 0 and item["query_labels"].max() < synthetic_dm.num_classes


def test_queries_redrawn_per_access_and_reproducible(synthetic_dm: SyntheticRoomsDataModule) -> None:
    synthetic_dm.setup("fit")
    dataset = synthetic_dm.datasets["train"]
    L.seed_everything(7, verbose=False)
    first, second = dataset[0], dataset[0]
    assert not torch.equal(first["queries"], second["queries"])
    assert not torch.equal(first["points"], second["points"])
    L.seed_everything(7, verbose=False)
    torch.testing.assert_close(dataset[0]["queries"], first["queries"])

    def epoch_queries(loader) -> torch.Tensor:
        return torch.cat([batch["queries"] for batch in loader])

    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_scenes)
    L.seed_everything(3, verbose=False)
    epoch_1, epoch_2 = epoch_queries(loader), epoch_queries(loader)
    assert not torch.equal(epoch_1, epoch_2)  # new draws every epoch, also inside worker processes
    L.seed_everything(3, verbose=False)
    torch.testing.assert_close(epoch_queries(loader), epoch_1)


def test_batches_and_splits(synthetic_dm: SyntheticRoomsDataModule) -> None:
    assert synthetic_dm.num_classes == len(synthetic.SYNTHETIC_CLASSES) >= 12
    assert synthetic_dm.class_names == synthetic.SYNTHETIC_CLASSES
    synthetic_dm.setup("fit")
    batches = list(synthetic_dm.train_dataloader())
    assert sorted(s for b in batches for s in b["scene"]) == ["train_0000", "train_0001", "train_0002"]
    batch = batches[0]
    assert batch["points"].shape == (512, 3) and batch["queries"].shape == (2000, 3)
    assert batch["point_batch"].tolist() == [0] * 256 + [1] * 256 and "eval_points" not in batch
    assert [b["scene"] for b in synthetic_dm.val_dataloader()] == [["val_0000"]]
    synthetic_dm.setup("test")
    (test_batch,) = list(synthetic_dm.test_dataloader())
    assert test_batch["scene"] == ["test_0000"]
    assert test_batch["eval_points"].shape == (300, 3) and test_batch["eval_labels"].dtype == torch.int64
    assert test_batch["eval_batch"].tolist() == [0] * 300


def test_cached_rooms_reused_and_rebuilt_on_changed_settings(synthetic_dm, monkeypatch) -> None:
    def no_generation(*args, **kwargs):
        raise AssertionError("rooms should come from the cache")

    monkeypatch.setattr(synthetic, "generate_room", no_generation)
    again = SyntheticRoomsDataModule(num_train=3, num_val=1, num_test=1, cache_dir=synthetic_dm.cache_dir,
                                     batch_size=2, **SIZES)  # fmt: skip
    again.prepare_data()
    again.setup("fit")
    assert len(again.datasets["train"]) == 3
    changed = SyntheticRoomsDataModule(num_train=1, num_val=1, num_test=1, generator_seed=5,
                                       cache_dir=synthetic_dm.cache_dir + "_other", **SIZES)  # fmt: skip
    with pytest.raises(AssertionError, match="from the cache"):
        changed.prepare_data()
    with pytest.raises(RuntimeError, match="prepare_data"):
        changed.setup("fit")
    empty = SyntheticRoomsDataModule(num_train=3, num_val=0, num_test=0, cache_dir=synthetic_dm.cache_dir, **SIZES)
    empty.setup("fit")
    assert len(empty.datasets["train"]) == 3 and len(empty.datasets["val"]) == 0


# -- real data sets on the readers' raw-format fixtures -----------------------------------------------
def _check_batch(batch: dict, num_classes: int, scenes: int, labelled: bool = True) -> None:
    assert len(batch["scene"]) == scenes
    assert batch["points"].shape == (scenes * 100, 3) and batch["queries"].shape == (scenes * 200, 3)
    assert batch["point_batch"].max() == scenes - 1 and batch["query_udf"].min() >= 0
    assert batch["points"].abs().max() <= 0.5 + 1e-6
    labels = torch.cat([batch["point_labels"], batch["query_labels"]])
    assert labels.min() >= -1 and labels.max() < max(num_classes, 1)
    assert (labels >= 0).any() == labelled


@pytest.fixture(scope="module")
def raw_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("raw")
    write_scannet_root(root / "scannet")
    write_stanford_root(root / "stanford", areas=("area_1", "area_6"), rooms_per_area=2)
    write_scenenn_root(root / "scenenn")
    return {"scannet": root / "scannet", "stanford": root / "stanford", "scenenn": root / "scenenn",
            "cache": root / "cache"}  # fmt: skip


@pytest.mark.filterwarnings("ignore:.*items are missing")
def test_real_datamodules_end_to_end(raw_roots: dict[str, Path]) -> None:
    cache = str(raw_roots["cache"])
    cases = [
        (ScanNetDataModule(str(raw_roots["scannet"]), cache_dir=cache, batch_size=2, **REAL_SIZES), 20, 2, "scene0568_00"),
        (Stanford2D3DSDataModule(str(raw_roots["stanford"]), cache_dir=cache, batch_size=2, **REAL_SIZES), 13, 2, "area_6/"),
        (SceneNNDataModule(str(raw_roots["scenenn"]), cache_dir=cache, batch_size=2, **REAL_SIZES), 20, 2, "011"),
    ]
    for dm, num_classes, train_scenes, test_scene in cases:
        dm.prepare_data()
        assert dm.num_classes == num_classes == len(dm.class_names)
        dm.setup("fit")
        (batch,) = list(dm.train_dataloader())
        _check_batch(batch, num_classes, train_scenes)
        dm.setup("test")
        test_batches = list(dm.test_dataloader())
        scenes = [s for b in test_batches for s in b["scene"]]
        assert scenes and all(s.startswith(test_scene) for s in scenes)
        assert all(b["eval_points"].shape == (120 * len(b["scene"]), 3) for b in test_batches)
    eleven = SceneNNDataModule(str(raw_roots["scenenn"]), classes="rangeudf11", cache_dir=cache, **REAL_SIZES)
    assert eleven.num_classes == 11
    eleven.prepare_data()
    assert (raw_roots["cache"] / "scenenn-rangeudf11").is_dir()

    triad = TriadDataModule(str(raw_roots["scannet"]), str(raw_roots["stanford"]), str(raw_roots["scenenn"]),
                            cache_dir=cache, batch_size=16, **REAL_SIZES)  # fmt: skip
    assert triad.num_classes == 0 and triad.class_names == ()
    triad.prepare_data()
    triad.setup("fit")
    (batch,) = list(triad.train_dataloader())
    _check_batch(batch, 0, 2 + 2 + 2, labelled=False)
    (val,) = list(triad.val_dataloader())
    assert sorted(val["scene"]) == sorted(["scene0568_00", "011", *[s for s in val["scene"] if "area_6" in s]])
    assert sum("area_6" in s for s in val["scene"]) == 2


@pytest.mark.filterwarnings("ignore:.*items are missing")
def test_real_datamodule_skips_corrupt_scene(tmp_path: Path) -> None:
    write_scannet_root(tmp_path / "scannet")
    write_scannet_scene(tmp_path / "scannet", "scene0191_02", seed=9, corrupt="mesh")
    dm = ScanNetDataModule(str(tmp_path / "scannet"), cache_dir=str(tmp_path / "cache"), **REAL_SIZES)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dm.prepare_data()
        dm.setup("fit")
    messages = [str(w.message) for w in record]
    assert any("scene0191_02" in m and "skipping" in m for m in messages)
    assert any("skipped 1 of" in m for m in messages)
    assert sorted(Path(f).name.split("-")[0] for f in dm.datasets["train"].files) == ["scene0191_00", "scene0191_01"]
    strict = ScanNetDataModule(str(tmp_path / "scannet"), cache_dir=str(tmp_path / "cache2"), skip_invalid=False, **REAL_SIZES)
    with pytest.raises(ValueError, match="scene0191_02"):
        strict.prepare_data()
