"""Point Transformer U-Net (Zhao et al., ICCV 2021, v1) on batches of concatenated clouds.

Layer for layer the published segmentation network (POSTECH-CVLab / Pointcept ``PointTransformer-Seg50``),
so the parameter counts match exactly, written in plain PyTorch with four differences that change no maths:

* every level's neighbourhoods (its self-kNN, the transition-down grouping and the transition-up
  interpolation neighbours) are computed **once** in :func:`build_pyramid` and reused by every block of that
  level, encoder and decoder alike (the published code recomputes them inside every layer);
* the attention layer keeps its per-neighbour-pair tensors channel-first, ``(C, n·k)``, and allocates few of
  them (see :meth:`PointTransformerLayer.forward_channels_first`);
* the attention's weighted sum of the values is one sparse-times-dense product over the level's
  :class:`~ctxir.nn.ops.NeighbourGraph` on the CPU, so the values are never copied per neighbour pair;
* the BatchNorms over neighbour pairs (the attention logits' and the transition down's) run fused on the CPU,
  in cache-sized chunks with statistics from sums over the neighbour graph (:mod:`ctxir.nn.pair_norm`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from ctxir.nn.config import Configurable
from ctxir.nn.norm import channels_first_batch_norm
from ctxir.nn.ops import (
    NeighbourGraph,
    cloud_prefixes,
    cloud_sizes,
    farthest_point_sampling,
    grouped_neighbour_sum,
    interpolate_knn,
    knn,
    linear_channels_first,
    pair_weighted_sum,
    sampled_sizes,
)
from ctxir.nn.pair_norm import attention_logits, neighbour_max


class PointTransformerLayer(nn.Module):
    """Grouped vector self-attention over each point's k nearest neighbours.

    ``w = γ(k_j − q_i + δ_ij)`` softmaxed over the neighbours, output ``Σ_j w_ij ⊙ (v_j + δ_ij)`` where
    ``δ = θ(p_j − p_i)``; channel ``c`` uses weight ``c mod (C / share_planes)``.
    """

    def __init__(self, channels: int, share_planes: int = 8) -> None:
        super().__init__()
        if channels % share_planes:
            raise ValueError(f"channels ({channels}) must be divisible by share_planes ({share_planes})")
        self.channels, self.share_planes = channels, share_planes
        groups = channels // share_planes
        self.linear_q = nn.Linear(channels, channels)
        self.linear_k = nn.Linear(channels, channels)
        self.linear_v = nn.Linear(channels, channels)
        self.pos_fc1, self.pos_bn, self.pos_fc2 = nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, channels)
        self.w_bn1, self.w_fc1 = nn.BatchNorm1d(channels), nn.Linear(channels, groups)
        self.w_bn2, self.w_fc2 = nn.BatchNorm1d(groups), nn.Linear(groups, groups)

    def forward(self, x: Tensor, pos: Tensor, index: Tensor | NeighbourGraph) -> Tensor:
        """``x`` (n, C) features, ``pos`` (n, 3), ``index`` (n, k) neighbours (self included) or their
        :class:`~ctxir.nn.ops.NeighbourGraph` → (n, C), the transpose of :meth:`forward_channels_first`'s output."""
        return self.forward_channels_first(x, pos, index).t()

    def forward_channels_first(self, x: Tensor, pos: Tensor, index: Tensor | NeighbourGraph) -> Tensor:
        """``x`` (n, C) features, ``pos`` (n, 3), ``index`` (n, k) neighbours (self included) or their
        :class:`~ctxir.nn.ops.NeighbourGraph` → (C, n).

        Every tensor with one entry per neighbour pair is kept channel-first, ``(C, n·k)``: linear maps are
        single GEMMs with long rows, gathers are ``torch.gather`` along the rows, and BatchNorm runs in its
        native layout, which accumulates the statistics accurately (the row layout loses ~1e-4 at this size,
        see :mod:`ctxir.nn.norm`). Four rewrites change no maths:

        * δ's bias ``b`` enters ``w`` through ``b − q`` (an (n, C) tensor) instead of the (C, n·k) δ;
        * the logits' first layers, ``w_fc1(ReLU(w_bn1(k_j − q_i + δ_ij)))``, are one
          :func:`~ctxir.nn.pair_norm.attention_logits` call, which on the CPU runs in cache-sized chunks
          and forms no ``(C, n·k)`` tensor;
        * the output's ``Σ_j w_ij ⊙ δ_ij`` is formed from the 3-channel hidden layer of the position MLP,
          ``W₂ (Σ_j w_ij h_ij) + b`` (the weights sum to 1 over ``j``), so ``v_j + δ_ij`` is never built;
        * ``Σ_j w_ij ⊙ v_j`` is a sparse-times-dense product (:func:`~ctxir.nn.ops.grouped_neighbour_sum`), so
          no per-pair copy of ``v`` is made.
        """
        graph = index if isinstance(index, NeighbourGraph) else NeighbourGraph(index, x.shape[0])
        index = graph.index
        n, k = index.shape
        channels, planes = self.channels, self.share_planes
        groups = channels // planes
        x_t = x.t()
        value = linear_channels_first(self.linear_v, x_t)
        rel = graph.relative_positions(pos)
        hidden = channels_first_batch_norm(self.pos_bn, linear_channels_first(self.pos_fc1, rel), relu=True)
        delta_bias = self.pos_fc2.bias
        offset = delta_bias - self.linear_q(x)
        w = attention_logits(self.linear_k(x), offset, hidden, self.pos_fc2.weight, self.w_bn1, self.w_fc1, graph)
        w = channels_first_batch_norm(self.w_bn2, w, relu=True)
        w = torch.softmax(linear_channels_first(self.w_fc2, w).view(groups, n, k), dim=2)  # over the neighbours
        out = grouped_neighbour_sum(value, graph, w).view(planes, groups, n)
        pooled_hidden = pair_weighted_sum(hidden, w)  # Σ_j w_ij h_ij, (3, G, n)
        out = out + torch.einsum("pgt,tgn->pgn", self.pos_fc2.weight.view(planes, groups, 3), pooled_hidden)
        return (out + delta_bias.view(planes, groups, 1)).view(channels, n)


