"""Per-scene reconstruction and semantic metrics on point sets (SPEC §4), as plain functions.

Distances are Euclidean, nearest neighbours come from scipy's cKDTree (``workers=-1``); values are raw (the
paper prints CD-L1 ×10² and CD-L2 ×10⁴; scale only when printing).

Reconstruction (ConvONet/RangeUDF definitions): accuracy = pred → GT nearest distances, completeness =
GT → pred; CD-L1 = ½(mean acc + mean comp); CD-L2 = ½(mean acc² + mean comp²); precision(t) = share of pred
with acc ≤ t, recall(t) = share of GT with comp ≤ t, F(t) = 2PR/(P + R) (0 when P + R = 0). An empty
prediction follows ConvONet: every distance is √3 (the diagonal of the normalised unit cube), F = 0.

Semantics (labels in [0, C); GT label −1 = unlabelled):

* Unlabelled GT is excluded as follows. Each predicted point is matched to its nearest GT point among *all*
  GT points; predicted points whose nearest GT point is unlabelled are dropped from both mIoU and mF1 (they
  lie on surface the annotation does not cover). GT points labelled −1 belong to no class set, so they count
  in no class's recall.
* Classes averaged over: those present among the labelled GT points of the scene (SPEC: "mean over classes
  present in the GT"), for mIoU and mF1 alike. A GT class that is never predicted scores 0 in both.
* mIoU: confusion matrix of (label of nearest GT point, predicted label) over the kept predicted points;
  IoU_c = TP / (TP + FP + FN), 0 when the class has no matched point at all.
* mF1-δ (and -2δ): for each class c, F1 at the threshold between the kept predicted points labelled c and the
  GT points labelled c (precision and recall with ≤).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

#: Distance given to every point when a prediction is empty (diagonal of the unit cube, as ConvONet).
EMPTY_DISTANCE = float(np.sqrt(3.0))
#: Keys of ``reconstruction_metrics`` and ``semantic_metrics``, in reporting order.
RECONSTRUCTION_KEYS = ("cd_l1", "cd_l2", "f1", "f1_2delta")
SEMANTIC_KEYS = ("miou", "mf1", "mf1_2delta")


def as_points(points: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """(N, 3) float64 numpy copy of a point array or tensor; ValueError naming ``name`` otherwise."""
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return array


def as_labels(labels: np.ndarray | torch.Tensor, count: int, low: int, num_classes: int, name: str) -> np.ndarray:
    """(N,) int64 labels in [low, num_classes); ValueError naming ``name`` otherwise."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be {count} integers (one per point), got {array.dtype} {array.shape}")
    if count and (array.min() < low or array.max() >= num_classes):
        raise ValueError(f"{name} must lie in [{low}, {num_classes}), got [{array.min()}, {array.max()}]")
    return array.astype(np.int64)


def nearest(queries: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each query point to its nearest reference point, and that point's index."""
    return cKDTree(reference).query(queries, k=1, workers=-1)


def f_score(accuracy: np.ndarray, completeness: np.ndarray, threshold: float) -> float:
    """F(t) = 2PR/(P + R) with precision = share of ``accuracy`` ≤ t, recall = share of ``completeness`` ≤ t."""
    precision = float(np.mean(accuracy <= threshold)) if len(accuracy) else 0.0
    recall = float(np.mean(completeness <= threshold)) if len(completeness) else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def reconstruction_metrics(
    pred_points: np.ndarray | torch.Tensor, gt_points: np.ndarray | torch.Tensor, delta: float = 0.005
) -> dict[str, float]:
    """CD-L1, CD-L2, F1@δ and F1@2δ of one scene (raw values): keys ``cd_l1, cd_l2, f1, f1_2delta``."""
    pred, gt = as_points(pred_points, "pred_points"), as_points(gt_points, "gt_points")
    if len(gt) == 0:
        raise ValueError("gt_points is empty: the metrics need a ground-truth surface")
    if len(pred) == 0:
        return {"cd_l1": EMPTY_DISTANCE, "cd_l2": EMPTY_DISTANCE**2, "f1": 0.0, "f1_2delta": 0.0}
    accuracy, _ = nearest(pred, gt)
    completeness, _ = nearest(gt, pred)
    return {
        "cd_l1": float(0.5 * (accuracy.mean() + completeness.mean())),
        "cd_l2": float(0.5 * (np.square(accuracy).mean() + np.square(completeness).mean())),
        "f1": f_score(accuracy, completeness, delta),
        "f1_2delta": f_score(accuracy, completeness, 2 * delta),
    }


def semantic_metrics(
    pred_points: np.ndarray | torch.Tensor,
    pred_labels: np.ndarray | torch.Tensor,
    gt_points: np.ndarray | torch.Tensor,
    gt_labels: np.ndarray | torch.Tensor,
    num_classes: int,
    delta: float = 0.005,
) -> dict[str, float]:
    """mIoU, mF1@δ and mF1@2δ of one scene (see the module doc): keys ``miou, mf1, mf1_2delta``."""
    pred, gt = as_points(pred_points, "pred_points"), as_points(gt_points, "gt_points")
    pred_lab = as_labels(pred_labels, len(pred), 0, num_classes, "pred_labels")
    gt_lab = as_labels(gt_labels, len(gt), -1, num_classes, "gt_labels")
    classes = np.unique(gt_lab[gt_lab >= 0])
    if len(classes) == 0:
        raise ValueError("gt_labels has no labelled point (all -1): semantic metrics are undefined")
    if len(pred) == 0:
        return {"miou": 0.0, "mf1": 0.0, "mf1_2delta": 0.0}
    _, match = nearest(pred, gt)
    matched = gt_lab[match]
    keep = matched >= 0
    pred, pred_lab, matched = pred[keep], pred_lab[keep], matched[keep]

    confusion = np.bincount(matched * num_classes + pred_lab, minlength=num_classes**2)
    confusion = confusion.reshape(num_classes, num_classes)
    true_pos = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_pos
    iou = np.divide(true_pos, union, out=np.zeros(num_classes), where=union > 0)

    f1 = np.zeros((len(classes), 2))
    for row, c in enumerate(classes):  # one KD-tree pair per class (≤ C iterations), not per point
        pred_c, gt_c = pred[pred_lab == c], gt[gt_lab == c]
        if len(pred_c) == 0:
            continue
        accuracy, _ = nearest(pred_c, gt_c)
        completeness, _ = nearest(gt_c, pred_c)
        f1[row] = f_score(accuracy, completeness, delta), f_score(accuracy, completeness, 2 * delta)
    return {"miou": float(iou[classes].mean()), "mf1": float(f1[:, 0].mean()), "mf1_2delta": float(f1[:, 1].mean())}
