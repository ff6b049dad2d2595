"""Losses of the paper: NDF's clamped L1 on distances, and Kendall et al.'s uncertainty weighting."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def clamped_l1(pred: Tensor, target: Tensor, num_clouds: int, clamp: float = 0.1) -> Tensor:
    """``Σ |min(f̂, c) − min(d, c)|`` over all points, divided by the number of clouds (NDF / RangeUDF):
    summed over each scene's points, averaged over the batch."""
    return (pred.clamp(max=clamp) - target.clamp(max=clamp)).abs().sum() / max(num_clouds, 1)


class UncertaintyWeighting(nn.Module):
    """``L = Σ_i exp(−s_i)·L_i + s_i`` with learned log-variances ``s_i`` (Kendall, Gal & Cipolla 2018)."""

    def __init__(self, num_losses: int) -> None:
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(num_losses))

    def forward(self, *losses: Tensor) -> Tensor:
        if len(losses) != self.log_vars.numel():
            raise ValueError(f"expected {self.log_vars.numel()} losses, got {len(losses)}")
        stacked = torch.stack(list(losses))
        return (torch.exp(-self.log_vars) * stacked + self.log_vars).sum()
