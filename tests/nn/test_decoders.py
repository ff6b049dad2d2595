"""RangeUDF decoders: non-negative distances, query-position blindness, scale without all-pairs matrices."""

import pytest
import torch

from ctxir.nn import SemanticDecoder, UDFDecoder, query_neighbours
from ctxir.nn import ops


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _scene(n: int = 500, m: int = 300, clouds: int = 2, d: int = 32):
    pos = torch.rand(n * clouds, 3) - 0.5
    feats = torch.randn(n * clouds, d)
    queries = torch.rand(m * clouds, 3) - 0.5
    pb = torch.arange(clouds).repeat_interleave(n)
    qb = torch.arange(clouds).repeat_interleave(m)
    return pos, feats, queries, pb, qb


def test_udf_is_non_negative_and_shaped() -> None:
    pos, feats, queries, pb, qb = _scene()
    dec = UDFDecoder(32)
    torch.nn.init.constant_(dec.out.bias, -5.0)  # push pre-activations negative: output must clamp at 0
    out = dec(pos, feats, queries, pb, qb)
    assert out.shape == (600,)
    assert bool((out >= 0).all())
    assert (out == 0).any()


def test_parameter_counts_follow_the_layer_recipe() -> None:
    # geometry 10*32+64; pool score 64*64, out 64*32+64; mlp 35*512+1024, 512*32+64, 32*32+64; out 33
    assert _count(UDFDecoder(32)) == 384 + 4096 + 2112 + 18944 + 16448 + 1088 + 33
    # pool score 36*36, out 36*32+64; mlp 32*64+128, 64*32+64; out 33*20
    assert _count(SemanticDecoder(33, 20)) == 1296 + 1216 + 2176 + 2112 + 660


def test_semantic_decoder_does_not_see_the_query_position() -> None:
    pos = torch.rand(200, 3) - 0.5
    feats = torch.randn(200, 36)
    dec = SemanticDecoder(36, 13).eval()
    q1 = pos[:1] + torch.tensor([[0.001, 0.0, 0.0]])
    q2 = pos[:1] + torch.tensor([[0.0, -0.0012, 0.0005]])
    n1, n2 = query_neighbours(pos, q1), query_neighbours(pos, q2)
    assert set(n1[0].tolist()) == set(n2[0].tolist())
    l1, l2 = dec(pos, feats, q1), dec(pos, feats, q2)
    assert torch.equal(l1, l2)
    # while the UDF decoder does see it
    udf = UDFDecoder(36).eval()
    assert not torch.equal(udf(pos, feats, q1), udf(pos, feats, q2))


def test_shared_neighbours_give_same_result() -> None:
    pos, feats, queries, pb, qb = _scene()
    dec = UDFDecoder(32).eval()
    nb = query_neighbours(pos, queries, pb, qb, 4)
    assert torch.equal(dec(pos, feats, queries, pb, qb), dec(pos, feats, queries, neighbours=nb))


def test_clouds_do_not_mix() -> None:
    pos, feats, queries, pb, qb = _scene(n=300, m=100)
    dec = SemanticDecoder(32, 5).eval()
    together = dec(pos, feats, queries, pb, qb)
    alone = dec(pos[300:], feats[300:], queries[100:])
    assert torch.allclose(together[100:], alone, atol=1e-6)


def test_gradients_reach_features_and_parameters() -> None:
    pos, feats, queries, pb, qb = _scene(n=200, m=100)
    feats.requires_grad_(True)
    dec = SemanticDecoder(32, 4)
    dec(pos, feats, queries, pb, qb).logsumexp(1).sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert all(p.grad is not None for p in dec.parameters())


def test_50k_queries_against_10k_points_without_all_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    largest = []
    real_cdist = torch.cdist

    def watched_cdist(a, b, *args, **kwargs):
        largest.append(a.shape[0] * b.shape[0])
        return real_cdist(a, b, *args, **kwargs)

    monkeypatch.setattr(torch, "cdist", watched_cdist)
    pos = torch.rand(10240, 3) - 0.5
    feats = torch.randn(10240, 32)
    queries = torch.rand(50000, 3) - 0.5
    with torch.no_grad():
        for backend in ("cdist", None):
            out = UDFDecoder(32, knn_backend=backend).eval()(pos, feats, queries)
            assert out.shape == (50000,) and bool((out >= 0).all())
    assert largest and max(largest) <= 4096 * 10240 < 50000 * 10240
    assert ops.resolve_backend(None, pos.device) == "kdtree"


def test_feature_width_mismatch_is_a_clear_error() -> None:
    pos, feats, queries, pb, qb = _scene(d=32)
    with pytest.raises(ValueError, match="expected features"):
        SemanticDecoder(36, 4)(pos, feats, queries, pb, qb)


def test_udf_output_layer_starts_at_one_percent_of_the_default_scale() -> None:
    torch.manual_seed(0)
    default = UDFDecoder(32, output_init_scale=1.0)
    torch.manual_seed(0)
    small = UDFDecoder(32)  # the library default: 0.01
    torch.testing.assert_close(small.out.weight, 0.01 * default.out.weight)
    torch.testing.assert_close(small.out.bias, 0.01 * default.out.bias)
    pos, feats, queries, pb, qb = _scene()
    with torch.no_grad():
        raw = small.eval()(pos, feats, queries, pb, qb, rectify=False)
    assert float(raw.abs().max()) < 0.05  # of the targets' order, far inside the loss's clamp (0.1)


def test_plane_prior_decoder_starts_as_a_plane_fit_and_learns_a_correction() -> None:
    from ctxir.eval.baselines import plane_fit_udf
    from ctxir.nn import PlanePriorUDFDecoder

    torch.manual_seed(0)
    plane = torch.rand(800, 3) - 0.5
    plane[:, 2] = 0.0  # the surface z = 0
    feats = torch.randn(800, 32)
    queries = torch.rand(400, 3) * 0.6 - 0.3
    queries[:, 2] *= 0.1
    decoder = PlanePriorUDFDecoder(32).eval()
    pred = decoder(plane, feats, queries)
    exact = queries[:, 2].abs()
    assert float((pred - exact).detach().abs().max()) < 0.01  # the correction starts near 0: a plane fit
    assert float((plane_fit_udf(plane, queries) - exact).abs().max()) < 1e-6
    assert _count(decoder) == _count(UDFDecoder(32)) + 64 + 1  # + the per-neighbour plane score
    queries.requires_grad_(True)
    decoder(plane, feats, queries).sum().backward()
    assert torch.allclose(queries.grad[:, 2].abs(), torch.ones(400), atol=0.05)  # ∇|z| (extraction needs it)
