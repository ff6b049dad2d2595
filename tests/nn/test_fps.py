"""Farthest point sampling: every backend equals the CPU reference exactly, and the encoder reads nothing
back from the device but the clouds' sizes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from ctxir.nn import PointTransformerUNet
from ctxir.nn import ops
from ctxir.nn import point_transformer as pt
from ctxir.nn.ops import (
    FPS_BACKEND_ENV,
    cloud_sizes,
    farthest_point_sampling,
    has_torch_cluster,
    resolve_fps_backend,
    sampled_sizes,
)

CPU_BACKENDS = ["numpy", "numpy-slab", "numpy-batched", "torch"] + (["cluster"] if has_torch_cluster() else [])
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SIZES = [120, 37, 401, 1, 5, 4, 64]


def _clouds(sizes: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(sum(sizes), 3, generator=g)
    batch = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
    return pos, batch


def _reference(pos: np.ndarray, m: int) -> list[int]:
    """One cloud, one point at a time, float32 distances summed x, then y, then z."""
    chosen = [0]
    mind = np.full(len(pos), np.inf, dtype=np.float32)
    for _ in range(m - 1):
        diff = pos - pos[chosen[-1]]
        sq = diff * diff
        mind = np.minimum(mind, (sq[:, 0] + sq[:, 1]) + sq[:, 2])
        chosen.append(int(mind.argmax()))
    return chosen


def _expected(pos: torch.Tensor, sizes: list[int], ratio: float) -> list[int]:
    out, start = [], 0
    for n, m in zip(sizes, sampled_sizes(sizes, ratio)):
        out += [start + i for i in _reference(pos[start : start + n].numpy(), m)]
        start += n
    return out


@pytest.fixture
def fps_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A backend name; ``numpy-slab`` / ``numpy-batched`` force one of the numpy backend's two loops."""
    name = request.param
    if name.startswith("numpy-"):
        monkeypatch.setattr(ops, "SLAB_STEP_US", 0.0 if name == "numpy-slab" else float("inf"))
    return name.split("-")[0]


