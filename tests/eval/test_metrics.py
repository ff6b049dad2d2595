"""Scene metrics: brute-force equality on random sets, known answers, and the torchmetrics accumulation/sync."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ctxir.eval import ReconstructionMetrics, SemanticMetrics, reconstruction_metrics, semantic_metrics
from ctxir.eval.functional import EMPTY_DISTANCE


def brute_nearest(queries: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest distances and indices from the full distance matrix."""
    dist = np.linalg.norm(queries[:, None] - reference[None], axis=-1)
    return dist.min(axis=1), dist.argmin(axis=1)


def brute_f(acc: np.ndarray, comp: np.ndarray, t: float) -> float:
    p, r = (acc <= t).mean() if len(acc) else 0.0, (comp <= t).mean() if len(comp) else 0.0
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def brute_reconstruction(pred: np.ndarray, gt: np.ndarray, delta: float) -> dict[str, float]:
    acc, _ = brute_nearest(pred, gt)
    comp, _ = brute_nearest(gt, pred)
    return {
        "cd_l1": (acc.mean() + comp.mean()) / 2,
        "cd_l2": ((acc**2).mean() + (comp**2).mean()) / 2,
        "f1": brute_f(acc, comp, delta),
        "f1_2delta": brute_f(acc, comp, 2 * delta),
    }


def brute_semantic(pred, pred_lab, gt, gt_lab, num_classes, delta) -> dict[str, float]:
    """The documented rule, written point by point with dense matrices."""
    _, match = brute_nearest(pred, gt)
    keep = gt_lab[match] >= 0
    pred, pred_lab, matched = pred[keep], pred_lab[keep], gt_lab[match][keep]
    classes = sorted(set(gt_lab[gt_lab >= 0].tolist()))
    ious, f1s, f2s = [], [], []
    for c in classes:
        tp = np.sum((matched == c) & (pred_lab == c))
        union = np.sum((matched == c) | (pred_lab == c))
        ious.append(tp / union if union else 0.0)
        pc, gc = pred[pred_lab == c], gt[gt_lab == c]
        if len(pc) == 0:
            f1s.append(0.0)
            f2s.append(0.0)
            continue
        acc, _ = brute_nearest(pc, gc)
        comp, _ = brute_nearest(gc, pc)
        f1s.append(brute_f(acc, comp, delta))
        f2s.append(brute_f(acc, comp, 2 * delta))
    return {"miou": np.mean(ious), "mf1": np.mean(f1s), "mf1_2delta": np.mean(f2s)}


def random_scene(rng: np.random.Generator, n_pred: int, n_gt: int, num_classes: int):
    gt = rng.random((n_gt, 3)) * 0.2
    pred = gt[rng.integers(0, n_gt, n_pred)] + rng.normal(0, 0.006, (n_pred, 3))
    gt_lab = rng.integers(-1, num_classes, n_gt)
    pred_lab = rng.integers(0, num_classes, n_pred)
    return pred, pred_lab, gt, gt_lab


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reconstruction_equals_brute_force(seed: int) -> None:
    pred, _, gt, _ = random_scene(np.random.default_rng(seed), 300, 400, 3)
    got = reconstruction_metrics(pred, gt, delta=0.005)
    want = brute_reconstruction(pred, gt, 0.005)
    assert set(got) == {"cd_l1", "cd_l2", "f1", "f1_2delta"}
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-15)
    assert 0.0 < got["f1"] < got["f1_2delta"] < 1.0  # the thresholds actually discriminate here


def test_reconstruction_known_answers() -> None:
    grid = np.stack(np.meshgrid(*[np.arange(5) * 0.1] * 3, indexing="ij"), -1).reshape(-1, 3)
    same = reconstruction_metrics(grid, grid)
    assert same == {"cd_l1": 0.0, "cd_l2": 0.0, "f1": 1.0, "f1_2delta": 1.0}
    near = reconstruction_metrics(grid + [0.004, 0, 0], grid)  # every nearest pair is the shifted copy
    assert near["cd_l1"] == pytest.approx(0.004)
    assert near["cd_l2"] == pytest.approx(0.004**2)
    assert (near["f1"], near["f1_2delta"]) == (1.0, 1.0)
    far = reconstruction_metrics(torch.tensor(grid + [0, 0.007, 0]), torch.tensor(grid))
    assert far["cd_l1"] == pytest.approx(0.007)
    assert (far["f1"], far["f1_2delta"]) == (0.0, 1.0)  # 0.007 > δ = 0.005 but ≤ 2δ
    half = reconstruction_metrics(grid[:10], grid)  # precision 1, recall 10/125
    assert half["f1"] == pytest.approx(2 * (10 / 125) / (1 + 10 / 125))


def test_reconstruction_edge_cases() -> None:
    gt = np.random.default_rng(0).random((50, 3))
    empty = reconstruction_metrics(np.zeros((0, 3)), gt)
    assert empty == pytest.approx({"cd_l1": EMPTY_DISTANCE, "cd_l2": 3.0, "f1": 0.0, "f1_2delta": 0.0})
    with pytest.raises(ValueError, match="gt_points is empty"):
        reconstruction_metrics(gt, np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"pred_points must have shape \(N, 3\)"):
        reconstruction_metrics(gt[:, :2], gt)
    with pytest.raises(ValueError, match="NaN"):
        reconstruction_metrics(np.full((2, 3), np.nan), gt)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semantic_equals_brute_force(seed: int) -> None:
    pred, pred_lab, gt, gt_lab = random_scene(np.random.default_rng(seed), 300, 400, 4)
    got = semantic_metrics(pred, pred_lab, gt, gt_lab, num_classes=5, delta=0.005)  # class 4 absent everywhere
    want = brute_semantic(pred, pred_lab, gt, gt_lab, 5, 0.005)
    assert set(got) == {"miou", "mf1", "mf1_2delta"}
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12)
    assert 0.0 < got["mf1"] < got["mf1_2delta"] < 1.0


