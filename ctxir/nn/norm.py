"""BatchNorm in two layouts: row-wise ``(…, C)`` (the decoders) and channel-first ``(C, m)`` (the encoder).

Accuracy of the two layouts differs on the CPU. ``BatchNorm1d``'s kernel for an ``(m, C)`` input accumulates
the batch statistics in float32 along the rows and loses precision with ``m``: against float64 its output is
off by 4e-6 at m = 10,240 rows, 4e-5 at 163,840 and 3e-4 at 655,360 (gradients 1e-5 … 6e-4), whereas the
``(1, C, m)`` layout stays at 6e-7 (gradients 2e-6) throughout (``tests/nn/test_norm.py``). The encoder's
tensors with one row per neighbour pair (10⁵–10⁶ rows) are therefore kept channel-first
(:func:`channels_first_batch_norm`); the decoders' ``(M, K, C)`` tensors are still row-wise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RowBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over the last (channel) axis of a tensor of any rank.

    It normalises an ``(rows, C)`` view instead of a transposed ``(N, C, …)`` copy; the state-dict keys
    are ``BatchNorm1d``'s, so checkpoints of either class load into the other."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view_as(x)


def channels_first_batch_norm(bn: nn.BatchNorm1d, x: Tensor, relu: bool = False) -> Tensor:
    """``bn`` over a channel-first ``(C, m)`` tensor (each row is one channel), optionally followed by a ReLU.

    The ``(1, C, m)`` view is ``BatchNorm1d``'s native layout: no copy, and statistics accurate at any ``m``
    (see the module docstring). The ReLU runs in place on BatchNorm's output before the view is taken."""
    y = bn(x.unsqueeze(0))
    return (torch.relu_(y) if relu else y).squeeze(0)
