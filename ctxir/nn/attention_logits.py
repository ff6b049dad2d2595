"""The attention's first logit layers, ``Linear(ReLU(BatchNorm(k_j − q_i + δ_ij)))``, without per-pair tensors.

In :class:`~ctxir.nn.point_transformer.PointTransformerLayer` the pre-activation of the attention weights is

    u_ij = key_j + offset_i + W₂ h_ij        (offset = b₂ − q, h the position MLP's 3-channel hidden layer)

followed by BatchNorm over all ``n·k`` pairs, ReLU and a ``C → G`` linear map. Composed from PyTorch ops this
writes and reads several ``(C, n·k)`` tensors (21 MB each at 32 channels × 10,240 points × 16 neighbours):
the gather, the additions, BatchNorm's output and its ReLU, and in backward as many again; BatchNorm's input
and ReLU's output stay alive until backward. :func:`attention_logits` computes the same on the CPU with:

* the batch statistics of ``u`` from per-point sums over the neighbour graph (neighbour counts, the offsets
  summed over the points that pick each point, the 3×3 moments of ``h``…) and per-channel totals in float64,
  so ``u`` is never formed to be normalised;
* normalisation folded into the inputs (``scale·key``, ``scale·offset + shift``, ``scale·W₂``) and the forward
  run in chunks of points small enough to stay in cache (row per pair: ``index_select`` of rows, several
  times faster here than a channel-first gather): gather, add, ReLU and the linear map per chunk; only the
  ``(G, n·k)`` output is kept;
* a backward that recomputes each chunk once and keeps what the gradient needs as per-point sums: BatchNorm's
  input gradient ``scale ⊙ g − ρ ⊙ u + κ`` is linear in ``u``, whose per-point sums are those of the forward.

Nothing with one entry per pair and channel is saved for backward. The maths is BatchNorm's (biased variance
to normalise, unbiased for the running estimate, ``momentum=None`` as a cumulative average). Only first
derivatives are provided. Measured on the 2-core CPU, each alone in a fresh process: the published encoder's
training step at the paper's per-GPU batch (4 × 10,240 points) 1.52 against 1.98 s with the composed ops, peak
resident memory 1.7 against 2.5 GiB (``python benchmarks/bench_nn.py --only "encoder vs baseline" --clouds 4
--baseline PATH``, PATH a checkout before this module).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctxir.nn.norm import channels_first_batch_norm
from ctxir.nn.ops import NeighbourGraph, gather_columns, linear_channels_first

CHUNK_ELEMENTS = 1 << 19
"""Entries (channels × pairs) of one chunk's per-pair tensors: 2 MiB in float32, one core's L2 here, of which
each of the two threads works on half. Forward + backward at 32 channels × 10,240 points × 16 neighbours
measured 27.0 / 24.9 / 25.1 / 26.1 ms with 2¹⁸ / 2¹⁹ / 2²⁰ / 2²¹ entries (the composed ops: 35–36 ms)."""

FUSED_DTYPES = (torch.float32, torch.float64)


def attention_logits(
    key: Tensor,
    offset: Tensor,
    hidden: Tensor,
    pos_weight: Tensor,
    bn: nn.BatchNorm1d,
    fc: nn.Linear,
    graph: NeighbourGraph,
    *,
    fused: bool | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Tensor:
    """``fc(relu(bn(key_j + offset_i + pos_weight @ h_ij)))`` over the pairs ``(i, j)`` of ``graph`` → ``(G, n·k)``.

    Args:
        key: ``(n_support, C)`` keys of the points ``graph`` points into, one row per point.
        offset: ``(n, C)`` one row per query point (the position MLP's output bias minus the query).
        hidden: ``(3, n·k)`` the position MLP's hidden layer, channel-first, pair ``(i, j)`` at column ``i·k + j``.
        pos_weight: ``(C, 3)`` the position MLP's output weight.
        bn: the ``C``-channel BatchNorm (batch statistics in training, running ones otherwise; the running
            statistics are updated as ``BatchNorm1d`` updates them).
        fc: the ``C → G`` linear map.
        graph: the ``(n, k)`` neighbours.
        fused: the chunked computation described in the module docstring, or the composed PyTorch ops;
            ``None`` = fused on the CPU for float32/float64 inputs of one dtype and an affine ``bn``, outside
            autocast; the composed ops elsewhere (on accelerators, which have the memory bandwidth the chunks
            save and would pay a kernel launch per chunk op; under autocast, whose casting rules they follow).
        chunk_elements: channels × pairs per chunk of the fused computation.

    Returns:
        ``(G, n·k)``: the logits channel-first, pair ``(i, j)`` at column ``i·k + j``.
    """
    index = graph.index
    n, k = index.shape
    channels = key.shape[1]
    if (
        key.ndim != 2
        or key.shape[0] != graph.num_support
        or offset.shape != (n, channels)
        or hidden.shape != (3, n * k)
        or pos_weight.shape != (channels, 3)
    ):
        raise ValueError(
            f"key {tuple(key.shape)}, offset {tuple(offset.shape)}, hidden {tuple(hidden.shape)} and pos_weight "
            f"{tuple(pos_weight.shape)} do not fit {channels} channels and neighbours of shape {(n, k)} into "
            f"{graph.num_support} points"
        )
    if fused is None:
        dtypes = {t.dtype for t in (key, offset, hidden, pos_weight)}
        fused = (
            key.device.type == "cpu"
            and not torch.is_autocast_enabled(key.device.type)
            and bn.affine
            and len(dtypes) == 1
            and key.dtype in FUSED_DTYPES
        )
    if not fused:
        u = gather_columns(key.t().contiguous(), index.reshape(-1)).view(channels, n, k).add_(offset.t().unsqueeze(2))
        u = u.view(channels, n * k).add_(pos_weight @ hidden)
        return linear_channels_first(fc, channels_first_batch_norm(bn, u, relu=True))
    batch_stats = bn.training or bn.running_mean is None or bn.running_var is None
    with torch.no_grad():
        sums = _GraphSums(key.detach(), offset.detach(), hidden.detach(), pos_weight.detach(), graph)
        if batch_stats:
            mean, var = sums.moments()
            _update_running_stats(bn, mean, var, n * k)
        else:
            assert bn.running_mean is not None and bn.running_var is not None
            mean, var = bn.running_mean.double(), bn.running_var.double()
    chunk = max(1, chunk_elements // (channels * k))
    return _AttentionLogits.apply(
        key, offset, hidden, pos_weight, bn.weight, bn.bias, fc.weight, fc.bias, sums, mean, var, bn.eps,
        batch_stats, chunk,
    )


class _GraphSums:
    """Sums over the neighbour graph from which every sum over the pairs of ``u``, or of ``u`` times a per-pair
    factor, follows without forming ``u``.

    Moments are taken of ``u`` less the constant ``shift = a + b + W₂ e`` (``a``, ``b``, ``e`` the mean key,
    offset and hidden row), i.e. of centred inputs, so that ``E[u²] − E[u]²`` does not cancel; per-point sums are
    in the inputs' precision, per-channel totals in float64."""

    def __init__(self, key: Tensor, offset: Tensor, hidden: Tensor, pos_weight: Tensor, graph: NeighbourGraph) -> None:
        n, k = graph.index.shape
        self.key, self.offset, self.hidden, self.pos_weight, self.graph = key, offset, hidden, pos_weight, graph
        self.pairs, self.k = n * k, k
        self.counts = graph.by_column()[1].to(key.dtype)  # times each support point is picked
        flat = graph.index.reshape(-1)
        self.hidden_by_neighbour = hidden.new_zeros(3, graph.num_support).index_add_(1, flat, hidden)  # Σ_{i→j} h
        self.hidden_by_query = hidden.view(3, n, k).sum(dim=2)  # Σ_j h_ij, (3, n)
        h64 = hidden.double()
        self.hidden_moment = h64 @ h64.t()  # Σ h hᵀ
        self.hidden_sum = self.hidden_by_query.sum(dim=1, dtype=torch.float64)
        self.hidden_mean = self.hidden_sum / self.pairs
        self.key_mean = key.mean(dim=0, dtype=torch.float64)
        self.offset_mean = offset.mean(dim=0, dtype=torch.float64)
        self.key_centred = key - self.key_mean.to(key.dtype)
        self.offset_centred = offset - self.offset_mean.to(key.dtype)
        self.offset_by_neighbour = graph.sum_over_queries(self.offset_centred)  # Σ_{i→j} (offset_i − b)
        self.shift = self.key_mean + self.offset_mean + pos_weight.double() @ self.hidden_mean

    def moments(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and biased variance of ``u`` over all pairs (float64)."""
        k, dtype = self.k, self.key.dtype
        w2 = self.pos_weight.double()
        key, offset, counts, mean_h = self.key_centred, self.offset_centred, self.counts, self.hidden_mean
        hidden_by_neighbour = self.hidden_by_neighbour - mean_h.to(dtype).unsqueeze(1) * counts  # of h − e
        hidden_by_query = self.hidden_by_query - k * mean_h.to(dtype).unsqueeze(1)
        hidden_moment = self.hidden_moment - self.pairs * torch.outer(mean_h, mean_h)
        total = (counts @ key).double() + k * offset.sum(dim=0).double()  # Σ (h − e) = 0
        key_hidden = hidden_by_neighbour @ key + hidden_by_query @ offset  # Σ (key_j − a + offset_i − b)(h − e)ᵀ
        square = (
            (counts @ key.square()).double()
            + 2 * (key * self.offset_by_neighbour).sum(dim=0).double()
            + k * (offset * offset).sum(dim=0).double()
            + 2 * (w2 * key_hidden.double().t()).sum(dim=1)
            + ((w2 @ hidden_moment) * w2).sum(dim=1)
        )
        centred_mean = total / self.pairs
        return centred_mean + self.shift, (square / self.pairs - centred_mean.square()).clamp_(min=0)

    def centred_sum(self, by_neighbour: Tensor, by_query: Tensor, by_hidden: Tensor, total: Tensor) -> Tensor:
        """``Σ_pairs f_ij ⊙ (u_ij − shift)`` per channel (float64) of a per-pair factor ``f`` given by its sums:
        over the pairs picking each support point ``(n_support, C)``, over each query's pairs ``(n, C)``,
        ``Σ h fᵀ`` ``(3, C)`` and ``Σ f`` ``(C,)`` (float64)."""
        by_hidden = by_hidden.double() - self.hidden_mean.unsqueeze(1) * total.unsqueeze(0)
        return (
            (self.key_centred * by_neighbour).sum(dim=0).double()
            + (self.offset_centred * by_query).sum(dim=0).double()
            + (self.pos_weight.double() * by_hidden.t()).sum(dim=1)
        )


@torch.no_grad()
def _update_running_stats(bn: nn.BatchNorm1d, mean: Tensor, var: Tensor, count: int) -> None:
    """``BatchNorm1d``'s running-statistics update with this batch's mean and biased variance."""
    if not (bn.training and bn.track_running_stats) or bn.running_mean is None or bn.running_var is None:
        return
    factor = bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if factor is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    factor = 0.0 if factor is None else factor
    unbiased = var * count / max(count - 1, 1)
    bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
    bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)


def _activations(
    key: Tensor, offset: Tensor, pos_weight_t: Tensor, hidden: Tensor, index: Tensor, start: int, stop: int,
    buffer: Tensor,
) -> Tensor:
    """``relu(key_j + offset_i + W h_ij)`` of the pairs of points ``start:stop`` (inputs already scaled and
    shifted by the normalisation) → ``(m·k, C)``, one row per pair, written into ``buffer``."""
    k = index.shape[1]
    y = torch.index_select(key, 0, index[start:stop].reshape(-1), out=buffer[: (stop - start) * k])
    y.view(stop - start, k, -1).add_(offset[start:stop].unsqueeze(1))
    return y.addmm_(hidden[:, start * k : stop * k].t(), pos_weight_t).relu_()


class _AttentionLogits(torch.autograd.Function):
    """The fused forward and backward of :func:`attention_logits` (see the module docstring)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, key, offset, hidden, pos_weight, bn_weight, bn_bias, fc_weight, fc_bias,
        sums: _GraphSums, mean: Tensor, var: Tensor, eps: float, batch_stats: bool, chunk: int,
    ) -> Tensor:
        index = sums.graph.index
        n, k = index.shape
        inv_std = (var + eps).rsqrt()
        scale = bn_weight.double() * inv_std
        shift = bn_bias.double() - mean * scale
        scale_, shift_ = scale.to(key.dtype), shift.to(key.dtype)
        key_s, offset_s = key * scale_, torch.addcmul(shift_, offset, scale_)
        pos_weight_st = (pos_weight * scale_.unsqueeze(1)).t()  # (3, C)
        out = key.new_empty(fc_weight.shape[0], n * k)
        buffer = key.new_empty(min(n, chunk) * k, key.shape[1])  # reused by every chunk
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            y = _activations(key_s, offset_s, pos_weight_st, hidden, index, start, stop, buffer)
            torch.addmm(fc_bias.unsqueeze(1), fc_weight, y.t(), out=out[:, start * k : stop * k])
        ctx.save_for_backward(key_s, offset_s, pos_weight_st, hidden, fc_weight, scale, inv_std, mean)
        ctx.sums, ctx.batch_stats, ctx.chunk = sums, batch_stats, chunk
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        key_s, offset_s, pos_weight_st, hidden, fc_weight, scale, inv_std, mean = ctx.saved_tensors
        sums: _GraphSums = ctx.sums
        index = sums.graph.index
        n, k = index.shape
        dtype = key_s.dtype
        # one pass over the chunks: g = ∂L/∂(BatchNorm's output) per pair, kept only as sums
        g_by_neighbour = torch.zeros_like(key_s)
        g_by_query = torch.empty_like(offset_s)
        g_hidden = key_s.new_zeros(3, key_s.shape[1])  # Σ h gᵀ
        grad_fc_weight = torch.zeros_like(fc_weight)
        grad_hidden = torch.empty_like(hidden)
        y_buffer = key_s.new_empty(min(n, ctx.chunk) * k, key_s.shape[1])
        g_buffer = torch.empty_like(y_buffer)
        for start in range(0, n, ctx.chunk):
            stop = min(n, start + ctx.chunk)
            y = _activations(key_s, offset_s, pos_weight_st, hidden, index, start, stop, y_buffer)
            grad_chunk = grad_out[:, start * k : stop * k]
            grad_fc_weight.addmm_(grad_chunk, y)
            g = torch.mm(grad_chunk.t(), fc_weight, out=g_buffer[: y.shape[0]])
            g = torch.ops.aten.threshold_backward.grad_input(g, y, 0, grad_input=g)  # ReLU's mask, in place
            g_by_neighbour.index_add_(0, index[start:stop].reshape(-1), g)
            torch.sum(g.view(stop - start, k, -1), dim=1, out=g_by_query[start:stop])
            g_hidden.addmm_(hidden[:, start * k : stop * k], g)
            torch.mm(pos_weight_st, g.t(), out=grad_hidden[:, start * k : stop * k])  # W₂ᵀ (scale ⊙ g)
        # BatchNorm: ∂L/∂u = scale ⊙ g − ρ ⊙ u + κ; the sums of every term come from the graph sums
        g_sum = g_by_query.sum(dim=0).double()
        g_centred = sums.centred_sum(g_by_neighbour, g_by_query, g_hidden, g_sum) - (mean - sums.shift) * g_sum
        grad_bn_weight = g_centred * inv_std  # Σ g (u − μ) / σ
        if ctx.batch_stats:
            rho = scale * grad_bn_weight * inv_std / sums.pairs
            kappa = rho * mean - scale * g_sum / sums.pairs
        else:
            rho = kappa = torch.zeros_like(scale)
        sc, r, kp = scale.to(dtype), rho.to(dtype), kappa.to(dtype)
        key, offset, w2 = sums.key, sums.offset, sums.pos_weight
        # ∂L/∂key_j = scale ⊙ Σ g − ρ ⊙ Σ u + κ·count over the pairs picking j, where
        # Σ u = count·(key_j + b) + Σ (offset_i − b) + W₂ Σ h
        grad_key = torch.addmm(sums.offset_by_neighbour, sums.hidden_by_neighbour.t(), w2.t())
        grad_key.addcmul_(sums.counts.unsqueeze(1), key).mul_(-r).addcmul_(g_by_neighbour, sc)
        grad_key.addr_(sums.counts, kp - r * sums.offset_mean.to(dtype))
        # ∂L/∂offset_i = scale ⊙ Σ_j g − ρ ⊙ Σ_j u + k·κ, where Σ_j u = Σ_j key_j + k·offset_i + W₂ Σ_j h
        grad_offset = sums.graph.sum_over_neighbours(key).addmm_(sums.hidden_by_query.t(), w2.t()).add_(offset, alpha=k)
        grad_offset.mul_(-r).addcmul_(g_by_query, sc).add_(k * kp)
        u_hidden = sums.hidden_by_neighbour @ key + sums.hidden_by_query @ offset + sums.hidden_moment.to(dtype) @ w2.t()
        grad_pos_weight = (sc * g_hidden - r * u_hidden).t() + torch.outer(kp, sums.hidden_sum.to(dtype))
        if ctx.batch_stats:  # the −ρ ⊙ u + κ part of ∂L/∂h = W₂ᵀ ∂L/∂u, three channels per pair
            w2r = w2 * r.unsqueeze(1)  # (C, 3)
            by_key = gather_columns((key @ w2r).t().contiguous(), index.reshape(-1)).view(3, n, k)
            by_key.add_((offset @ w2r - kp @ w2).t().unsqueeze(2))
            grad_hidden.addmm_(w2r.t() @ w2, hidden, alpha=-1).view(3, n, k).sub_(by_key)
        return (
            grad_key, grad_offset, grad_hidden, grad_pos_weight, grad_bn_weight.to(dtype), g_sum.to(dtype),
            grad_fc_weight, grad_out.sum(dim=1), None, None, None, None, None, None,
        )
