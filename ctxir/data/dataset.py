"""A torch ``Dataset`` over preprocessed scene caches: one item = one scene with freshly drawn queries."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ctxir.data.cache import read_scene_cache
from ctxir.data.encodings import encodings_path, read_encodings
from ctxir.data.keys import Key
from ctxir.data.mesh import IGNORE_LABEL

DEFAULT_RATIOS: tuple[float, ...] = (0.01, 0.49, 0.5)
"""Share of the queries drawn from each σ pool (NDF/RangeUDF), in the order of the cached sigmas."""


def query_counts(num_queries: int, ratios: Sequence[float]) -> np.ndarray:
    """``round(ratio * num_queries)`` per pool, adjusted (largest remainders) so that the counts sum exactly."""
    ratios = np.asarray(ratios, dtype=np.float64)
    if num_queries < 0 or (ratios < 0).any() or ratios.sum() <= 0:
        raise ValueError(f"need num_queries >= 0 and non-negative ratios, got {num_queries} and {ratios.tolist()}")
    exact = ratios / ratios.sum() * num_queries
    counts = np.round(exact).astype(np.int64)
    surplus = int(counts.sum() - num_queries)
    if surplus:  # take from / give to the pools whose rounding moved them furthest
        order = np.argsort(counts - exact) if surplus < 0 else np.argsort(exact - counts)
        counts[order[: abs(surplus)]] -= np.sign(surplus)
    return counts


class SceneDataset(Dataset):
    """Items from per-scene cache files (see :mod:`ctxir.data.cache`).

    Each ``__getitem__`` draws new queries: ``query_counts(num_queries, ratios)`` from the σ pools, with
    replacement, and a random subset of ``num_points`` surface points when the cache holds more. The random
    generator is seeded from torch's global generator (plus ``seed``), which PyTorch re-seeds per epoch and
    per DataLoader worker and Lightning's ``seed_everything`` makes reproducible. With ``deterministic``
    (validation and test) it is seeded from ``seed`` and the item index instead: every epoch, every DDP rank
    and every run sees the same points and queries of a scene, so metrics are comparable.

    With ``encodings_dir``, the input points come from ``<encodings_dir>/<scene>.npz`` (written by
    :class:`~ctxir.tasks.EncodingWriter`) together with their precomputed encodings, item key ``encodings``
    (N, d) float32; queries are still drawn from the scene cache.

    Item keys: ``points`` (N,3) float32, ``point_labels`` (N,) int64, ``queries`` (M,3) float32,
    ``query_udf`` (M,) float32, ``query_labels`` (M,) int64, ``query_band`` (M,) int64 (index of the σ
    pool each query was drawn from), ``scene`` str and, with ``with_eval_points``,
    ``eval_points`` (E,3) float32 and ``eval_labels`` (E,) int64. With ``drop_labels`` every label is ``-1``
    (geometry-only data such as Triad).
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        num_points: int = 10240,
        num_queries: int = 50000,
        ratios: Sequence[float] = DEFAULT_RATIOS,
        with_eval_points: bool = False,
        drop_labels: bool = False,
        seed: int = 0,
        deterministic: bool = False,
        encodings_dir: str | os.PathLike | None = None,
    ) -> None:
        self.files = [Path(path) for path in files]
        self.num_points = int(num_points)
        self.num_queries = int(num_queries)
        self.ratios = tuple(float(r) for r in ratios)
        self.counts = query_counts(self.num_queries, self.ratios)
        self.with_eval_points = with_eval_points
        self.drop_labels = drop_labels
        self.seed = int(seed)
        self.deterministic = deterministic
        self.encodings_dir = None if encodings_dir is None else Path(encodings_dir)

    def __len__(self) -> int:
        return len(self.files)

    def _rng(self, index: int) -> np.random.Generator:
        if self.deterministic:
            return np.random.default_rng([self.seed, index])
        draw = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        return np.random.default_rng([self.seed, draw])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        path = self.files[index]
        keys = ["scene_name", "surface_points", "surface_labels"]
        keys += [f"off_{kind}_{i}" for i in range(len(self.ratios)) for kind in ("points", "udf", "labels")]
        if self.with_eval_points:
            keys += ["eval_points", "eval_labels"]
        data = read_scene_cache(path, tuple(keys))
        rng = self._rng(index)
        available = len(data["surface_points"])
        if available < self.num_points:
            raise ValueError(f"{path}: holds {available} surface points, fewer than num_points={self.num_points}")
        take = rng.choice(available, self.num_points, replace=False) if available > self.num_points else slice(None)
        picks = [rng.integers(0, len(data[f"off_udf_{i}"]), count) for i, count in enumerate(self.counts)]
        item: dict[str, torch.Tensor | str] = {
            Key.POINTS: torch.from_numpy(np.ascontiguousarray(data["surface_points"][take], dtype=np.float32)),
            Key.POINT_LABELS: self._labels(data["surface_labels"][take]),
            Key.QUERIES: torch.from_numpy(
                np.concatenate([data[f"off_points_{i}"][p] for i, p in enumerate(picks)]).astype(np.float32)
            ),
            Key.QUERY_UDF: torch.from_numpy(
                np.concatenate([data[f"off_udf_{i}"][p] for i, p in enumerate(picks)]).astype(np.float32)
            ),
            Key.QUERY_LABELS: self._labels(np.concatenate([data[f"off_labels_{i}"][p] for i, p in enumerate(picks)])),
            Key.QUERY_BAND: torch.from_numpy(np.repeat(np.arange(len(self.counts), dtype=np.int64), self.counts)),
            Key.SCENE: str(data["scene_name"]),
        }
        if self.encodings_dir is not None:
            item.update(self._encodings(str(item[Key.SCENE])))
        if self.with_eval_points:
            item[Key.EVAL_POINTS] = torch.from_numpy(data["eval_points"].astype(np.float32))
            item[Key.EVAL_LABELS] = self._labels(data["eval_labels"])
        return item

    def _encodings(self, scene: str) -> dict[str, torch.Tensor]:
        assert self.encodings_dir is not None
        data = read_encodings(encodings_path(self.encodings_dir, scene))
        return {
            Key.POINTS: torch.from_numpy(data["points"].astype(np.float32)),
            Key.POINT_LABELS: self._labels(data["point_labels"]),
            Key.ENCODINGS: torch.from_numpy(data["encodings"].astype(np.float32)),
        }

    def _labels(self, labels: np.ndarray) -> torch.Tensor:
        if self.drop_labels:
            return torch.full((len(labels),), IGNORE_LABEL, dtype=torch.int64)
        return torch.from_numpy(labels.astype(np.int64))
