"""Context module: the paper's exact size, the ablation variants, and that it uses context."""

import pytest
import torch

from ctxir.nn import ContextModule


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_default_has_exactly_379384_parameters() -> None:
    assert _count(ContextModule()) == 379_384


@pytest.mark.parametrize("l", [1, 2, 4, 8])
def test_any_output_width(l: int) -> None:
    module = ContextModule(out_channels=l)
    assert _count(module) == 378_228 + 32 * 32 + 33 * l
    pos = torch.rand(600, 3)
    assert module(pos, torch.randn(600, 32)).shape == (600, l)


def test_ablation_variants_build_and_run() -> None:
    pos = torch.rand(2 * 512, 3)
    enc = torch.randn(2 * 512, 32)
    batch = torch.arange(2).repeat_interleave(512)
    variants = {
        "mlp": ContextModule(kind="mlp"),
        "3 scales": ContextModule(num_scales=3),
        "more blocks": ContextModule(blocks=(1, 2, 3, 5, 2)),
        "more channels": ContextModule(channels=(32, 64, 128, 256, 512)),
    }
    sizes = {name: _count(m) for name, m in variants.items()}
    # mlp: 32*64+64+128, 64*64+64+128, 64*4+4
    assert sizes["mlp"] == 2240 + 4288 + 260
    assert sizes["3 scales"] < 379_384 < sizes["more blocks"] < sizes["more channels"]
    for module in variants.values():
        assert module(pos, enc, batch).shape == (1024, 4)
    with pytest.raises(ValueError, match="num_scales"):
        ContextModule(num_scales=6)
    with pytest.raises(ValueError, match="kind"):
        ContextModule(kind="gnn")


def test_transformer_sees_other_points_mlp_does_not() -> None:
    pos = torch.rand(512, 3)
    enc = torch.randn(512, 32)
    changed = enc.clone()
    changed[256:] += 3.0  # alter the far half of the encodings
    for kind, uses_context in (("transformer", True), ("mlp", False)):
        module = ContextModule(kind=kind).eval()
        a, b = module(pos, enc)[:256], module(pos, changed)[:256]
        assert (not torch.allclose(a, b, atol=1e-6)) == uses_context, kind