class PointTransformerBlock(nn.Module):
    """Bottleneck residual block: Linear-BN-ReLU, attention-BN-ReLU, Linear-BN, add, ReLU.

    The attention's channel-first output is normalised in that layout (BatchNorm of its transposed view
    measured 3.4x slower, 10,240 × 32)."""

    def __init__(self, channels: int, share_planes: int = 8) -> None:
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(channels, channels, bias=False), nn.BatchNorm1d(channels)
        self.attention, self.bn2 = PointTransformerLayer(channels, share_planes), nn.BatchNorm1d(channels)
        self.fc3, self.bn3 = nn.Linear(channels, channels, bias=False), nn.BatchNorm1d(channels)

    def forward(self, x: Tensor, pos: Tensor, index: Tensor | NeighbourGraph) -> Tensor:
        y = torch.relu(self.bn1(self.fc1(x)))
        y = channels_first_batch_norm(self.bn2, self.attention.forward_channels_first(y, pos, index), relu=True)
        y = self.bn3(self.fc3(y.t()))
        return torch.relu(x + y)


class TransitionDown(nn.Module):
    """Stride 1: a per-point Linear-BN-ReLU. Otherwise: max over each sampled point's k neighbours of
    Linear-BN-ReLU applied to ``[p_j − p_i, f_j]``.

    The strided case applies the feature part of the linear map to the finer level's points *before* gathering
    them, ``(W_f f)_j`` instead of ``W_f (f_j)``: the same values with ``stride``× fewer multiply-adds and no
    gathered copy of ``f``; the rest is :func:`~ctxir.nn.pair_norm.neighbour_max` (fused on the CPU: no
    ``(C_out, n·k)`` tensor).
    """

    def __init__(self, in_channels: int, out_channels: int, strided: bool) -> None:
        super().__init__()
        self.strided = strided
        self.fc = nn.Linear(in_channels + (3 if strided else 0), out_channels, bias=False)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor, fine_pos: Tensor, pos: Tensor, group: Tensor | None) -> Tensor:
        if not self.strided:
            return torch.relu(self.bn(self.fc(x)))
        assert group is not None
        graph = NeighbourGraph(group, fine_pos.shape[0])
        key = x @ self.fc.weight[:, 3:].t()
        return neighbour_max(key, graph.relative_positions(fine_pos, pos), self.fc.weight[:, :3], self.bn, graph)


