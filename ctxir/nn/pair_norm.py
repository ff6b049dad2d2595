"""BatchNorm over neighbour pairs without per-pair tensors: the attention logits and the transition-down max.

Two layers of the Point Transformer normalise a tensor with one entry per neighbour pair and channel,

    u_ij = key_j + offset_i + W h_ij        (h: three channels per pair)

* the attention's logits (:class:`~ctxir.nn.point_transformer.PointTransformerLayer`):
  ``w_fc1(ReLU(w_bn1(u)))`` with ``offset = b₂ − q`` and ``h`` the position MLP's hidden layer
  (:func:`attention_logits`);
* the transition down (:class:`~ctxir.nn.point_transformer.TransitionDown`): ``max_j ReLU(bn(u))`` with no
  offset and ``h`` the neighbours' relative positions (:func:`neighbour_max`).

Composed from PyTorch ops each writes and reads several ``(C, n·k)`` tensors (21 MB at 32 channels × 10,240
points × 16 neighbours) and keeps some alive until backward. On the CPU both are computed fused:

* the batch statistics of ``u`` come from sums over the neighbour graph (neighbour counts, the offsets summed
  over the points that pick each point, the 3×3 moments of ``h``…) of centred inputs, totals in float64, so
  ``u`` is never formed to be normalised;
* the normalisation is folded into the inputs and the pairs are visited in chunks small enough to stay in cache
  (a row per pair: ``index_select`` of rows, several times faster here than a channel-first gather);
* the backward needs per-point sums only: BatchNorm's input gradient ``scale ⊙ g − ρ ⊙ u + κ`` is linear in
  ``u``, whose per-point sums are those of the forward. For the logits each chunk is recomputed once; for the
  max, ``g`` is non-zero at each point's chosen neighbour only, so nothing is recomputed.

Nothing with one entry per pair and channel is saved for backward. The maths is BatchNorm's (biased variance
to normalise, unbiased for the running estimate, ``momentum=None`` as a cumulative average), tested equal to
the composed ops to 1e-12 in float64; only first derivatives are provided. On accelerators and under autocast
the composed ops run. Measured on the 2-core CPU, each alone in a fresh process (``python
benchmarks/bench_nn.py --only "encoder vs baseline" --clouds 4 --baseline PATH``, PATH a checkout without this
module): the published encoder's training step at the paper's per-GPU batch (4 × 10,240 points) 1.40 against
2.01 s, peak resident memory 1.5 against 2.4 GiB; at one cloud 0.43 against 0.47 s, 0.7 against 0.9 GiB.
"""

from __future__ import annotations

