"""Lightning DataModules: synthetic rooms, ScanNet v2, 2D-3D-S, SceneNN and their geometry-only union Triad.

All share one pipeline: ``prepare_data()`` reads the raw units of every split (through the reader modules'
``list_items``/``read_item``, or the room generator) and preprocesses them into per-scene caches under
``cache_dir/<data set>``; ``setup(stage)`` maps the split's units to their cached scenes and builds
:class:`~ctxir.data.dataset.SceneDataset` s; loaders batch with :func:`~ctxir.data.collate.collate_scenes`.
Constructor arguments are plain values so LightningCLI YAML configs can set them.

Splits per stage: ``fit`` → train + val, ``validate`` → val, ``test``/``predict`` → test (ScanNet: the
official val list; 2D-3D-S: Area 6; SceneNN: the 20 test scenes). Test items carry ``eval_points``.

Options are checked when the DataModule is built (an error names the option), before any preprocessing. Under
DDP, validation and test give every scene to exactly one process (:class:`EachSceneOnceSampler`), so their
metrics equal those of one process whatever the split's size.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ctxir.data import cache
from ctxir.data.collate import collate_scenes
from ctxir.data.dataset import DEFAULT_RATIOS, SceneDataset
from ctxir.data.mesh import LabelledMesh
from ctxir.data.preprocess import DEFAULT_SIGMAS, preprocess_scenes, preprocessing_params
from ctxir.data.splits import SPLITS
from ctxir.data.synthetic import SYNTHETIC_CLASSES, read_synthetic_room

_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}


def check_count(owner: str, option: str, value: object, minimum: int) -> None:
    """Refuse ``value`` for ``option`` unless it is an integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{owner}: {option} must be an integer >= {minimum}, got {value!r}")


def check_fractions(owner: str, sigmas: tuple[float, ...], ratios: tuple[float, ...]) -> None:
    """Refuse σ pools that are not positive, or query ratios that are negative, all zero or not one per σ."""
    if not sigmas or not all(np.isfinite(s) and s > 0 for s in sigmas):
        raise ValueError(f"{owner}: sigmas must be positive noise levels, got {sigmas}")
    if len(sigmas) != len(ratios):
        raise ValueError(f"{owner}: need one ratio per sigma, got sigmas {sigmas} and ratios {ratios}")
    if not all(np.isfinite(r) and r >= 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"{owner}: ratios must be >= 0 with a positive sum, got {ratios}")