@pytest.mark.parametrize("fps_backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0, 0.1])
def test_every_cpu_backend_equals_the_reference(fps_backend: str, ratio: float) -> None:
    backend = fps_backend
    pos, batch = _clouds(SIZES, seed=1)
    got = farthest_point_sampling(pos, batch, ratio, backend=backend)
    assert got.dtype == torch.long
    assert got.tolist() == _expected(pos, SIZES, ratio)


@pytest.mark.parametrize("fps_backend", CPU_BACKENDS, indirect=True)
def test_large_batch_equal_across_backends(fps_backend: str) -> None:
    """Four clouds of 10,240 points, as in one training batch: identical to the numpy backend."""
    backend = fps_backend
    pos, batch = _clouds([10240] * 4, seed=2)
    reference = farthest_point_sampling(pos, batch, 0.25, backend="numpy")
    assert torch.equal(farthest_point_sampling(pos, batch, 0.25, backend=backend), reference)
    assert torch.bincount(batch[reference]).tolist() == [2560] * 4


def _awkward_clouds() -> dict[str, torch.Tensor]:
    """Clouds that stress the numpy backend's slab bound and its tie rule."""
    g = torch.Generator().manual_seed(11)
    grid = torch.stack(torch.meshgrid(*[torch.arange(6.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    cube = torch.rand(500, 3, generator=g)
    return {
        "grid, shuffled (exact ties everywhere)": grid[torch.randperm(len(grid), generator=g)],
        "duplicates (ties at the maximum)": cube[torch.randint(0, 40, (300,), generator=g)],
        "fewer distinct points than samples": cube[:3].repeat(20, 1),
        "far from the origin": cube * 0.01 + 1e4,
        "tiny": cube * 1e-21,
        "long along z": cube * torch.tensor([0.1, 0.2, 30.0]),
        "a line, largest coordinates first": torch.linspace(1, 0, 200)[:, None] * torch.tensor([[0.0, 1.0, 0.0]]),
    }


@pytest.mark.parametrize("fps_backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("name", list(_awkward_clouds()))
def test_awkward_clouds_equal_the_reference(fps_backend: str, name: str) -> None:
    backend = fps_backend
    pos = _awkward_clouds()[name]
    for ratio in (0.25, 1.0):
        got = farthest_point_sampling(pos, None, ratio, backend=backend)
        assert got.tolist() == _reference(pos.numpy(), sampled_sizes([len(pos)], ratio)[0]), ratio


@pytest.mark.parametrize(("sizes", "loop"), [([10240], "slab"), ([10240] * 4, "slab"), ([2048] * 2, "batched"),
                                             ([2048] * 4, "batched"), ([1024], "batched")])
def test_numpy_backend_picks_the_faster_loop(sizes: list[int], loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cost model's choices at the sizes it was measured at (each loop's own exactness is tested above)."""
    calls: list[str] = []
    for name in ("slab", "batched"):
        original = getattr(ops, f"_fps_numpy_{name}")
        monkeypatch.setattr(ops, f"_fps_numpy_{name}", lambda *a, _n=name, _f=original: calls.append(_n) or _f(*a))
    pos, batch = _clouds(sizes, seed=8)
    farthest_point_sampling(pos, batch, 0.25, backend="numpy")
    assert set(calls) == {loop}


@CUDA
@pytest.mark.parametrize("backend", ["torch"] + (["cluster"] if has_torch_cluster() else []))
def test_cuda_backends_equal_the_cpu_reference(backend: str) -> None:
    for sizes, seed in ((SIZES, 3), ([10240] * 4, 4)):
        pos, batch = _clouds(sizes, seed)
        reference = farthest_point_sampling(pos, batch, 0.25, backend="numpy")
        got = farthest_point_sampling(pos.cuda(), batch.cuda(), 0.25, backend=backend)
        assert got.device.type == "cuda"
        assert torch.equal(got.cpu(), reference)


def test_sizes_argument_and_its_checks() -> None:
    pos, batch = _clouds(SIZES, seed=5)
    assert cloud_sizes(batch) == SIZES
    assert cloud_sizes(batch, num_clouds=9) == SIZES + [0, 0]
    a = farthest_point_sampling(pos, batch, 0.25)
    assert torch.equal(farthest_point_sampling(pos, None, 0.25, sizes=SIZES), a)
    with pytest.raises(ValueError, match="sizes sum to"):
        farthest_point_sampling(pos, None, 0.25, sizes=SIZES[:-1])
    with pytest.raises(ValueError, match="sorted"):
        cloud_sizes(torch.tensor([0, 1, 0]))
    assert sampled_sizes([0, 1, 3, 4, 7, 8], 0.25) == [0, 1, 1, 1, 1, 2]


def test_fps_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_fps_backend(None, cpu) == "numpy"
    monkeypatch.setenv(FPS_BACKEND_ENV, "torch")
    assert resolve_fps_backend(None, cpu) == "torch"
    assert resolve_fps_backend("numpy", cpu) == "numpy"  # argument beats the environment
    assert resolve_fps_backend("auto", torch.device("meta")) == ("cluster" if has_torch_cluster() else "torch")
    with pytest.raises(ValueError, match="unknown FPS backend"):
        resolve_fps_backend("random", cpu)
    with pytest.raises(ValueError, match="only handles CPU"):
        resolve_fps_backend("numpy", torch.device("meta"))


HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__index__", "__float__")


@contextlib.contextmanager
def recording_host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record every Python-level tensor method that moves data to the host (a device sync on a GPU)."""
    calls: list[str] = []
    with monkeypatch.context() as patch:
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def recorder(self, *args, _name=name, _original=original, **kwargs):
                calls.append(_name)
                return _original(self, *args, **kwargs)

            patch.setattr(torch.Tensor, name, recorder)
        yield calls


def test_encoder_forward_reads_only_the_cloud_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """With device-agnostic backends (FPS 'torch', kNN 'cdist') the whole forward pass makes one host read."""
    net = PointTransformerUNet(3, 8, channels=(16, 32, 32), blocks=(1, 1, 1), knn_backend="cdist",
                               neighbours=(8, 8, 8), fps_backend="torch")
    pos, batch = _clouds([300, 200], seed=6)
    expected = net(pos, pos, batch)
    with recording_host_reads(monkeypatch) as calls:
        out = net(pos, pos, batch)
    assert calls == ["tolist"]
    assert torch.equal(out, expected)
    with recording_host_reads(monkeypatch) as calls:
        pt.build_pyramid(pos, batch, [8, 8, 8], sizes=[300, 200], fps_backend="torch", knn_backend="cdist")
    assert calls == []


@CUDA
def test_cuda_pyramid_never_synchronises() -> None:
    """On CUDA, with the sizes known, building the pyramid with the torch backends never syncs the device."""
    pos, batch = _clouds([2048, 1024], seed=7)
    pos, batch = pos.cuda(), batch.cuda()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        levels = pt.build_pyramid(pos, batch, [8, 16, 16], sizes=[2048, 1024], fps_backend="torch",
                                  knn_backend="cdist")
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    reference = pt.build_pyramid(pos.cpu(), batch.cpu(), [8, 16, 16])
    for level, ref in zip(levels, reference):
        assert torch.equal(level.pos.cpu(), ref.pos)
