"""The fused attention logits equal the composed PyTorch ops: values, every gradient, running statistics."""

import copy

import pytest
import torch
from torch import nn

from ctxir.nn.pair_norm import attention_logits, neighbour_max
from ctxir.nn.ops import NeighbourGraph


def _inputs(n: int, n_support: int, k: int, channels: int, dtype: torch.dtype, seed: int, mean: float = 0.5):
    """A rectangular graph (queries into another point set) with a padded row repeating one neighbour, and
    inputs whose pre-activation has per-channel means of order ``mean``."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, n_support, (n, k), generator=g)
    index[1] = index[1, 0]  # a padded row: one neighbour k times
    leaves = [
        torch.randn(n_support, channels, generator=g, dtype=dtype) + mean,  # key
        torch.randn(n, channels, generator=g, dtype=dtype) - 0.3 * mean,  # offset
        torch.rand(3, n * k, generator=g, dtype=dtype),  # hidden (after a ReLU: non-negative)
        torch.randn(channels, 3, generator=g, dtype=dtype),  # pos_weight
    ]
    bn, fc = nn.BatchNorm1d(channels).to(dtype), nn.Linear(channels, channels // 8).to(dtype)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.uniform_(-0.5, 0.5, generator=g)
        bn.running_mean.uniform_(-1, 1, generator=g)
        bn.running_var.uniform_(0.5, 2, generator=g)
    return NeighbourGraph(index, n_support), [t.requires_grad_() for t in leaves], bn, fc


def _run(graph, leaves, bn, fc, grad, **kwargs):
    """Output, the gradient of every input and parameter, and the running statistics after one call."""
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    bn, fc = copy.deepcopy(bn), copy.deepcopy(fc)
    out = attention_logits(*leaves, bn, fc, graph, **kwargs)
    (out * grad).sum().backward()
    params = [bn.weight, bn.bias, fc.weight, fc.bias]
    return out.detach(), [t.grad for t in leaves + params], [bn.running_mean, bn.running_var, bn.num_batches_tracked]


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_fused_equals_composed_in_float64(train: bool, momentum: float | None) -> None:
    """Chunks of 1 point, of 7 (the last one partial) and one chunk for all: output, the gradients of all
    eight inputs and parameters, and the running statistics equal the composed ops' to 1e-12."""
    graph, leaves, bn, fc = _inputs(n=53, n_support=41, k=6, channels=16, dtype=torch.float64, seed=0)
    bn.train(train)
    bn.momentum = momentum
    grad = torch.randn(2, 53 * 6, dtype=torch.float64)
    out, grads, stats = _run(graph, leaves, bn, fc, grad, fused=False)
    for chunk_elements in (16 * 6, 7 * 16 * 6, 1 << 20):
        f_out, f_grads, f_stats = _run(graph, leaves, bn, fc, grad, fused=True, chunk_elements=chunk_elements)
        assert (f_out - out).abs().max() < 1e-12 * out.abs().max()
        for a, b in zip(f_grads, grads):
            assert a.shape == b.shape
            assert (a - b).abs().max() < 1e-12 * b.abs().max()
        for a, b in zip(f_stats, stats):
            assert torch.allclose(a, b, rtol=1e-12, atol=0)


def test_fused_passes_gradcheck() -> None:
    graph, leaves, bn, fc = _inputs(n=9, n_support=7, k=3, channels=8, dtype=torch.float64, seed=1)
    assert torch.autograd.gradcheck(lambda *t: attention_logits(*t, bn, fc, graph, fused=True), leaves)


def test_fused_float32_statistics_survive_a_large_mean() -> None:
    """Per-channel means 100x the spread: the moments are taken of centred inputs, so the float32 output stays
    within 1e-5 (relative to its largest entry) of float64, as the composed ops' does."""
    graph, leaves, bn, fc = _inputs(n=2000, n_support=2000, k=16, channels=32, dtype=torch.float32, seed=2,
                                    mean=100.0)
    exact = _run(graph, [t.double() for t in leaves], copy.deepcopy(bn).double(), copy.deepcopy(fc).double(),
                 torch.ones(4, 32000, dtype=torch.float64), fused=False)[0]
    for fused in (True, False):
        out = _run(graph, leaves, bn, fc, torch.ones(4, 32000), fused=fused)[0]
        assert (out.double() - exact).abs().max() < 1e-5 * exact.abs().max()


