"""Point ops: every kNN backend equals the brute-force reference; FPS and interpolation are exact."""

import numpy as np
import pytest
import torch

from ctxir.nn.ops import (
    BACKEND_ENV,
    available_backends,
    farthest_point_sampling,
    interpolate_knn,
    knn,
    resolve_backend,
    three_nn_interpolate,
)


def _random_batch(sizes: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(sum(sizes), 3, generator=g)
    batch = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
    return pos, batch


def _sq_dist(support: torch.Tensor, query: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return (support[idx].double() - query[:, None, :].double()).pow(2).sum(-1)


@pytest.mark.parametrize("backend", [b for b in available_backends() if b != "brute"])
@pytest.mark.parametrize("k", [1, 4, 16])
def test_backends_match_brute_force(backend: str, k: int) -> None:
    support, sb = _random_batch([300, 57, 1000], seed=1)
    query, qb = _random_batch([200, 90, 333], seed=2)
    ref = knn(support, query, k, sb, qb, backend="brute")
    got = knn(support, query, k, sb, qb, backend=backend)
    assert got.shape == (query.shape[0], k) and got.dtype == torch.long
    # never crosses clouds
    assert torch.equal(sb[got], qb[:, None].expand(-1, k))
    # distances equal; indices equal except at exact ties
    d_ref, d_got = _sq_dist(support, query, ref), _sq_dist(support, query, got)
    assert torch.allclose(d_got, d_ref, rtol=0, atol=1e-6)
    assert (got == ref).float().mean() > 0.999
    # nearest first
    assert bool((d_got[:, 1:] >= d_got[:, :-1] - 1e-7).all())


@pytest.mark.parametrize("backend", available_backends())
def test_small_cloud_padded_by_repeating_farthest(backend: str) -> None:
    support, sb = _random_batch([3, 50], seed=3)
    query, qb = _random_batch([5, 5], seed=4)
    idx = knn(support, query, 8, sb, qb, backend=backend)
    first = idx[:5]
    assert set(first[0].tolist()) == {0, 1, 2}
    assert bool((first[:, 3:] == first[:, 2:3]).all())
    assert bool((idx[5:] >= 3).all())


def test_self_query_includes_itself_first() -> None:
    pos, batch = _random_batch([100, 40], seed=5)
    idx = knn(pos, pos, 8, batch, batch)
    assert torch.equal(idx[:, 0], torch.arange(pos.shape[0]))


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setenv(BACKEND_ENV, "cdist")
    assert resolve_backend(None, cpu) == "cdist"
    assert resolve_backend("kdtree", cpu) == "kdtree"  # argument beats the environment
    monkeypatch.delenv(BACKEND_ENV)
    assert resolve_backend(None, cpu) == "kdtree"
    with pytest.raises(ValueError, match="unknown kNN backend"):
        resolve_backend("faiss", cpu)
    with pytest.raises(ValueError, match="only handles CPU"):
        resolve_backend("kdtree", torch.device("meta"))


def test_unsorted_batch_rejected() -> None:
    pos = torch.rand(4, 3)
    with pytest.raises(ValueError, match="sorted"):
        knn(pos, pos, 2, torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]))


