"""torchmetrics ``Metric`` classes for the paper's scene metrics, averaged over scenes and synced under DDP.

Each ``update`` call scores one scene with ``ctxir.eval.functional`` and adds the values to per-key sums;
``compute`` returns the sums divided by the number of scenes. All states are scalar sums with
``dist_reduce_fx="sum"``, so under DDP every rank's scenes are pooled exactly (mean over all scenes of all
ranks, whatever their split). ``compute`` returns a dict of scalar tensors, for ``LightningModule.log_dict``.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from ctxir.eval.functional import RECONSTRUCTION_KEYS, SEMANTIC_KEYS, reconstruction_metrics, semantic_metrics

PointsLike = np.ndarray | torch.Tensor


class _SceneMean(Metric):
    """Mean over scenes of named per-scene values; one ``sum_<key>`` state per key plus ``num_scenes``."""

    keys: tuple[str, ...] = ()
    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        for key in self.keys:
            self.add_state(f"sum_{key}", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_scenes", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add_scene(self, values: dict[str, float]) -> None:
        for key in self.keys:
            setattr(self, f"sum_{key}", getattr(self, f"sum_{key}") + values[key])
        self.num_scenes += 1

    def compute(self) -> dict[str, torch.Tensor]:
        """Mean of each key over the scenes seen (NaN before any update, with torchmetrics' warning)."""
        return {key: getattr(self, f"sum_{key}") / self.num_scenes for key in self.keys}


class ReconstructionMetrics(_SceneMean):
    """Scene-mean CD-L1, CD-L2, F1@δ, F1@2δ (keys ``cd_l1, cd_l2, f1, f1_2delta``; raw, unscaled values)."""

    keys = RECONSTRUCTION_KEYS
    higher_is_better = None  # CD lower, F1 higher

    def __init__(self, delta: float = 0.005, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.delta = delta

    def update(self, pred_points: PointsLike, gt_points: PointsLike) -> None:
        """Score one scene: predicted surface points (N, 3) against GT surface points (M, 3)."""
        self._add_scene(reconstruction_metrics(pred_points, gt_points, self.delta))


class SemanticMetrics(_SceneMean):
    """Scene-mean mIoU, mF1@δ, mF1@2δ (keys ``miou, mf1, mf1_2delta``; see ``ctxir.eval.functional``)."""

    keys = SEMANTIC_KEYS
    higher_is_better = True

    def __init__(self, num_classes: int, delta: float = 0.005, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.delta = delta

    def update(
        self, pred_points: PointsLike, pred_labels: PointsLike, gt_points: PointsLike, gt_labels: PointsLike
    ) -> None:
        """Score one scene: labelled predicted points against labelled GT points (GT label −1 = unlabelled)."""
        self._add_scene(semantic_metrics(pred_points, pred_labels, gt_points, gt_labels, self.num_classes, self.delta))


class UDFError(Metric):
    """Mean absolute error of predicted distances, overall and per σ band, both sides clamped at ``clamp``.

    The queries of the NDF recipe come from σ pools (0.08, 0.02, 0.003): the overall mean is dominated by
    the far pools, while the near pool is what surface extraction needs, so the error is also kept per
    band. States are per-band sums and counts (``dist_reduce_fx="sum"``): exact under DDP.
    ``compute`` returns ``{"all": ..., 0: ..., 1: ..., ...}`` (band index → mean; NaN for an empty band).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, num_bands: int, clamp: float = 0.1, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if num_bands < 1:
            raise ValueError(f"num_bands must be positive, got {num_bands}")
        self.num_bands, self.clamp = num_bands, clamp
        self.add_state("error_sum", torch.zeros(num_bands, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(num_bands, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, band: torch.Tensor) -> None:
        """``pred``/``target`` (M,) distances, ``band`` (M,) pool index in ``[0, num_bands)``."""
        if band.numel() and (int(band.min()) < 0 or int(band.max()) >= self.num_bands):
            raise ValueError(f"band indices must be in [0, {self.num_bands}), got [{int(band.min())}, {int(band.max())}]")
        error = (pred.clamp(max=self.clamp) - target.clamp(max=self.clamp)).abs().double()
        self.error_sum += torch.zeros_like(self.error_sum).index_add_(0, band, error)
        self.count += torch.bincount(band, minlength=self.num_bands)

    def compute(self) -> dict[str | int, torch.Tensor]:
        per_band = self.error_sum / self.count
        return {"all": self.error_sum.sum() / self.count.sum(), **{i: per_band[i] for i in range(self.num_bands)}}