def test_semantic_known_confusion() -> None:
    gt = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], dtype=float)
    gt_lab = np.array([0, 0, 1, 1])
    pred_lab = np.array([0, 1, 1, 1])
    got = semantic_metrics(gt, pred_lab, gt, gt_lab, num_classes=2)
    # confusion (gt, pred): (0,0)=1, (0,1)=1, (1,1)=2 → IoU0 = 1/2, IoU1 = 2/3
    assert got["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # class 0: P = 1, R = 1/2 → 2/3; class 1: P = 2/3, R = 1 → 4/5
    assert got["mf1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert got["mf1_2delta"] == pytest.approx(got["mf1"])

    # An unlabelled GT point and a prediction lying on it change nothing: that prediction is dropped.
    gt_u = np.vstack([gt, [[10, 0, 0]]])
    got_u = semantic_metrics(np.vstack([gt, [[10, 0, 0]]]), np.append(pred_lab, 0), gt_u, np.append(gt_lab, -1), 2)
    assert got_u == pytest.approx(got)

    # A GT class that is never predicted scores 0 in both metrics and counts in the mean.
    never = semantic_metrics(gt, np.zeros(4, dtype=int), gt, gt_lab, num_classes=3)
    assert never["miou"] == pytest.approx((2 / 4 + 0) / 2)  # IoU0 = 2 / (4 predicted + 2 GT − 2)
    assert never["mf1"] == pytest.approx((2 / 3 + 0) / 2)  # class 0: P = 2/4, R = 1; class 2 absent, not counted


def test_semantic_validation() -> None:
    pts = np.zeros((3, 3))
    with pytest.raises(ValueError, match="pred_labels must lie in"):
        semantic_metrics(pts, np.array([0, 1, 2]), pts, np.array([0, 0, 0]), num_classes=2)
    with pytest.raises(ValueError, match="gt_labels must be 3 integers"):
        semantic_metrics(pts, np.array([0, 1, 1]), pts, np.array([0.0, 0.0, 0.0]), num_classes=2)
    with pytest.raises(ValueError, match="no labelled point"):
        semantic_metrics(pts, np.array([0, 1, 1]), pts, np.array([-1, -1, -1]), num_classes=2)
    empty = semantic_metrics(np.zeros((0, 3)), np.zeros(0, dtype=int), pts, np.array([0, 1, 1]), num_classes=2)
    assert empty == {"miou": 0.0, "mf1": 0.0, "mf1_2delta": 0.0}


def scenes(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [random_scene(rng, 200 + 10 * i, 250, 3) for i in range(count)]


def test_metric_classes_average_scenes() -> None:
    rec, sem = ReconstructionMetrics(delta=0.005), SemanticMetrics(num_classes=3, delta=0.005)
    data = scenes(3)
    for pred, pred_lab, gt, gt_lab in data:
        rec.update(torch.tensor(pred), torch.tensor(gt))
        sem.update(pred, torch.tensor(pred_lab), gt, gt_lab)
    per_rec = [reconstruction_metrics(p, g) for p, _, g, _ in data]
    per_sem = [semantic_metrics(p, pl, g, gl, 3) for p, pl, g, gl in data]
    got_rec, got_sem = rec.compute(), sem.compute()
    for key in ("cd_l1", "cd_l2", "f1", "f1_2delta"):
        assert got_rec[key].item() == pytest.approx(np.mean([m[key] for m in per_rec]), rel=1e-12)
    for key in ("miou", "mf1", "mf1_2delta"):
        assert got_sem[key].item() == pytest.approx(np.mean([m[key] for m in per_sem]), rel=1e-12)
    assert int(rec.num_scenes) == 3
    rec.reset()
    assert int(rec.num_scenes) == 0 and float(rec.sum_cd_l1) == 0.0


def test_metric_states_sum_across_ranks() -> None:
    """Two 'ranks' with different scene counts: merged/synced result = mean over all scenes."""
    data = scenes(5, seed=1)
    rank0, rank1, single = ReconstructionMetrics(), ReconstructionMetrics(), ReconstructionMetrics()
    for i, (pred, _, gt, _) in enumerate(data):
        (rank0 if i < 2 else rank1).update(pred, gt)
        single.update(pred, gt)
    want = single.compute()
    merged = copy.deepcopy(rank0)  # before any compute(): merge_state does not clear torchmetrics' cache
    assert all(fx is not None and fx.__name__ == "dim_zero_sum" for fx in rank0._reductions.values())

    # The real sync path with a fake all-gather that returns (this rank's state, the other rank's state).
    others = iter([getattr(rank1, name) for name in rank0._reductions])

    def fake_all_gather(tensor: torch.Tensor, group: object = None) -> list[torch.Tensor]:
        return [tensor, next(others)]

    local = rank0.compute()
    with rank0.sync_context(dist_sync_fn=fake_all_gather, distributed_available=lambda: True):
        synced = ReconstructionMetrics.compute(rank0)  # unwrapped compute on the synced states
        assert int(rank0.num_scenes) == 5
    for key in want:
        assert synced[key].item() == pytest.approx(want[key].item(), rel=1e-12)
    assert int(rank0.num_scenes) == 2  # unsynced again after the context
    assert rank0.compute()["cd_l1"].item() == pytest.approx(local["cd_l1"].item())

    merged.merge_state(rank1)
    for key in want:
        assert merged.compute()[key].item() == pytest.approx(want[key].item(), rel=1e-12)