def _fps_reference(pos: np.ndarray, m: int) -> list[int]:
    chosen = [0]
    mind = np.full(len(pos), np.inf)
    for _ in range(m - 1):
        mind = np.minimum(mind, ((pos - pos[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(mind.argmax()))
    return chosen


def test_farthest_point_sampling_matches_reference_per_cloud() -> None:
    sizes = [120, 37, 401]
    pos, batch = _random_batch(sizes, seed=6)
    idx = farthest_point_sampling(pos, batch, 0.25)
    expected, start = [], 0
    for n in sizes:
        expected += [start + i for i in _fps_reference(pos[start : start + n].numpy(), n // 4)]
        start += n
    assert idx.tolist() == expected
    assert torch.bincount(batch[idx]).tolist() == [n // 4 for n in sizes]


def test_fps_deterministic_and_spread() -> None:
    pos, batch = _random_batch([2000], seed=7)
    a = farthest_point_sampling(pos, batch, 0.01)
    assert torch.equal(a, farthest_point_sampling(pos, batch, 0.01))
    assert a[0] == 0 and len(set(a.tolist())) == 20
    # farthest sampling spreads points: min pairwise distance beats a random subset's
    d = torch.cdist(pos[a], pos[a]) + torch.eye(20) * 9
    r = torch.cdist(pos[:20], pos[:20]) + torch.eye(20) * 9
    assert d.min() > r.min()


def test_interpolation_reproduces_linear_field_at_sample_points_and_weights() -> None:
    coarse, cb = _random_batch([50, 60], seed=8)
    feat = torch.randn(110, 5)
    # at the coarse points themselves the feature is returned exactly
    out = three_nn_interpolate(feat, coarse, coarse, cb, cb)
    assert torch.allclose(out, feat, atol=1e-5)
    # weights are 1/(d + eps), normalised: check one point by hand
    fine = torch.tensor([[0.5, 0.5, 0.5]])
    idx = knn(coarse[:50], fine, 3)
    d = (coarse[idx[0]] - fine[0]).norm(dim=1)
    w = (1 / (d + 1e-8)) / (1 / (d + 1e-8)).sum()
    expected = (feat[idx[0]] * w[:, None]).sum(0)
    assert torch.allclose(interpolate_knn(feat[:50], coarse[:50], fine, idx)[0], expected, atol=1e-6)


def test_gather_rows_equals_advanced_indexing_with_gradients() -> None:
    from ctxir.nn.ops import gather_rows

    x = torch.randn(50, 7, requires_grad=True)
    index = torch.randint(0, 50, (30, 5))
    a = gather_rows(x, index)
    assert torch.equal(a, x[index])
    (a * torch.arange(7.0)).sum().backward()
    g1 = x.grad.clone()
    x.grad = None
    (x[index] * torch.arange(7.0)).sum().backward()
    assert torch.allclose(g1, x.grad)


def test_gather_columns_and_linear_channels_first_equal_their_row_forms() -> None:
    from ctxir.nn.ops import gather_columns, linear_channels_first

    torch.manual_seed(0)
    x = torch.randn(40, 6, dtype=torch.float64)
    index = torch.randint(0, 40, (25, 4))
    assert torch.equal(gather_columns(x.t(), index), x[index.reshape(-1)].t())
    for bias in (True, False):
        layer = torch.nn.Linear(6, 9, bias=bias).double()
        assert torch.allclose(linear_channels_first(layer, x.t()), layer(x).t(), rtol=0, atol=1e-12)


def _grouped_sum_loop(values: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Brute-force reference: one output entry at a time."""
    channels, groups = values.shape[0], weights.shape[0]
    n, k = index.shape
    out = torch.zeros(channels, n, dtype=values.dtype)
    for c in range(channels):
        for i in range(n):
            out[c, i] = sum(weights[c % groups, i, j] * values[c, index[i, j]] for j in range(k))
    return out


def test_grouped_neighbour_sum_equals_the_loop_and_its_gradients_check() -> None:
    from ctxir.nn.ops import grouped_neighbour_sum

    torch.manual_seed(0)
    values = torch.randn(8, 11, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 11, (7, 3))
    weights = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    out = grouped_neighbour_sum(values, index, weights)
    assert out.shape == (8, 7)
    assert torch.allclose(out, _grouped_sum_loop(values.detach(), index, weights.detach()), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda v, w: grouped_neighbour_sum(v, index, w), (values, weights))


def test_neighbour_graph_is_reused_across_group_counts_and_its_transpose_is_exact() -> None:
    """One graph serves layers with different channel groupings; its transposed structure, as a dense matrix,
    is the transpose of the block-diagonal one (unsorted and repeated neighbours included), and the sum's values
    and gradients, sparse or gathered, equal advanced indexing's."""
    from ctxir.nn.ops import NeighbourGraph, grouped_neighbour_sum

    torch.manual_seed(1)
    index = torch.randint(0, 9, (6, 4))
    index[0] = torch.tensor([3, 3, 3, 5])  # padded rows repeat a neighbour
    graph = NeighbourGraph(index, 9)
    for groups in (1, 3, 2):
        crow, col = graph.block_diagonal(groups)
        values = torch.arange(1.0, 1 + groups * 24, dtype=torch.float64)
        dense = torch.sparse_csr_tensor(crow, col, values, size=(groups * 6, groups * 9),
                                        check_invariants=False).to_dense()
        crow_t, col_t, order = graph.transposed(groups)
        values_t = values.view(groups, 24)[:, order].reshape(-1)
        dense_t = torch.sparse_csr_tensor(crow_t, col_t, values_t, size=(groups * 9, groups * 6),
                                          check_invariants=False).to_dense()
        assert torch.equal(dense_t, dense.t())
        assert crow.dtype == col.dtype == crow_t.dtype == torch.int32

        values = torch.randn(6 * groups, 9, dtype=torch.float64, requires_grad=True)
        weights = torch.randn(groups, 6, 4, dtype=torch.float64, requires_grad=True)
        grad = torch.randn(6 * groups, 6, dtype=torch.float64)
        results = []
        for sparse in (True, False, None):  # the sparse product, the gathered form, the default (sparse on CPU)
            v, w = values.detach().clone().requires_grad_(), weights.detach().clone().requires_grad_()
            out = grouped_neighbour_sum(v, graph, w, sparse=sparse)
            (out * grad).sum().backward()
            results.append((out, v.grad, w.grad))
        plain_v, plain_w = values.detach().clone().requires_grad_(), weights.detach().clone().requires_grad_()
        plain = (plain_v[:, index].view(6, groups, 6, 4) * plain_w).sum(-1).view(6 * groups, 6)
        (plain * grad).sum().backward()
        for out, grad_v, grad_w in results:
            assert torch.allclose(out, plain, rtol=0, atol=1e-12)
            assert torch.allclose(grad_v, plain_v.grad, rtol=0, atol=1e-12)
            assert torch.allclose(grad_w, plain_w.grad, rtol=0, atol=1e-12)
    assert sorted(graph._blocks) == sorted(graph._transposed) == [1, 2, 3]  # built once per grouping


def test_neighbour_graph_sums_equal_loops_and_share_one_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    """``sum_over_neighbours``, ``sum_over_queries`` and ``sum_over_pairs`` (repeated neighbours counted each
    time) equal loops over the pairs; every transposed structure comes from one argsort."""
    from ctxir.nn.ops import NeighbourGraph

    torch.manual_seed(2)
    index = torch.randint(0, 9, (6, 4))
    index[2] = 7  # a padded row
    graph = NeighbourGraph(index, 9)
    calls = []
    argsort = torch.argsort
    monkeypatch.setattr(torch, "argsort", lambda *a, **k: calls.append(1) or argsort(*a, **k))
    support, queries = torch.randn(9, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    pairs = torch.randn(6 * 4, 5, dtype=torch.float64)
    by_query, by_support = torch.zeros(6, 5, dtype=torch.float64), torch.zeros(9, 5, dtype=torch.float64)
    pairs_by_support = torch.zeros(9, 5, dtype=torch.float64)
    for i in range(6):
        for p, j in enumerate(index[i].tolist()):
            by_query[i] += support[j]
            by_support[j] += queries[i]
            pairs_by_support[j] += pairs[4 * i + p]
    assert torch.allclose(graph.sum_over_neighbours(support), by_query, rtol=0, atol=1e-12)
    assert torch.allclose(graph.sum_over_queries(queries), by_support, rtol=0, atol=1e-12)
    assert torch.allclose(graph.sum_over_pairs(pairs), pairs_by_support, rtol=0, atol=1e-12)
    graph.transposed(3)
    assert len(calls) == 1
    assert torch.equal(graph.by_column()[1], torch.bincount(index.reshape(-1), minlength=9))


def test_pair_weighted_sum_equals_the_broadcast_product_and_its_gradients_check() -> None:
    from ctxir.nn.ops import pair_weighted_sum

    torch.manual_seed(4)
    per_pair = torch.randn(3, 5 * 4, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(2, 5, 4, dtype=torch.float64, requires_grad=True)
    expected = (per_pair.view(3, 1, 5, 4) * weights).sum(-1)
    assert torch.allclose(pair_weighted_sum(per_pair, weights), expected, rtol=0, atol=1e-14)
    assert torch.autograd.gradcheck(pair_weighted_sum, (per_pair, weights))
    assert torch.autograd.gradcheck(lambda w: pair_weighted_sum(per_pair.detach(), w), (weights,))
    with pytest.raises(ValueError, match="do not fit"):
        pair_weighted_sum(per_pair[:, :-1], weights)


def test_relative_positions_are_shared_and_keep_gradients() -> None:
    from ctxir.nn.ops import NeighbourGraph

    torch.manual_seed(5)
    pos = torch.randn(7, 3, dtype=torch.float64)
    index = torch.randint(0, 7, (7, 3))
    graph = NeighbourGraph(index, 7)
    rel = graph.relative_positions(pos)
    assert torch.equal(rel, (pos[index] - pos[:, None]).permute(2, 0, 1).reshape(3, 21))
    assert graph.relative_positions(pos) is rel  # every block of a level shares one
    assert graph.relative_positions(pos.clone()) is not rel
    moving = pos.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: NeighbourGraph(index, 7).relative_positions(p), (moving,))
    queries = torch.randn(4, 3, dtype=torch.float64)  # a grouping into other points: p_j − q_i
    grouping = NeighbourGraph(index[:4], 7)
    assert torch.equal(grouping.relative_positions(pos, queries),
                       (pos[index[:4]] - queries[:, None]).permute(2, 0, 1).reshape(3, 12))
    assert grouping.relative_positions(pos, queries) is grouping.relative_positions(pos, queries)


def test_grouped_neighbour_sum_rejects_mismatched_shapes() -> None:
    from ctxir.nn.ops import NeighbourGraph, grouped_neighbour_sum

    with pytest.raises(ValueError, match="G dividing C"):
        grouped_neighbour_sum(torch.randn(6, 5), torch.zeros(4, 3, dtype=torch.long), torch.randn(4, 4, 3))
    with pytest.raises(ValueError, match="into 7 points"):  # a graph built for another point set
        grouped_neighbour_sum(torch.randn(8, 5), NeighbourGraph(torch.zeros(4, 3, dtype=torch.long), 7),
                              torch.randn(4, 4, 3))
