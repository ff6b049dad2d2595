"""The contextualising module f_ctx: frozen geometric encodings E_g in, l context features E_c out.

The paper's module is a shrunk Point Transformer U-Net (channels [32, 32, 64, 64, 128], one block in every
encoder and decoder stage): with d = 32 inputs and l = 4 outputs it has exactly 379,384 parameters. The
ablations of the paper's Table 3 are arguments: ``kind="mlp"`` (a per-point MLP, no context across points),
``num_scales=3``, ``blocks=(1, 2, 3, 5, 2)``, ``channels=(32, 64, 128, 256, 512)`` and any ``out_channels``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from ctxir.nn.config import Configurable

from ctxir.nn.point_transformer import PointTransformerUNet


class ContextModule(Configurable, nn.Module):
    """f_ctx: per-point context features from the encodings of the whole cloud.

    Args:
        in_channels: width d of the geometric encodings.
        out_channels: number l of context features.
        kind: ``"transformer"`` (the paper's module) or ``"mlp"`` (the ablation without context).
        channels: U-Net widths per scale (``kind="transformer"``).
        blocks: Point Transformer blocks per encoder scale; the decoder has one per scale.
        neighbours: k per scale.
        num_scales: use only the first ``num_scales`` entries of ``channels``/``blocks``/``neighbours``.
        mlp_hidden: hidden widths of the ``"mlp"`` variant (Linear-BN-ReLU each).
        knn_backend: forced kNN backend, ``None`` = automatic.
    """

    def __init__(
        self,
        in_channels: int = 32,
        out_channels: int = 4,
        kind: Literal["transformer", "mlp"] = "transformer",
        channels: Sequence[int] = (32, 32, 64, 64, 128),
        blocks: Sequence[int] = (1, 1, 1, 1, 1),
        neighbours: Sequence[int] = (8, 16, 16, 16, 16),
        num_scales: int | None = None,
        mlp_hidden: Sequence[int] = (64, 64),
        knn_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kind = in_channels, out_channels, kind
        if kind == "transformer":
            n = len(channels) if num_scales is None else num_scales
            if not 1 <= n <= len(channels):
                raise ValueError(f"num_scales must be in [1, {len(channels)}], got {num_scales}")
            self.net: nn.Module = PointTransformerUNet(
                in_channels,
                out_channels,
                channels=list(channels)[:n],
                blocks=list(blocks)[:n],
                neighbours=list(neighbours)[:n],
                knn_backend=knn_backend,
            )
        elif kind == "mlp":
            widths = [in_channels, *mlp_hidden]
            layers: list[nn.Module] = []
            for c_in, c_out in zip(widths[:-1], widths[1:]):
                layers += [nn.Linear(c_in, c_out), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
            self.net = nn.Sequential(*layers, nn.Linear(widths[-1], out_channels))
        else:
            raise ValueError(f"kind must be 'transformer' or 'mlp', got {kind!r}")

    def forward(self, pos: Tensor, encodings: Tensor, batch: Tensor | None = None) -> Tensor:
        """``pos`` (N, 3), ``encodings`` E_g (N, d), ``batch`` (N,) sorted cloud index → E_c (N, l)."""
        if self.kind == "mlp":
            return self.net(encodings)
        return self.net(pos, encodings, batch)
