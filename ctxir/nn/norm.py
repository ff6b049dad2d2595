"""Row-wise BatchNorm: one normalisation for the point transformer's and the decoders' ``(…, C)`` tensors."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RowBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over the last (channel) axis of a tensor of any rank.

    It normalises an ``(rows, C)`` view instead of a transposed ``(N, C, …)`` copy; the state-dict keys
    are ``BatchNorm1d``'s, so checkpoints of either class load into the other."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view_as(x)

    def forward_relu(self, x: Tensor) -> Tensor:
        """``ReLU(BatchNorm(x))`` with the ReLU in place on BatchNorm's output (which BatchNorm's backward
        does not read), applied before the view back to ``x``'s shape so no in-place op touches a view."""
        return torch.relu_(super().forward(x.reshape(-1, x.shape[-1]))).view_as(x)