class TransitionUpHead(nn.Module):
    """Bottom of the U: concatenate each cloud's mean feature (Linear-ReLU) and apply Linear-BN-ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc_mean = nn.Linear(channels, channels)
        self.fc, self.bn = nn.Linear(2 * channels, channels), nn.BatchNorm1d(channels)

    def forward(self, x: Tensor, batch: Tensor, num_clouds: int) -> Tensor:
        counts = torch.bincount(batch, minlength=num_clouds).clamp(min=1).to(x.dtype)
        mean = x.new_zeros(num_clouds, x.shape[1]).index_add_(0, batch, x) / counts.unsqueeze(1)
        glob = torch.relu(self.fc_mean(mean))[batch]
        return torch.relu(self.bn(self.fc(torch.cat([x, glob], dim=1))))


class TransitionUp(nn.Module):
    """``Linear-BN-ReLU(skip) + interp₃(Linear-BN-ReLU(coarse))`` with 3-NN inverse-distance weights."""

    def __init__(self, coarse_channels: int, fine_channels: int) -> None:
        super().__init__()
        self.fc_skip, self.bn_skip = nn.Linear(fine_channels, fine_channels), nn.BatchNorm1d(fine_channels)
        self.fc_up, self.bn_up = nn.Linear(coarse_channels, fine_channels), nn.BatchNorm1d(fine_channels)

    def forward(
        self, skip: Tensor, fine_pos: Tensor, coarse: Tensor, coarse_pos: Tensor, index: Tensor
    ) -> Tensor:
        up = torch.relu(self.bn_up(self.fc_up(coarse)))
        return torch.relu(self.bn_skip(self.fc_skip(skip))) + interpolate_knn(up, coarse_pos, fine_pos, index)


@dataclass
class Level:
    """Points of one U-Net level and the neighbourhoods every module of that level reuses.

    Attributes:
        pos: ``(n, 3)`` points of the level.
        batch: ``(n,)`` sorted cloud index.
        sizes: points per cloud, on the host.
        neighbours: the ``(n, k)`` self-kNN used by every block of the level, as a
            :class:`~ctxir.nn.ops.NeighbourGraph` (its sparse structures are built once and shared).
        group: ``(n, k)`` neighbours in the finer level used by the transition down (``None`` at level 0).
        up: ``(n_finer, 3)`` 3-NN of each finer-level point among this level's points, for transition up
            (``None`` at level 0).
    """

    pos: Tensor
    batch: Tensor
    sizes: list[int]
    neighbours: NeighbourGraph
    group: Tensor | None = None
    up: Tensor | None = None


def _without_grad(fn: Callable[[], Tensor]) -> Tensor:
    """``fn()`` with autograd off (grad mode is per thread: a worker thread starts with it on)."""
    with torch.no_grad():
        return fn()


@torch.no_grad()
def build_pyramid(
    pos: Tensor,
    batch: Tensor,
    neighbours: Sequence[int],
    stride: int = 4,
    knn_backend: str | None = None,
    *,
    sizes: Sequence[int] | None = None,
    fps_backend: str | None = None,
) -> list[Level]:
    """Sample every level by farthest point sampling and compute each level's kNN exactly once.

    Farthest point sampling runs once, on the input points: every coarser level is a prefix of the level above.
    A level holds each cloud's samples in sampling order, and sampling them again from the same first point picks
    them again in the same order (by induction: after the same first ``t`` picks every candidate has the same
    distance to them, the level's sample ``t + 1`` is among the candidates and is the farthest, and among equally
    far candidates the earliest sampled is the lowest-indexed in either run, as the full run picked it first).

    A sampled point's ``k`` nearest finer-level points (the transition-down grouping) are the first ``k`` of its
    own row in the finer level's self-kNN whenever that level searched at least ``k`` neighbours (the points are
    among the finer level's, the search the same), so they are taken from there instead of searched again.

    ``sizes`` (points per cloud on the host, read with :func:`~ctxir.nn.ops.cloud_sizes` when ``None``) fixes
    every level's shape, so nothing else is read back from the device.

    On the CPU the input points' self-kNN runs in a second thread while farthest point sampling runs in this one:
    the k-d tree search releases the GIL and the sampling loop uses one core, so the two overlap. The peer-shaped
    pyramid (16 neighbours per level) measured 58 → 49 ms at 10,240 points and 215 → 176 ms at 4 × 10,240 here,
    alternated in one process against running them one after the other; the results are the same."""
    sizes = cloud_sizes(batch) if sizes is None else list(sizes)
    search = partial(knn, pos, pos, neighbours[0], batch, batch, backend=knn_backend, sizes=(sizes, sizes))
    samples = partial(farthest_point_sampling, pos, batch, 1.0 / stride, sizes=sizes, backend=fps_backend)
    if len(neighbours) == 1:
        self_knn, first_samples = search(), None
    elif pos.device.type == "cpu":
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctxir-knn") as pool:
            pending = pool.submit(_without_grad, search)
            first_samples = samples()
            self_knn = pending.result()
    else:  # on an accelerator both only queue kernels
        self_knn, first_samples = search(), samples()
    levels = [Level(pos, batch, sizes, NeighbourGraph(self_knn, pos.shape[0]))]
    for k in neighbours[1:]:
        fine = levels[-1]
        n = sampled_sizes(fine.sizes, 1.0 / stride)
        if len(levels) == 1:
            assert first_samples is not None
            keep = first_samples
        else:  # a prefix of the finer level's samples (see above)
            keep = cloud_prefixes(fine.sizes, n, pos.device)
        p, b = fine.pos[keep], fine.batch[keep]
        fine_knn = fine.neighbours.index
        if fine_knn.shape[1] >= k:
            group = fine_knn[keep, :k]
        else:
            group = knn(fine.pos, p, k, fine.batch, b, backend=knn_backend, sizes=(fine.sizes, n))
        levels.append(
            Level(
                pos=p,
                batch=b,
                sizes=n,
                neighbours=NeighbourGraph(knn(p, p, k, b, b, backend=knn_backend, sizes=(n, n)), p.shape[0]),
                group=group,
                up=knn(p, fine.pos, 3, b, fine.batch, backend=knn_backend, sizes=(n, fine.sizes)),
            )
        )
    return levels


class PointTransformerUNet(Configurable, nn.Module):
    """Point Transformer segmentation U-Net: per-point features in, per-point features out.

    Args:
        in_channels: width of the input features (e.g. 3 for xyz, 6 for xyz+rgb, 32 for encodings).
        out_channels: width of the per-point output (classes, or the encoding size d).
        channels: width of each level.
        blocks: Point Transformer blocks after each level's transition down.
        decoder_blocks: blocks after each level's transition up.
        neighbours: k of each level (self-attention and transition-down grouping).
        stride: sub-sampling factor between levels (farthest point sampling keeps ⌊n/stride⌋ per cloud).
        share_planes: attention channels sharing one weight.
        knn_backend: forced kNN backend (see :mod:`ctxir.nn.ops`), ``None`` = automatic.
        fps_backend: forced farthest-point-sampling backend (see :mod:`ctxir.nn.ops`), ``None`` = automatic.

    The published configuration (``in_channels=6, out_channels=13`` with the defaults) has exactly
    7,767,729 parameters.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 32,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        blocks: Sequence[int] = (1, 2, 3, 5, 2),
        decoder_blocks: int | Sequence[int] = 1,
        neighbours: Sequence[int] = (8, 16, 16, 16, 16),
        stride: int = 4,
        share_planes: int = 8,
        knn_backend: str | None = None,
        fps_backend: str | None = None,
    ) -> None:
        super().__init__()
        channels, blocks, neighbours = list(channels), list(blocks), list(neighbours)
        if isinstance(decoder_blocks, int):
            decoder_blocks = [decoder_blocks] * len(channels)
        decoder_blocks = list(decoder_blocks)
        if not (len(channels) == len(blocks) == len(neighbours) == len(decoder_blocks)) or not channels:
            raise ValueError(
                "channels, blocks, decoder_blocks and neighbours need one entry per level, got "
                f"{channels}, {blocks}, {decoder_blocks}, {neighbours}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.neighbours, self.stride, self.knn_backend = neighbours, stride, knn_backend
        self.fps_backend = fps_backend
        widths = [in_channels, *channels]
        self.down = nn.ModuleList(
            TransitionDown(widths[i], widths[i + 1], strided=i > 0) for i in range(len(channels))
        )
        self.encoder = nn.ModuleList(
            nn.ModuleList(PointTransformerBlock(c, share_planes) for _ in range(n))
            for c, n in zip(channels, blocks)
        )
        self.up_head = TransitionUpHead(channels[-1])
        self.up = nn.ModuleList(TransitionUp(channels[i + 1], channels[i]) for i in range(len(channels) - 1))
        self.decoder = nn.ModuleList(
            nn.ModuleList(PointTransformerBlock(c, share_planes) for _ in range(n))
            for c, n in zip(channels, decoder_blocks)
        )
        self.head = nn.Sequential(
            nn.Linear(channels[0], channels[0]),
            nn.BatchNorm1d(channels[0]),
            nn.ReLU(inplace=True),
            nn.Linear(channels[0], out_channels),
        )

    def forward(self, pos: Tensor, features: Tensor, batch: Tensor | None = None) -> Tensor:
        """``pos`` (N, 3), ``features`` (N, in_channels), ``batch`` (N,) sorted cloud index → (N, out).

        The clouds' sizes are read to the host once (they fix every level's shape); nothing else is read back
        from the device, so on an accelerator sampling, neighbour search and attention all stay there."""
        if features.shape != (pos.shape[0], self.in_channels):
            raise ValueError(
                f"expected features of shape ({pos.shape[0]}, {self.in_channels}), got {tuple(features.shape)}"
            )
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        levels = build_pyramid(pos, batch, self.neighbours, self.stride, self.knn_backend, fps_backend=self.fps_backend)
        skips: list[Tensor] = []
        x = features
        for i, level in enumerate(levels):
            fine_pos = levels[i - 1].pos if i else pos
            x = self.down[i](x, fine_pos, level.pos, level.group)
            for block in self.encoder[i]:
                x = block(x, level.pos, level.neighbours)
            skips.append(x)
        x = self.up_head(skips[-1], levels[-1].batch, len(levels[-1].sizes))
        for block in self.decoder[-1]:
            x = block(x, levels[-1].pos, levels[-1].neighbours)
        for i in range(len(levels) - 2, -1, -1):
            coarse = levels[i + 1]
            assert coarse.up is not None
            x = self.up[i](skips[i], levels[i].pos, x, coarse.pos, coarse.up)
            for block in self.decoder[i]:
                x = block(x, levels[i].pos, levels[i].neighbours)
        return self.head(x)
