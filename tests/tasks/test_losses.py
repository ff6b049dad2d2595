"""Known answers (values and gradients) of the losses: clamped L1 in both forms, the surface term, Kendall et al.'s
uncertainty weighting and the segmentation loss."""

from __future__ import annotations

import math

import pytest
import torch

from ctxir.tasks.losses import ReconstructionLoss, UncertaintyWeighting, clamped_l1, segmentation_loss

PRED = [0.05, 0.2, 0.15, -0.02, 0.3, 0.04]
TARGET = [0.03, 0.05, 0.2, 0.0, 0.12, 0.5]
# per point, clamp 0.1: (0) both below; (1) predicted above the clamp, true below; (2) and (4) both above;
# (3) predicted below zero; (5) true above the clamp, predicted below it


def value_and_grad(form: str, weight: torch.Tensor | None = None) -> tuple[float, list[float]]:
    pred = torch.tensor(PRED, dtype=torch.float64, requires_grad=True)
    loss = clamped_l1(pred, torch.tensor(TARGET, dtype=torch.float64), 2, 0.1, form, weight)
    loss.backward()
    return float(loss.detach()), pred.grad.tolist()


def test_clamped_l1_keeps_its_gradient_above_the_clamp() -> None:
    value, grad = value_and_grad("gradient")
    assert value == pytest.approx((0.02 + 0.15 + 0 + 0.02 + 0 + 0.06) / 2)
    assert grad == pytest.approx([0.5, 0.5, 0.0, -0.5, 0.0, -0.5])  # point 1 is pulled back below the clamp


def test_clamped_l1_flat_is_ndfs_formula() -> None:
    value, grad = value_and_grad("flat")
    assert value == pytest.approx((0.02 + 0.05 + 0 + 0.02 + 0 + 0.06) / 2)
    assert grad == pytest.approx([0.5, 0.0, 0.0, -0.5, 0.0, -0.5])  # no gradient where f̂ > c


def test_clamped_l1_weights_and_batch_division() -> None:
    weight = torch.tensor([1, 1, 1, 1, 1, 0.1], dtype=torch.float64)
    value, grad = value_and_grad("gradient", weight)
    assert value == pytest.approx((0.02 + 0.15 + 0.02 + 0.006) / 2)
    assert grad[5] == pytest.approx(-0.05)
    one = torch.tensor([0.3])
    assert float(clamped_l1(one, torch.tensor([0.0]), 0)) == pytest.approx(0.3)  # no cloud: not a division by 0
    with pytest.raises(ValueError, match="above_clamp"):
        clamped_l1(one, one, 1, above_clamp="steep")  # type: ignore[arg-type]


def test_reconstruction_loss_adds_the_weighted_surface_term() -> None:
    pred = torch.tensor(PRED, dtype=torch.float64)
    target = torch.tensor(TARGET, dtype=torch.float64)
    surface = torch.tensor([0.01, -0.03, 0.2], dtype=torch.float64, requires_grad=True)
    losses = ReconstructionLoss(0.1, "gradient", surface_weight=0.1)(pred, target, 2, surface)
    assert float(losses["udf_loss"].detach()) == pytest.approx(0.125)
    assert float(losses["surface_loss"].detach()) == pytest.approx((0.01 + 0.03 + 0.2) / 2)  # the clamp keeps 0.2's slope
    assert float(losses["reconstruction"].detach()) == pytest.approx(0.125 + 0.1 * 0.12)
    losses["reconstruction"].backward()
    assert surface.grad.tolist() == pytest.approx([0.05, -0.05, 0.05])
    plain = ReconstructionLoss(0.1)(pred, target, 2, surface)
    assert set(plain) == {"udf_loss", "reconstruction"} and float(plain["reconstruction"].detach()) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="clamp"):
        ReconstructionLoss(0.0)
    with pytest.raises(ValueError, match="surface_weight"):
        ReconstructionLoss(surface_weight=-1.0)


def test_uncertainty_weighting_value_and_gradients() -> None:
    weighting = UncertaintyWeighting(2)
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([0.5, -1.0]))
    first, second = torch.tensor(2.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)
    total = weighting(first, second)
    assert float(total.detach()) == pytest.approx(math.exp(-0.5) * 2 + 0.5 + math.exp(1.0) * 3 - 1.0, rel=1e-6)
    total.backward()
    assert weighting.log_vars.grad.tolist() == pytest.approx([1 - 2 * math.exp(-0.5), 1 - 3 * math.exp(1.0)], rel=1e-6)
    assert float(first.grad) == pytest.approx(math.exp(-0.5)) and float(second.grad) == pytest.approx(math.exp(1.0))
    with torch.no_grad():  # at s_i = log L_i the log-variances are at their optimum: zero gradient
        weighting.log_vars.copy_(torch.tensor([math.log(2.0), math.log(3.0)]))
    weighting.log_vars.grad = None
    weighting(torch.tensor(2.0), torch.tensor(3.0)).backward()
    assert weighting.log_vars.grad.abs().max() < 1e-6
    with pytest.raises(ValueError, match="expected 2 losses, got 1"):
        weighting(first)


def test_segmentation_loss_ignores_unlabelled_points() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    loss = segmentation_loss()(logits, torch.tensor([0, -1, 1]))
    assert float(loss) == pytest.approx((math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2)