def test_default_is_fused_on_the_cpu_and_composed_under_autocast() -> None:
    graph, leaves, bn, fc = _inputs(n=200, n_support=200, k=8, channels=16, dtype=torch.float32, seed=3)
    out = attention_logits(*leaves, bn, fc, graph)
    assert type(out.grad_fn).__name__ == "_AttentionLogitsBackward"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = attention_logits(*leaves, bn, fc, graph)
    assert type(low.grad_fn).__name__ != "_AttentionLogitsBackward"
    assert low.dtype == torch.bfloat16
    assert (low.float() - out).abs().max() < 0.05 * out.abs().max()  # bfloat16 keeps 8 bits


def test_shapes_that_do_not_fit_the_graph_are_a_clear_error() -> None:
    graph, leaves, bn, fc = _inputs(n=20, n_support=15, k=4, channels=8, dtype=torch.float32, seed=4)
    key, offset, hidden, weight = leaves
    with pytest.raises(ValueError, match=r"into 15 points"):
        attention_logits(key[:14], offset, hidden, weight, bn, fc, graph)
    with pytest.raises(ValueError, match=r"hidden \(3, 79\)"):
        attention_logits(key, offset, hidden[:, :79], weight, bn, fc, graph)


def _max_inputs(dtype: torch.dtype, seed: int):
    graph, (key, _, hidden, weight), bn, _ = _inputs(n=37, n_support=50, k=5, channels=16, dtype=dtype, seed=seed)
    with torch.no_grad():
        bn.weight[::3] *= -1  # channels where BatchNorm-ReLU decreases: their maximum is u's minimum
    return graph, [key, hidden.detach(), weight], bn


@pytest.mark.parametrize("train", [True, False])
def test_neighbour_max_fused_equals_composed_in_float64(train: bool) -> None:
    graph, (key, hidden, weight), bn = _max_inputs(torch.float64, seed=5)
    bn.train(train)
    grad = torch.randn(37, 16, dtype=torch.float64)

    def run(**kwargs):
        k, w, b = key.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_(), copy.deepcopy(bn)
        out = neighbour_max(k, hidden, w, b, graph, **kwargs)
        (out * grad).sum().backward()
        return [out.detach(), k.grad, w.grad, b.weight.grad, b.bias.grad, b.running_mean, b.running_var]

    composed = run(fused=False)
    assert (composed[0] > 0).float().mean() > 0.3  # a real mix of active and zeroed outputs
    for chunk_elements in (16 * 5, 4 * 16 * 5, 1 << 20):
        for a, b in zip(run(fused=True, chunk_elements=chunk_elements), composed):
            assert (a - b).abs().max() <= 1e-12 * b.abs().max()


def test_neighbour_max_passes_gradcheck_and_refuses_a_hidden_gradient() -> None:
    graph, (key, hidden, weight), bn = _max_inputs(torch.float64, seed=6)
    assert torch.autograd.gradcheck(lambda k, w: neighbour_max(k, hidden, w, bn, graph, fused=True), (key, weight))
    with pytest.raises(ValueError, match="no gradient"):
        neighbour_max(key, hidden.requires_grad_(), weight, bn, graph, fused=True)
    assert neighbour_max(key, hidden, weight, bn, graph).grad_fn is not None  # default: composed, differentiable


def test_inference_with_running_statistics_builds_no_graph_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eval mode without gradients needs neither the batch statistics nor a backward: no graph sums are built,
    and the output is the composed ops'."""
    import ctxir.nn.pair_norm as pair_norm

    graph, leaves, bn, fc = _inputs(n=30, n_support=30, k=4, channels=8, dtype=torch.float64, seed=7)
    bn.eval()
    with torch.no_grad():
        expected = attention_logits(*leaves, bn, fc, graph, fused=False)
        expected_max = neighbour_max(leaves[0], leaves[2], leaves[3], bn, graph, fused=False)
        monkeypatch.setattr(pair_norm, "_GraphSums", None)  # would fail if called
        assert torch.allclose(attention_logits(*leaves, bn, fc, graph, fused=True), expected, rtol=0, atol=1e-12)
        out_max = neighbour_max(leaves[0], leaves[2], leaves[3], bn, graph, fused=True)
        assert torch.allclose(out_max, expected_max, rtol=0, atol=1e-12)