from collections.abc import Callable

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
        fused = _fusable(bn, key, offset, hidden, pos_weight)
    if not fused:
        u = gather_columns(key.t().contiguous(), index.reshape(-1)).view(channels, n, k).add_(offset.t().unsqueeze(2))
        u = u.view(channels, n * k).add_(pos_weight @ hidden)
        return linear_channels_first(fc, channels_first_batch_norm(bn, u, relu=True))
    inputs = (key, offset, hidden, pos_weight, bn.weight, bn.bias, fc.weight, fc.bias)
    sums, mean, var, batch_stats = _statistics(
        bn, lambda: _GraphSums(key.detach(), offset.detach(), hidden.detach(), pos_weight.detach(), graph), inputs
    )
    chunk = max(1, chunk_elements // (channels * k))
    return _AttentionLogits.apply(*inputs, index, sums, mean, var, bn.eps, batch_stats, chunk)


def neighbour_max(
    key: Tensor,
    hidden: Tensor,
    pos_weight: Tensor,
    bn: nn.BatchNorm1d,
    graph: NeighbourGraph,
    *,
    fused: bool | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Tensor:
    """``max_j relu(bn(key_j + pos_weight @ h_ij))`` over each point's neighbours → ``(n, C)``: the transition
    down's pooling, with ``h`` the neighbours' relative positions.

    Fused (the default on the CPU, as in :func:`attention_logits`), BatchNorm-ReLU is monotone in each channel
    (increasing where ``scale = γ/σ ≥ 0``, decreasing elsewhere), so the maximum is taken of ``±u`` in
    cache-sized chunks and normalised once per point; the batch statistics come from the graph sums, and the
    backward needs only the chosen neighbour of every point and channel: no per-pair tensor in either direction.
    ``hidden`` gets no gradient there (positions; a ``hidden`` that requires one is an error).

    Args:
        key: ``(n_support, C)`` the neighbours' features, one row per point.
        hidden: ``(3, n·k)`` channel-first, pair ``(i, j)`` at column ``i·k + j``.
        pos_weight: ``(C, 3)``.
        bn: the ``C``-channel BatchNorm.
        graph: the ``(n, k)`` neighbours.
        fused: as in :func:`attention_logits`.
        chunk_elements: channels × pairs per chunk of the fused computation.
    """
    index = graph.index
    n, k = index.shape
    channels = key.shape[1]
    if key.ndim != 2 or key.shape[0] != graph.num_support or hidden.shape != (3, n * k) or pos_weight.shape != (channels, 3):
        raise ValueError(
            f"key {tuple(key.shape)}, hidden {tuple(hidden.shape)} and pos_weight {tuple(pos_weight.shape)} do not "
            f"fit {channels} channels and neighbours of shape {(n, k)} into {graph.num_support} points"
        )
    hidden_wants_grad = torch.is_grad_enabled() and hidden.requires_grad
    if fused is None:
        fused = _fusable(bn, key, hidden, pos_weight) and not hidden_wants_grad
    if not fused:
        u = torch.addmm(gather_columns(key.t().contiguous(), index.reshape(-1)), pos_weight, hidden)
        # max with indices: its backward is one scatter (amax's splits ties with a mask); tied entries are
        # repeated neighbours (the same point, the same gradient) or ReLU zeros (no gradient)
        return channels_first_batch_norm(bn, u, relu=True).view(channels, n, k).max(dim=2).values.t()
    if hidden_wants_grad:
        raise ValueError("the fused neighbour_max gives hidden no gradient; pass it detached or use fused=False")
    inputs = (key, hidden, pos_weight, bn.weight, bn.bias)
    sums, mean, var, batch_stats = _statistics(
        bn, lambda: _GraphSums(key.detach(), None, hidden, pos_weight.detach(), graph), inputs
    )
    chunk = max(1, chunk_elements // (channels * k))
    return _NeighbourMax.apply(*inputs, index, sums, mean, var, bn.eps, batch_stats, chunk)


def _fusable(bn: nn.BatchNorm1d, *tensors: Tensor) -> bool:
    """The fused computations' default: CPU tensors of one float dtype outside autocast, an affine ``bn``."""
    dtypes = {t.dtype for t in tensors}
    device = tensors[0].device.type
    return (
        device == "cpu"
        and not torch.is_autocast_enabled(device)
        and bn.affine
        and len(dtypes) == 1
        and tensors[0].dtype in FUSED_DTYPES
    )


def _statistics(
    bn: nn.BatchNorm1d, graph_sums: Callable[[], _GraphSums], inputs: tuple[Tensor, ...]
) -> tuple[_GraphSums | None, Tensor, Tensor, bool]:
    """The graph sums (built only when the batch statistics or a backward need them: not for inference with
    running statistics), the mean and biased variance to normalise with (float64), and whether they are the
    batch's: BatchNorm's rule, including the running-statistics update in training."""
    wants_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    with torch.no_grad():
        if bn.training or bn.running_mean is None or bn.running_var is None:
            sums = graph_sums()
            mean, var = sums.moments()
            _update_running_stats(bn, mean, var, sums.pairs)
            return sums, mean, var, True
        return (graph_sums() if wants_grad else None), bn.running_mean.double(), bn.running_var.double(), False


class _GraphSums:
    """Sums over the neighbour graph from which every sum over the pairs of ``u = key_j + offset_i + W h_ij``
    (no offset when it is ``None``), or of ``u`` times a per-pair factor, follows without forming ``u``.

    Moments are taken of ``u`` less the constant ``shift = a + b + W e`` (``a``, ``b``, ``e`` the mean key,
    offset and hidden row), i.e. of centred inputs, so that ``E[u²] − E[u]²`` does not cancel; per-point sums are
    in the inputs' precision, per-channel totals in float64."""

    def __init__(
        self, key: Tensor, offset: Tensor | None, hidden: Tensor, pos_weight: Tensor, graph: NeighbourGraph
    ) -> None:
        n, k = graph.index.shape
        self.key, self.offset, self.hidden, self.pos_weight, self.graph = key, offset, hidden, pos_weight, graph
        self.pairs, self.k = n * k, k
        self.counts = graph.column_counts().to(key.dtype)  # times each support point is picked
        flat = graph.index.reshape(-1)
        self.hidden_by_neighbour = hidden.new_zeros(3, graph.num_support).index_add_(1, flat, hidden)  # Σ_{i→j} h
        self.hidden_by_query = hidden.view(3, n, k).sum(dim=2)  # Σ_j h_ij, (3, n)
        h64 = hidden.double()
        self.hidden_moment = h64 @ h64.t()  # Σ h hᵀ
        self.hidden_sum = self.hidden_by_query.sum(dim=1, dtype=torch.float64)
        self.hidden_mean = self.hidden_sum / self.pairs
        # any constants centre the moments; these are rounded to the inputs' dtype, so that they are exactly
        # what is subtracted (a float64 copy of the inputs to average them would cost more than it gives)
        self.key_mean = (key.sum(dim=0) / key.shape[0]).double()
        self.key_centred = key - self.key_mean.to(key.dtype)
        self.offset_mean = torch.zeros_like(self.key_mean)
        self.offset_centred = self.offset_by_neighbour = None
        if offset is not None:
            self.offset_mean = (offset.sum(dim=0) / offset.shape[0]).double()
            self.offset_centred = offset - self.offset_mean.to(key.dtype)
            self.offset_by_neighbour = graph.sum_over_queries(self.offset_centred)  # Σ_{i→j} (offset_i − b)
        self.shift = self.key_mean + self.offset_mean + pos_weight.double() @ self.hidden_mean

    def moments(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and biased variance of ``u`` over all pairs (float64)."""
        k, dtype = self.k, self.key.dtype
        w = self.pos_weight.double()
        key, offset, counts, mean_h = self.key_centred, self.offset_centred, self.counts, self.hidden_mean
        hidden_by_neighbour = self.hidden_by_neighbour - mean_h.to(dtype).unsqueeze(1) * counts  # of h − e
        hidden_moment = self.hidden_moment - self.pairs * torch.outer(mean_h, mean_h)
        total = (counts @ key).double()  # Σ (h − e) = 0
        key_hidden = hidden_by_neighbour @ key  # Σ (key_j − a + offset_i − b)(h − e)ᵀ, (3, C)
        square = (counts @ key.square()).double() + ((w @ hidden_moment) * w).sum(dim=1)
        if offset is not None:
            assert self.offset_by_neighbour is not None
            hidden_by_query = self.hidden_by_query - k * mean_h.to(dtype).unsqueeze(1)
            total += k * offset.sum(dim=0).double()
            key_hidden += hidden_by_query @ offset
            square += 2 * (key * self.offset_by_neighbour).sum(dim=0).double()
            square += k * (offset * offset).sum(dim=0).double()
        square += 2 * (w * key_hidden.double().t()).sum(dim=1)
        centred_mean = total / self.pairs
        return centred_mean + self.shift, (square / self.pairs - centred_mean.square()).clamp_(min=0)

    def centred_sum(self, by_neighbour: Tensor, by_query: Tensor, by_hidden: Tensor, total: Tensor) -> Tensor:
        """``Σ_pairs f_ij ⊙ (u_ij − shift)`` per channel (float64) of a per-pair factor ``f`` given by its sums:
        over the pairs picking each support point ``(n_support, C)``, over each query's pairs ``(n, C)``,
        ``Σ h fᵀ`` ``(3, C)`` and ``Σ f`` ``(C,)`` (float64)."""
        assert self.offset_centred is not None
        by_hidden = by_hidden.double() - self.hidden_mean.unsqueeze(1) * total.unsqueeze(0)
        return (
            (self.key_centred * by_neighbour).sum(dim=0).double()
            + (self.offset_centred * by_query).sum(dim=0).double()
            + (self.pos_weight.double() * by_hidden.t()).sum(dim=1)
        )

    def u_by_neighbour(self) -> Tensor:
        """``Σ_{i: j∈N(i)} u_ij`` for every support point ``j`` → ``(n_support, C)``."""
        base = (self.key * self.counts.unsqueeze(1)).addr_(self.counts, self.offset_mean.to(self.key.dtype))
        if self.offset_by_neighbour is not None:
            base += self.offset_by_neighbour
        return base.addmm_(self.hidden_by_neighbour.t(), self.pos_weight.t())

    def hidden_u(self) -> Tensor:
        """``Σ h uᵀ`` over all pairs → ``(3, C)``."""
        out = torch.addmm(self.hidden_by_neighbour @ self.key, self.hidden_moment.to(self.key.dtype), self.pos_weight.t())
        if self.offset is not None:
            out += self.hidden_by_query @ self.offset
        return out

    def key_and_weight_gradients(
        self, g_by_neighbour: Tensor, g_hidden: Tensor, scale: Tensor, rho: Tensor, kappa: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The gradients of ``key`` and ``W`` when ``∂L/∂u = scale ⊙ g − ρ ⊙ u + κ`` per pair, from ``g``'s sums
        by neighbour ``(n_support, C)`` and ``Σ h gᵀ`` ``(3, C)``: ``∂L/∂key_j = scale ⊙ Σ g − ρ ⊙ Σ u + κ·count``
        over the pairs picking ``j``, ``∂L/∂W = Σ ∂L/∂u hᵀ``."""
        grad_key = self.u_by_neighbour().mul_(-rho).addcmul_(g_by_neighbour, scale).addr_(self.counts, kappa)
        grad_weight = (scale * g_hidden - rho * self.hidden_u()).t() + torch.outer(kappa, self.hidden_sum.to(scale.dtype))
        return grad_key, grad_weight


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


def _normalisation(
    bn_weight: Tensor, bn_bias: Tensor, mean: Tensor, var: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``1/σ``, ``scale = γ/σ`` and ``shift = β − μ·scale`` (float64): BatchNorm's output is ``scale·u + shift``."""
    inv_std = (var + eps).rsqrt()
    scale = bn_weight.double() * inv_std
    return inv_std, scale, bn_bias.double() - mean * scale


def _input_gradient_terms(
    scale: Tensor, inv_std: Tensor, mean: Tensor, g_sum: Tensor, grad_weight: Tensor, pairs: int, batch_stats: bool,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """BatchNorm's input gradient per pair is ``scale ⊙ g − ρ ⊙ u + κ`` (``g`` its output's gradient): ``scale``,
    ``ρ`` and ``κ`` in ``dtype``, from ``Σ g`` and ``Σ g x̂`` (``grad_weight``); ``ρ = κ = 0`` with fixed
    statistics."""
    if batch_stats:
        rho = scale * grad_weight * inv_std / pairs
        kappa = rho * mean - scale * g_sum / pairs
    else:
        rho = kappa = torch.zeros_like(scale)
    return scale.to(dtype), rho.to(dtype), kappa.to(dtype)


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
        ctx, key, offset, hidden, pos_weight, bn_weight, bn_bias, fc_weight, fc_bias, index: Tensor,
        sums: _GraphSums | None, mean: Tensor, var: Tensor, eps: float, batch_stats: bool, chunk: int,
    ) -> Tensor:
        n, k = index.shape
        inv_std, scale, shift = _normalisation(bn_weight, bn_bias, mean, var, eps)
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
        sums: _GraphSums = ctx.sums  # built whenever a backward can run (see _statistics)
        index = sums.graph.index
        n, k = index.shape
        dtype = key_s.dtype
        # one pass over the chunks: g = ∂L/∂(BatchNorm's output) per pair, reduced to sums; its rows are kept until
        # the loop ends for one multi-threaded sparse sum by neighbour (an index_add_ per chunk runs on one core)
        g_by_query = torch.empty_like(offset_s)
        g_hidden = key_s.new_zeros(3, key_s.shape[1])  # Σ h gᵀ
        grad_fc_weight = torch.zeros_like(fc_weight)
        grad_hidden = torch.empty_like(hidden)
        y_buffer = key_s.new_empty(min(n, ctx.chunk) * k, key_s.shape[1])
        g_pairs = key_s.new_empty(n * k, key_s.shape[1])
        for start in range(0, n, ctx.chunk):
            stop = min(n, start + ctx.chunk)
            y = _activations(key_s, offset_s, pos_weight_st, hidden, index, start, stop, y_buffer)
            grad_chunk = grad_out[:, start * k : stop * k]
            grad_fc_weight.addmm_(grad_chunk, y)
            g = torch.mm(grad_chunk.t(), fc_weight, out=g_pairs[start * k : stop * k])
            g = torch.ops.aten.threshold_backward.grad_input(g, y, 0, grad_input=g)  # ReLU's mask, in place
            torch.sum(g.view(stop - start, k, -1), dim=1, out=g_by_query[start:stop])
            g_hidden.addmm_(hidden[:, start * k : stop * k], g)
            torch.mm(pos_weight_st, g.t(), out=grad_hidden[:, start * k : stop * k])  # W₂ᵀ (scale ⊙ g)
        g_by_neighbour = sums.graph.sum_over_pairs(g_pairs)
        # BatchNorm: ∂L/∂u = scale ⊙ g − ρ ⊙ u + κ; the sums of every term come from the graph sums
        g_sum = g_by_query.sum(dim=0).double()
        g_centred = sums.centred_sum(g_by_neighbour, g_by_query, g_hidden, g_sum) - (mean - sums.shift) * g_sum
        grad_bn_weight = g_centred * inv_std  # Σ g (u − μ) / σ
        sc, r, kp = _input_gradient_terms(scale, inv_std, mean, g_sum, grad_bn_weight, sums.pairs, ctx.batch_stats, dtype)
        key, offset, w2 = sums.key, sums.offset, sums.pos_weight
        grad_key, grad_pos_weight = sums.key_and_weight_gradients(g_by_neighbour, g_hidden, sc, r, kp)
        # ∂L/∂offset_i = scale ⊙ Σ_j g − ρ ⊙ Σ_j u + k·κ, where Σ_j u = Σ_j key_j + k·offset_i + W₂ Σ_j h
        grad_offset = sums.graph.sum_over_neighbours(key).addmm_(sums.hidden_by_query.t(), w2.t()).add_(offset, alpha=k)
        grad_offset.mul_(-r).addcmul_(g_by_query, sc).add_(k * kp)
        if ctx.batch_stats:  # the −ρ ⊙ u + κ part of ∂L/∂h = W₂ᵀ ∂L/∂u, three channels per pair
            w2r = w2 * r.unsqueeze(1)  # (C, 3)
            by_key = gather_columns((key @ w2r).t().contiguous(), index.reshape(-1)).view(3, n, k)
            by_key.add_((offset @ w2r - kp @ w2).t().unsqueeze(2))
            grad_hidden.addmm_(w2r.t() @ w2, hidden, alpha=-1).view(3, n, k).sub_(by_key)
        return (
            grad_key, grad_offset, grad_hidden, grad_pos_weight, grad_bn_weight.to(dtype), g_sum.to(dtype),
            grad_fc_weight, grad_out.sum(dim=1), None, None, None, None, None, None, None,
        )


class _NeighbourMax(torch.autograd.Function):
    """The fused forward and backward of :func:`neighbour_max`."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, key, hidden, pos_weight, bn_weight, bn_bias, index: Tensor, sums: _GraphSums | None, mean: Tensor,
        var: Tensor, eps: float, batch_stats: bool, chunk: int,
    ) -> Tensor:
        n, k = index.shape
        dtype = key.dtype
        inv_std, scale, shift = _normalisation(bn_weight, bn_bias, mean, var, eps)
        sign = torch.where(scale >= 0, 1.0, -1.0).to(dtype)
        signed_key, signed_weight_t = key * sign, (pos_weight * sign.unsqueeze(1)).t()
        extreme = key.new_empty(n, key.shape[1])  # max_j of sign·u: u's max where scale ≥ 0, its min elsewhere
        chosen = torch.empty(n, key.shape[1], dtype=torch.long, device=key.device)
        buffer = key.new_empty(min(n, chunk) * k, key.shape[1])
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            y = torch.index_select(signed_key, 0, index[start:stop].reshape(-1), out=buffer[: (stop - start) * k])
            y.addmm_(hidden[:, start * k : stop * k].t(), signed_weight_t)
            # max over the neighbours with the first index on ties, as a pooling of the (m, C, k) view: the same
            # values and indices as torch.max(dim=1), which reduces across rows measured 8x slower here
            values, indices = nn.functional.max_pool1d(y.view(stop - start, k, -1).transpose(1, 2), k, return_indices=True)
            extreme[start:stop], chosen[start:stop] = values.squeeze(2), indices.squeeze(2)
        # scale·u + shift = |scale|·(sign·u) + shift
        out = torch.addcmul(shift.to(dtype), extreme, scale.abs().to(dtype)).relu_()
        ctx.save_for_backward(out, extreme, chosen, sign, scale, inv_std, mean)
        ctx.sums, ctx.batch_stats = sums, batch_stats
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        out, extreme, chosen, sign, scale, inv_std, mean = ctx.saved_tensors
        sums: _GraphSums = ctx.sums  # built whenever a backward can run (see _statistics)
        dtype = out.dtype
        # g = ∂L/∂(BatchNorm's output), non-zero only at each point's chosen neighbour
        g = torch.ops.aten.threshold_backward(grad_out, out, 0)
        g_sum = g.sum(dim=0).double()
        grad_bn_weight = (g * (extreme * sign - mean.to(dtype))).sum(dim=0).double() * inv_std  # Σ g (u − μ) / σ
        sc, r, kp = _input_gradient_terms(scale, inv_std, mean, g_sum, grad_bn_weight, sums.pairs, ctx.batch_stats, dtype)
        index, hidden = sums.graph.index, sums.hidden
        n, k = index.shape
        # Σ g by neighbour and Σ h gᵀ, from each point's chosen pair
        g_by_neighbour = torch.zeros_like(sums.key).scatter_add_(0, index.gather(1, chosen), g)
        hidden_chosen = hidden.view(3, n, k).gather(2, chosen.unsqueeze(0).expand(3, n, -1))  # (3, n, C)
        g_hidden = (hidden_chosen * g).sum(dim=1)  # (3, C)
        grad_key, grad_pos_weight = sums.key_and_weight_gradients(g_by_neighbour, g_hidden, sc, r, kp)
        grads = grad_key, None, grad_pos_weight, grad_bn_weight.to(dtype), g_sum.to(dtype)
        return (*grads, None, None, None, None, None, None, None)
