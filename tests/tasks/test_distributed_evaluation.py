"""Under DDP, validation and test give every scene to exactly one process (the 3-process runs are in test_cli)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ctxir.data import SyntheticRoomsDataModule
from ctxir.data.datamodules import EachSceneOnceSampler


def test_each_scene_once_over_uneven_ranks() -> None:
    ranks = [EachSceneOnceSampler(list(range(7)), 3, rank) for rank in range(3)]
    assert [list(rank) for rank in ranks] == [[0, 3, 6], [1, 4], [2, 5]]
    assert [len(rank) for rank in ranks] == [3, 2, 2]


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRoomsDataModule:
    dm = SyntheticRoomsDataModule(num_train=1, num_val=2, num_test=4, batch_size=1, num_points=64, num_queries=32,
                                  num_surface=64, num_off_surface=100, num_eval=50,
                                  cache_dir=str(tmp_path_factory.mktemp("cache")))
    dm.prepare_data()
    return dm


def test_evaluation_loaders_split_scenes_once_and_training_is_left_to_lightning(
    datamodule: SyntheticRoomsDataModule,
) -> None:
    datamodule.trainer = SimpleNamespace(world_size=3, global_rank=1)  # what a DDP trainer tells its DataModule
    try:
        scenes = [batch["scene"] for batch in datamodule.test_dataloader()]
        assert scenes == [["test_0001"]]
        assert isinstance(datamodule.test_dataloader().sampler, EachSceneOnceSampler)
        assert not isinstance(datamodule.train_dataloader().sampler, EachSceneOnceSampler)
        with pytest.raises(ValueError, match="the val split has 2 scenes for 3 processes; each process needs at least"):
            datamodule.val_dataloader()
    finally:
        datamodule.trainer = None
    assert [batch["scene"] for batch in datamodule.test_dataloader()] == [[f"test_000{i}"] for i in range(4)]
