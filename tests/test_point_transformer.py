"""Point Transformer U-Net: exact parameter counts, shapes, gradients, batch independence, kNN reuse."""

import pytest
import torch

from ctxir.nn import PointTransformerUNet
from ctxir.nn import point_transformer as pt


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _batch(sizes: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(sum(sizes), 3, generator=g)
    batch = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
    return pos, batch


def test_published_configuration_parameter_count() -> None:
    assert _count(PointTransformerUNet(in_channels=6, out_channels=13)) == 7_767_729


@pytest.mark.parametrize("c_in,k", [(32, 4), (20, 4), (6, 13), (3, 4)])
def test_shrunk_configuration_formula(c_in: int, k: int) -> None:
    net = PointTransformerUNet(c_in, k, channels=(32, 32, 64, 64, 128), blocks=(1, 1, 1, 1, 1))
    assert _count(net) == 378_228 + 32 * c_in + 33 * k


def test_block_parameter_formula() -> None:
    for c in (32, 64, 128):
        assert _count(pt.PointTransformerBlock(c)) == 5 * c * c + c * c // 8 + c * c // 64 + 15 * c + c // 2 + 18


def test_output_shapes_unequal_clouds_and_gradients() -> None:
    sizes = [700, 300, 1100]
    pos, batch = _batch(sizes)
    feats = torch.cat([pos, torch.rand_like(pos)], 1)
    net = PointTransformerUNet(6, 7, channels=(16, 32, 32, 64), blocks=(1, 1, 2, 1), neighbours=(8, 8, 8, 8))
    out = net(pos, feats, batch)
    assert out.shape == (sum(sizes), 7)
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in net.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero


def test_eval_output_of_a_cloud_does_not_depend_on_other_clouds() -> None:
    net = PointTransformerUNet(3, 5, channels=(16, 32, 32), blocks=(1, 1, 1), neighbours=(8, 8, 8))
    # give BatchNorm non-trivial running statistics first
    pos, batch = _batch([400, 500], seed=1)
    net.train()
    net(pos, pos, batch)
    net.eval()
    alone = net(pos[:400], pos[:400])
    together = net(pos, pos, batch)
    assert torch.allclose(together[:400], alone, atol=1e-5)
    other, _ = _batch([640], seed=2)
    both = torch.cat([other, pos[:400]])
    b = torch.cat([torch.zeros(640), torch.ones(400)]).long()
    assert torch.allclose(net(both, both, b)[640:], alone, atol=1e-5)


def test_each_level_knn_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_knn = pt.knn

    def counting_knn(*args, **kwargs):
        calls.append(args[2])
        return real_knn(*args, **kwargs)

    monkeypatch.setattr(pt, "knn", counting_knn)
    pos, batch = _batch([1024, 1024])
    net = PointTransformerUNet(3, 32)  # 5 levels, 13 encoder + 5 decoder blocks
    net(pos, pos, batch)
    # level 0: self kNN; levels 1-4: self kNN, transition-down grouping, transition-up 3-NN
    assert len(calls) == 1 + 3 * 4


def test_sampling_counts_per_level() -> None:
    pos, batch = _batch([1000, 257])
    levels = pt.build_pyramid(pos, batch, [8, 16, 16, 16, 16])
    counts = [torch.bincount(level.batch).tolist() for level in levels]
    assert counts == [[1000, 257], [250, 64], [62, 16], [15, 4], [3, 1]]
    for level in levels:
        assert torch.equal(level.batch[level.neighbours], level.batch[:, None].expand_as(level.neighbours))


def test_wrong_feature_width_is_a_clear_error() -> None:
    net = PointTransformerUNet(6, 4, channels=(16, 32), blocks=(1, 1), neighbours=(8, 8))
    pos = torch.rand(100, 3)
    with pytest.raises(ValueError, match=r"\(100, 6\)"):
        net(pos, pos)