class EachSceneOnceSampler(DistributedSampler):
    """Rank ``r`` of ``W`` takes scenes ``r, r + W, r + 2W, ...``: every scene once over all ranks.

    Lightning's default for validation and test (``DistributedSampler``) repeats scenes to give every rank as many,
    so those scenes count twice in the metrics. Here ranks may hold one scene more or less than each other; each
    needs at least one (checked by the DataModule), since the metrics synchronise at the end of the epoch.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


@dataclass(frozen=True)
class SceneSource:
    """One cached data set: how to list its raw units per split and read a unit into meshes."""

    name: str
    list_units: Callable[[str], list[str]]
    read_unit: Callable[[str], list[LabelledMesh]]
    settings: dict[str, Any]


class SceneDataModule(L.LightningDataModule):
    """Shared pipeline of every data set; subclasses only declare their :class:`SceneSource` s and classes."""

    num_classes: int = 0
    class_names: tuple[str, ...] = ()

    def __init__(
        self,
        cache_dir: str = ".cache/ctxir",
        batch_size: int = 4,
        num_workers: int = 0,
        num_points: int = 10240,
        num_queries: int = 50000,
        num_surface: int = 10240,
        num_off_surface: int = 100000,
        num_eval: int = 100000,
        sigmas: tuple[float, ...] = DEFAULT_SIGMAS,
        ratios: tuple[float, ...] = DEFAULT_RATIOS,
        skip_invalid: bool = True,
        preprocess_workers: int = 0,
        seed: int = 0,
        encodings_dir: str | None = None,
        predict_splits: tuple[str, ...] = ("test",),
        verify_cache: bool = True,
    ) -> None:
        """Args:
        cache_dir: root of the preprocessed caches (one sub-folder per data set).
        batch_size: scenes per batch.
        num_workers: DataLoader worker processes.
        num_points: surface input points per scene (a random subset of the cached ``num_surface`` each draw).
        num_queries: query points per scene, redrawn at every access.
        num_surface: surface samples cached per scene (at least ``num_points`` are cached).
        num_off_surface: cached off-surface samples per σ.
        num_eval: cached ground-truth evaluation points per scene.
        sigmas, ratios: off-surface noise levels and the share of queries drawn from each.
        skip_invalid: skip (with a warning, and a summary) raw units that are corrupt, empty or miss a file
            instead of failing.
        preprocess_workers: processes used by ``prepare_data`` (0 = in the main process).
        seed: preprocessing seed, also mixed into the per-item query sampling.
        encodings_dir: folder of precomputed encodings (written by :class:`~ctxir.tasks.EncodingWriter`); when
            set, items take their input points and E_g from there (tuning without the encoder).
        predict_splits: splits iterated by ``predict`` (one dataloader each), e.g. all three to write the
            encodings of every scene.
        verify_cache: ``prepare_data`` reads every cached file in full (CRC checked) and rebuilds a damaged one,
            instead of failing mid-training; set False to save that read on a very large, trusted cache.
        """
        super().__init__()
        owner = type(self).__name__
        counts = {"batch_size": (batch_size, 1), "num_workers": (num_workers, 0), "num_points": (num_points, 1),
                  "num_queries": (num_queries, 1), "num_surface": (num_surface, 1),
                  "num_off_surface": (num_off_surface, 1), "num_eval": (num_eval, 1),
                  "preprocess_workers": (preprocess_workers, 0), "seed": (seed, 0)}
        for option, (value, minimum) in counts.items():
            check_count(owner, option, value, minimum)
        check_fractions(owner, tuple(sigmas), tuple(ratios))
        if not str(cache_dir):
            raise ValueError(f"{owner}: cache_dir must name a folder, got {cache_dir!r}")
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.num_points = num_points
        self.num_queries = num_queries
        self.num_surface = max(num_surface, num_points)
        self.num_off_surface = num_off_surface
        self.num_eval = num_eval
        self.sigmas = tuple(sigmas)
        self.ratios = tuple(ratios)
        self.skip_invalid = skip_invalid
        self.preprocess_workers = preprocess_workers
        self.seed = seed
        self.encodings_dir = encodings_dir
        unknown = set(predict_splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"{owner}: predict_splits must be among {SPLITS}, got {sorted(unknown)}")
        self.predict_splits = tuple(predict_splits)
        self.verify_cache = verify_cache
        self.datasets: dict[str, SceneDataset] = {}

    drop_labels: bool = False
    """True for geometry-only data sets: every label of their items is -1."""

    def sources(self) -> list[SceneSource]:
        """The cached data sets this module reads (declared by each subclass)."""
        raise NotImplementedError

    # -- pipeline ------------------------------------------------------------------------------------
    def _source_dir(self, source: SceneSource) -> Path:
        return Path(self.cache_dir) / source.name

    def _params(self, source: SceneSource) -> dict[str, Any]:
        return preprocessing_params(
            self.num_surface, self.num_off_surface, self.sigmas, self.num_eval, self.seed,
            {"dataset": source.name, **source.settings},
        )

    def prepare_data(self) -> None:
        """Preprocess the raw units of every split into the cache (already cached scenes are reused)."""
        for source in self.sources():
            units = list(dict.fromkeys(unit for split in SPLITS for unit in source.list_units(split)))
            params = self._params(source)
            preprocess_scenes(
                source.read_unit, units, self._source_dir(source),
                num_surface=params["num_surface"], num_off_surface=params["num_off_surface"],
                sigmas=self.sigmas, num_eval=params["num_eval"], seed=params["seed"], source=params["source"],
                num_workers=self.preprocess_workers, skip_invalid=self.skip_invalid, verify=self.verify_cache,
            )

    def split_files(self, split: str) -> list[Path]:
        """Cache files of the scenes of ``split``; units that are not prepared (skipped as invalid) are left out."""
        files: list[Path] = []
        missing: list[str] = []
        units = {source.name: source.list_units(split) for source in self.sources()}
        if not any(units.values()):
            return files  # an empty split (e.g. num_val=0) gives an empty dataset
        for source in self.sources():
            params, folder = self._params(source), self._source_dir(source)
            for unit in units[source.name]:
                scenes = cache.read_manifest(cache.manifest_path(folder, unit, params), params)
                if scenes is None:
                    missing.append(f"{source.name}:{unit}")
                else:
                    files += [cache.scene_cache_path(folder, scene, params) for scene in scenes]
        if not files:
            raise RuntimeError(
                f"no preprocessed scenes for split {split!r} under {self.cache_dir} with the current settings; "
                "run prepare_data() first"
            )
        if missing:
            warnings.warn(
                f"split {split!r}: {len(missing)} units are not in the cache (skipped as invalid?): "
                + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""),
                stacklevel=2,
            )
        return files

    def make_dataset(self, split: str, with_eval_points: bool | None = None) -> SceneDataset:
        """The dataset of one split (test split items carry evaluation points unless told otherwise)."""
        return SceneDataset(
            self.split_files(split),
            num_points=self.num_points,
            num_queries=self.num_queries,
            ratios=self.ratios,
            with_eval_points=(split == "test") if with_eval_points is None else with_eval_points,
            drop_labels=self.drop_labels,
            seed=self.seed,
            deterministic=split != "train",
            encodings_dir=self.encodings_dir,
        )

    def setup(self, stage: str | None = None) -> None:
        splits = self.predict_splits if stage == "predict" else _STAGE_SPLITS.get(stage or "", SPLITS)
        for split in splits:
            if split not in self.datasets:
                self.datasets[split] = self.make_dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.datasets[split] = self.make_dataset(split)
        dataset = self.datasets[split]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=self._evaluation_sampler(split, dataset) if split in ("val", "test") else None,
            num_workers=self.num_workers,
            collate_fn=collate_scenes,
            persistent_workers=self.num_workers > 0,
        )

    def _evaluation_sampler(self, split: str, dataset: SceneDataset) -> EachSceneOnceSampler | None:
        """Under DDP, the sampler that gives each scene of ``split`` to exactly one rank (``None`` otherwise)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size < 2:
            return None
        if len(dataset) < trainer.world_size:
            raise ValueError(
                f"{type(self).__name__}: the {split} split has {len(dataset)} scenes for {trainer.world_size} "
                "processes; each process needs at least one (evaluate on fewer devices)"
            )
        return EachSceneOnceSampler(dataset, trainer.world_size, trainer.global_rank)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per split of ``predict_splits`` (a single loader when there is one)."""
        loaders = [self._loader(split, shuffle=False) for split in self.predict_splits]
        return loaders[0] if len(loaders) == 1 else loaders


# -- synthetic rooms ---------------------------------------------------------------------------------
class SyntheticRoomsDataModule(SceneDataModule):
    """Procedural labelled rooms (:mod:`ctxir.data.synthetic`), generated and cached by ``prepare_data``.

    A second run with the same settings reuses the cached rooms. For fast CPU training use e.g.
    ``num_points=2048, num_queries=4096, num_train=16``.
    """

    num_classes = len(SYNTHETIC_CLASSES)
    class_names = SYNTHETIC_CLASSES

    def __init__(
        self, num_train: int = 64, num_val: int = 8, num_test: int = 8, generator_seed: int = 0,
        cell_size: float = 0.25, **kwargs: Any,
    ) -> None:
        """Args:
        num_train: rooms in the train split.
        num_val: rooms in the val split.
        num_test: rooms in the test split.
        generator_seed: seed of :func:`~ctxir.data.synthetic.generate_room` (room ``i`` of a split is fixed).
        cell_size: mesh resolution of the generated rooms (m).
        **kwargs: the pipeline settings of :class:`SceneDataModule`.
        """
        super().__init__(**kwargs)
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        for split, count in self.counts.items():
            check_count(type(self).__name__, f"num_{split}", count, 0)
        check_count(type(self).__name__, "generator_seed", generator_seed, 0)
        if not cell_size > 0:
            raise ValueError(f"{type(self).__name__}: cell_size must be positive (metres), got {cell_size!r}")
        self.generator_seed = generator_seed
        self.cell_size = cell_size

    def sources(self) -> list[SceneSource]:
        return [
            SceneSource(
                name="synthetic",
                list_units=lambda split: [f"{split}_{i:04d}" for i in range(self.counts[split])],
                read_unit=partial(read_synthetic_room, self.generator_seed, self.cell_size),
                settings={"generator_seed": self.generator_seed, "cell_size": self.cell_size},
            )
        ]


# -- real data sets ----------------------------------------------------------------------------------
def _reader(module: str) -> Any:
    """The reader module ``ctxir.data.<module>`` (imported on use: it is only needed for that data set)."""
    return importlib.import_module(f"ctxir.data.{module}")


def _real_source(module: str, root: str, folder: str, **options: Any) -> SceneSource:
    reader = _reader(module)
    return SceneSource(
        name=folder,
        list_units=partial(reader.list_items, root),
        read_unit=partial(reader.read_item, root, **options),
        settings=dict(options),
    )


class _RealDataModule(SceneDataModule):
    """A real data set read through ``ctxir.data.<reader>`` from ``root``."""

    reader: str = ""

    def __init__(self, root: str, **kwargs: Any) -> None:
        """Args:
        root: the data set's root folder (layout: see the reader module).
        **kwargs: the pipeline settings of :class:`SceneDataModule`.
        """
        super().__init__(**kwargs)
        self.root = root
        names = self._class_names()
        self.class_names = tuple(names)
        self.num_classes = len(names)

    def _class_names(self) -> tuple[str, ...]:
        return tuple(_reader(self.reader).CLASS_NAMES)

    def sources(self) -> list[SceneSource]:
        return [_real_source(self.reader, self.root, self.reader)]


class ScanNetDataModule(_RealDataModule):
    """ScanNet v2 (20 benchmark classes); official train/val lists, test = val."""

    reader = "scannet"


class Stanford2D3DSDataModule(_RealDataModule):
    """2D-3D-S (13 classes), one scene per room; Areas 1-4 train, Area 6 val/test."""

    reader = "stanford"


class SceneNNDataModule(_RealDataModule):
    """SceneNN (nyu40 version); the test split is the 20-scene list (val = test)."""

    reader = "scenenn"

    def __init__(self, root: str, classes: str = "scannet20", **kwargs: Any) -> None:
        """Args:
        root: the data set's root folder (layout: see :mod:`ctxir.data.scenenn`).
        classes: the reader's class set: ``"scannet20"`` (the paper's) or ``"rangeudf11"``.
        **kwargs: the pipeline settings of :class:`SceneDataModule`.
        """
        self.classes = classes
        super().__init__(root, **kwargs)

    def _class_names(self) -> tuple[str, ...]:
        return tuple(_reader("scenenn").class_names(self.classes))

    def sources(self) -> list[SceneSource]:
        return [_real_source("scenenn", self.root, f"scenenn-{self.classes}", classes=self.classes)]


class TriadDataModule(SceneDataModule):
    """Geometry-only union of ScanNet, 2D-3D-S and SceneNN (labels all -1, ``num_classes = 0``).

    Train = union of the train splits, val = union of the val splits, test = union of the test splits. Each
    data set is cached in the same folder as its own DataModule uses, so the caches are shared. A root left
    as ``None`` leaves that data set out (at least one is needed).
    """

    num_classes = 0
    class_names: tuple[str, ...] = ()
    drop_labels = True

    def __init__(
        self, scannet_root: str | None = None, stanford_root: str | None = None, scenenn_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Args:
        scannet_root: ScanNet's root folder, or ``None`` to leave it out.
        stanford_root: 2D-3D-S's root folder, or ``None``.
        scenenn_root: SceneNN's root folder, or ``None``.
        **kwargs: the pipeline settings of :class:`SceneDataModule`.
        """
        super().__init__(**kwargs)
        self.roots = {"scannet": scannet_root, "stanford": stanford_root, "scenenn": scenenn_root}
        if not any(self.roots.values()):
            raise ValueError("TriadDataModule needs at least one of scannet_root, stanford_root, scenenn_root")

    def sources(self) -> list[SceneSource]:
        folders = {"scannet": "scannet", "stanford": "stanford", "scenenn": "scenenn-scannet20"}
        options = {"scenenn": {"classes": "scannet20"}}
        return [
            _real_source(name, root, folders[name], **options.get(name, {}))
            for name, root in self.roots.items()
            if root is not None
        ]
