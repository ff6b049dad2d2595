"""Benchmark of the shared modules: time, FLOP utilisation and peak memory of forward + backward.

Cases, each in a fresh process (so its peak resident memory can be read); times are medians over
``--repeats`` runs after one warm-up, and every ratio is taken between runs alternated in the same process:

* ``encoder vs reference``: the standard encoder (d = 32) at ``--points`` points against the same network run
  the way the published implementations run it (a brute-force kNN recomputed inside every layer, same
  weights, same output);
* ``encoder vs baseline`` (``--baseline PATH``, another checkout, e.g. ``git worktree add /tmp/base <commit>``):
  this checkout's encoder against that checkout's, same weights; the largest output difference in eval and
  train mode is reported; then (``--rounds``) each alone in fresh processes, alternating, with each side's
  peak resident memory;
* ``encoder vs PyG peer``: a U-Net of torch_geometric's ``PointTransformerConv`` (channels 32…512, one block per
  stage, k = 16; layers mirror ours: Linear-BN-ReLU, attention, BN-ReLU, Linear-BN, residual; position MLP
  3→3→C, attention MLP C→C/8→C since PyG has no channel groups; torch-cluster FPS and kNN, once per level)
  against our encoder built with the same shape, alternated in one process; then (``--rounds``) each alone in
  fresh processes, alternating, which is the fair figure (in one process the peer runs on a heap our step
  shaped, measured up to 1.5x slower than alone);
* ``encoder float32 vs float64`` (CPU): the train-mode error of the float32 forward + backward against the same
  network in float64, for ours and the ``--baseline`` checkout's;
* ``encoder by part``: where the peer-shaped encoder's training step goes: the whole step, the sampling pyramid
  (farthest point sampling and every level's kNN; FPS and the input points' kNN also alone, as on the CPU they
  run side by side), and forward + backward of each level's block and transitions down and up, each timed alone
  on that level's tensors;
* ``context module``, ``UDF decoder`` and ``semantic decoder`` (``--queries`` queries);
* ``fps <backend>``: farthest point sampling of 4 clouds × ``--points`` at ratio 1/4 with every backend, and
  ``fps fpsample``: the ``fpsample`` package's exact FPS (``fps_sampling``, dev extra) on the same clouds, with
  how many of its samples differ from ours (float32 near-ties may be broken the other way);
* ``grouped sum sparse|gathered``: the attention's weighted neighbour sum (:func:`ctxir.nn.ops.grouped_neighbour_sum`,
  32 channels in 4 groups, k = 16) forward + backward as a sparse product and as gather-multiply-sum;
* ``knn <backend> self16|query4``: the kNN backends, and ``knn ckdtree``: scipy's ``cKDTree`` (``workers=-1``);
* ``full step`` (``--full-step``): encoder + UDF decoder + semantic decoder forward + backward on ``--device``
  for 4 clouds × ``--points`` points and 4 × ``--queries`` queries (the paper's per-GPU batch); on a Linux CPU
  also ``full step, freed memory retained``: the same after :func:`ctxir.core.memory.retain_freed_memory`
  (what the ``ctxir`` command does).

Every other case runs with glibc's default memory recycling, so that ours and the peers see the same, or with
``--retain`` every case keeps freed memory (both sides of each comparison alike). ``--clouds N`` runs the encoder
cases on N clouds of ``--points`` points (4: the paper's per-GPU batch).

FLOP utilisation: matmul FLOPs of one forward + backward (:class:`MatmulFlopCounter`: torch's formulas for dense
products, stored entries for sparse ones) over its median time,
as a fraction of this machine's fp32 matmul rate (best of 2048² ``torch.mm``, same threads, measured in the
same process).

    python benchmarks/bench_nn.py [--points 10240] [--clouds 1] [--queries 50000] [--repeats 5] [--threads N]
        [--baseline PATH] [--device cpu|cuda] [--full-step] [--rounds 3] [--retain] [--only CASE ...]

Prints a table and writes ``benchmarks/results/bench_nn.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ctxir.core.memory import retain_freed_memory
from ctxir.nn import ContextModule, PointTransformerUNet, SemanticDecoder, UDFDecoder
from ctxir.nn.ops import (
    NeighbourGraph,
    available_backends,
    batch_to_ptr,
    farthest_point_sampling,
    grouped_neighbour_sum,
    has_torch_cluster,
    knn,
)
from ctxir.nn.point_transformer import PointTransformerBlock, PointTransformerLayer, build_pyramid

RESULTS = Path(__file__).parent / "results" / "bench_nn.json"
RETAINED_STEP = "full step, freed memory retained"
PEER_OURS, PEER_ALONE = "peer shape: ours alone", "peer shape: PyG peer alone"
BASE_OURS, BASE_ALONE = "published: ours alone", "published: baseline alone"
ENCODER_CASES = {"encoder vs baseline", "encoder vs PyG peer", "encoder", "encoder by part", PEER_OURS, PEER_ALONE, BASE_OURS, BASE_ALONE}
"""The cases that run on ``--clouds`` clouds."""
PEER_CHANNELS = (32, 64, 128, 256, 512)
PEER_K = 16


# --- the reference: a straightforward CPU port of the published code (same weights, same maths) ---------


def brute_knn(support: Tensor, query: Tensor, k: int, sb: Tensor, qb: Tensor) -> Tensor:
    """An all-pairs distance matrix per cloud, then top-k (pointops' brute-force kNN query)."""
    sptr, qptr = batch_to_ptr(sb).tolist(), batch_to_ptr(qb).tolist()
    parts = []
    for b in range(len(sptr) - 1):
        d = torch.cdist(query[qptr[b] : qptr[b + 1]], support[sptr[b] : sptr[b + 1]])
        parts.append(d.topk(min(k, d.shape[1]), dim=1, largest=False).indices + sptr[b])
    return torch.cat(parts)


def loop_fps(pos: Tensor, batch: Tensor, ratio: float) -> Tensor:
    """Farthest point sampling one cloud at a time, one torch distance update per sample."""
    ptr = batch_to_ptr(batch).tolist()
    out = []
    for b in range(len(ptr) - 1):
        p = pos[ptr[b] : ptr[b + 1]]
        m = max(1, int(p.shape[0] * ratio))
        mind = torch.full((p.shape[0],), float("inf"))
        chosen = [0]
        for _ in range(m - 1):
            mind = torch.minimum(mind, (p - p[chosen[-1]]).pow(2).sum(1))
            chosen.append(int(mind.argmax()))
        out.append(torch.tensor(chosen) + ptr[b])
    return torch.cat(out)


def bn_transposed(bn: torch.nn.BatchNorm1d, x: Tensor) -> Tensor:
    """BatchNorm of an (n, k, C) tensor through the (n, C, k) transpose, as the published layers do."""
    return bn(x.transpose(1, 2).contiguous()).transpose(1, 2).contiguous()


def reference_layer(layer: PointTransformerLayer, x: Tensor, pos: Tensor, batch: Tensor, k: int) -> Tensor:
    with torch.no_grad():
        index = brute_knn(pos, pos, k, batch, batch)  # searched again in every layer
    n = x.shape[0]
    q, key, value = layer.linear_q(x), layer.linear_k(x), layer.linear_v(x)
    delta = layer.pos_fc2(torch.relu(bn_transposed(layer.pos_bn, layer.pos_fc1(pos[index] - pos[:, None]))))
    w = key[index] - q[:, None] + delta
    w = layer.w_fc1(torch.relu(bn_transposed(layer.w_bn1, w)))
    w = torch.softmax(layer.w_fc2(torch.relu(bn_transposed(layer.w_bn2, w))), dim=1)
    return ((value[index] + delta).view(n, k, layer.share_planes, -1) * w[:, :, None]).sum(1).view(n, -1)


def reference_block(block: PointTransformerBlock, x: Tensor, pos: Tensor, batch: Tensor, k: int) -> Tensor:
    y = torch.relu(block.bn1(block.fc1(x)))
    y = torch.relu(block.bn2(reference_layer(block.attention, y, pos, batch, k)))
    return torch.relu(x + block.bn3(block.fc3(y)))


def reference_forward(net: PointTransformerUNet, pos: Tensor, feats: Tensor, batch: Tensor) -> Tensor:
    """``net``'s forward the published way: every layer searches its neighbours by brute force."""
    with torch.no_grad():
        level_pos, level_batch = [pos], [batch]
        for _ in net.neighbours[1:]:
            keep = loop_fps(level_pos[-1], level_batch[-1], 1.0 / net.stride)
            level_pos.append(level_pos[-1][keep])
            level_batch.append(level_batch[-1][keep])
    skips, x = [], feats
    for i, k in enumerate(net.neighbours):
        down = net.down[i]
        if i == 0:
            x = torch.relu(down.bn(down.fc(x)))
        else:
            with torch.no_grad():
                group = brute_knn(level_pos[i - 1], level_pos[i], k, level_batch[i - 1], level_batch[i])
            grouped = torch.cat([level_pos[i - 1][group] - level_pos[i][:, None], x[group]], dim=-1)
            x = torch.relu(bn_transposed(down.bn, down.fc(grouped))).max(dim=1).values
        for block in net.encoder[i]:
            x = reference_block(block, x, level_pos[i], level_batch[i], k)
        skips.append(x)
    x = net.up_head(skips[-1], level_batch[-1], int(batch.max()) + 1)
    for block in net.decoder[-1]:
        x = reference_block(block, x, level_pos[-1], level_batch[-1], net.neighbours[-1])
    for i in range(len(level_pos) - 2, -1, -1):
        up = net.up[i]
        with torch.no_grad():
            index = brute_knn(level_pos[i + 1], level_pos[i], 3, level_batch[i + 1], level_batch[i])
        coarse = torch.relu(up.bn_up(up.fc_up(x)))
        dist = (level_pos[i + 1][index] - level_pos[i][:, None]).norm(dim=-1)
        weight = 1.0 / (dist + 1e-8)
        weight = weight / weight.sum(1, keepdim=True)
        x = torch.relu(up.bn_skip(up.fc_skip(skips[i]))) + (coarse[index] * weight[..., None]).sum(1)
        for block in net.decoder[i]:
            x = reference_block(block, x, level_pos[i], level_batch[i], net.neighbours[i])
    return net.head(x)


# --- the PyG peer: a U-Net of torch_geometric's PointTransformerConv --------------------------------------


def _peer_modules() -> tuple[Any, Any, Any]:
    """torch_geometric's conv and scatter, torch-cluster (imported on use: only the peer case needs them)."""
    import torch_cluster
    from torch_geometric.nn import PointTransformerConv
    from torch_geometric.utils import scatter

    return PointTransformerConv, scatter, torch_cluster


class PeerBlock(nn.Module):
    """Linear-BN-ReLU → PointTransformerConv → BN-ReLU → Linear-BN, residual add, ReLU (our block's layout)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        conv_cls, _, _ = _peer_modules()
        groups = channels // 8
        self.fc1, self.bn1 = nn.Linear(channels, channels, bias=False), nn.BatchNorm1d(channels)
        self.conv = conv_cls(
            channels, channels,
            pos_nn=nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, channels)),
            attn_nn=nn.Sequential(nn.BatchNorm1d(channels), nn.ReLU(), nn.Linear(channels, groups),
                                  nn.BatchNorm1d(groups), nn.ReLU(), nn.Linear(groups, channels)),
        )
        self.bn2 = nn.BatchNorm1d(channels)
        self.fc3, self.bn3 = nn.Linear(channels, channels, bias=False), nn.BatchNorm1d(channels)

    def forward(self, x: Tensor, pos: Tensor, edge_index: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.fc1(x)))
        y = torch.relu(self.bn2(self.conv(y, pos, edge_index)))
        return torch.relu(x + self.bn3(self.fc3(y)))


class PeerDown(nn.Module):
    """Per-edge Linear-BN-ReLU of ``[p_j − p_i, f_j]`` and a scatter max per sampled point."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.fc, self.bn = nn.Linear(in_channels + 3, out_channels, bias=False), nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor, pos: Tensor, sub_pos: Tensor, source: Tensor, target: Tensor) -> Tensor:
        _, scatter, _ = _peer_modules()
        edge = torch.relu(self.bn(self.fc(torch.cat([pos[source] - sub_pos[target], x[source]], dim=1))))
        return scatter(edge, target, dim=0, dim_size=sub_pos.shape[0], reduce="max")


class PeerUp(nn.Module):
    """Linear-BN-ReLU(skip) + 3-NN inverse-distance interpolation of Linear-BN-ReLU(coarse), by scatter."""

    def __init__(self, coarse_channels: int, fine_channels: int) -> None:
        super().__init__()
        self.skip = nn.Sequential(nn.Linear(fine_channels, fine_channels), nn.BatchNorm1d(fine_channels), nn.ReLU())
        self.up = nn.Sequential(nn.Linear(coarse_channels, fine_channels), nn.BatchNorm1d(fine_channels), nn.ReLU())

    def forward(self, skip: Tensor, pos: Tensor, coarse: Tensor, coarse_pos: Tensor, source: Tensor,
                target: Tensor) -> Tensor:
        _, scatter, _ = _peer_modules()
        weight = 1.0 / ((coarse_pos[source] - pos[target]).norm(dim=1, keepdim=True) + 1e-8)
        total = scatter(weight, target, dim=0, dim_size=pos.shape[0])
        up = scatter(self.up(coarse)[source] * weight, target, dim=0, dim_size=pos.shape[0]) / total
        return self.skip(skip) + up


def peer_shaped_encoder() -> PointTransformerUNet:
    """Our encoder at the peer's shape: channels 32…512, one block per stage, k = 16 everywhere."""
    return PointTransformerUNet(3, 32, channels=PEER_CHANNELS, blocks=(1,) * 5, neighbours=(PEER_K,) * 5)


class PeerUNet(nn.Module):
    """The peer: one PeerBlock per stage down and up (the bottom stage's twice, as ours), FPS by 4 between
    stages, k = 16 everywhere."""

    def __init__(self, in_channels: int, out_channels: int, channels: tuple[int, ...] = PEER_CHANNELS) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(in_channels, channels[0], bias=False), nn.BatchNorm1d(channels[0]),
                                  nn.ReLU())
        self.down = nn.ModuleList(PeerDown(a, b) for a, b in zip(channels[:-1], channels[1:]))
        self.encoder = nn.ModuleList(PeerBlock(c) for c in channels)
        self.bottom = nn.Sequential(nn.Linear(channels[-1], channels[-1]), nn.BatchNorm1d(channels[-1]), nn.ReLU())
        self.up = nn.ModuleList(PeerUp(b, a) for a, b in zip(channels[:-1], channels[1:]))
        self.decoder = nn.ModuleList(PeerBlock(c) for c in channels)  # the last one at the bottom, as ours
        self.head = nn.Linear(channels[0], out_channels)

    @staticmethod
    def edges(support: Tensor, query: Tensor, k: int, support_batch: Tensor, query_batch: Tensor) -> Tensor:
        """torch-cluster's kNN as PyG edges: row 0 the neighbour (source), row 1 the query (target)."""
        _, _, cluster = _peer_modules()
        return cluster.knn(support, query, k, support_batch, query_batch).flip(0)

    def forward(self, pos: Tensor, features: Tensor, batch: Tensor) -> Tensor:
        _, _, cluster = _peer_modules()
        levels = [(pos, batch)]
        for _ in self.down:
            p, b = levels[-1]
            keep = cluster.fps(p, b, ratio=0.25, random_start=False)
            levels.append((p[keep], b[keep]))
        self_edges = [self.edges(p, p, PEER_K, b, b) for p, b in levels]
        x = self.encoder[0](self.stem(features), pos, self_edges[0])
        skips = [x]
        for i, down in enumerate(self.down):
            (p, b), (sp, sb) = levels[i], levels[i + 1]
            x = down(x, p, sp, *self.edges(p, sp, PEER_K, b, sb))
            x = self.encoder[i + 1](x, sp, self_edges[i + 1])
            skips.append(x)
        x = self.decoder[-1](self.bottom(x), levels[-1][0], self_edges[-1])
        for i in range(len(self.up) - 1, -1, -1):
            (p, b), (cp, cb) = levels[i], levels[i + 1]
            x = self.up[i](skips[i], p, x, cp, *self.edges(cp, p, 3, cb, b))
            x = self.decoder[i](x, p, self_edges[i])
        return self.head(x)


# --- a baseline checkout's encoder, loaded next to this one ---------------------------------------------


def _load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_baseline(root: Path) -> ModuleType:
    """``ctxir.nn.point_transformer`` of another checkout, bound to that checkout's ``ctxir.nn`` modules (ops,
    norm, attention logits, those it has) instead of this checkout's."""
    names = [n for n in ("ops", "norm", "attention_logits", "pair_norm") if (root / "ctxir" / "nn" / f"{n}.py").exists()]
    current = {n: sys.modules.get(f"ctxir.nn.{n}") for n in names}
    try:
        for n in names:  # in dependency order; each later module's `from ctxir.nn.x import ...` binds the baseline's
            sys.modules[f"ctxir.nn.{n}"] = _load_module(root / "ctxir" / "nn" / f"{n}.py", f"baseline_{n}")
        return _load_module(root / "ctxir" / "nn" / "point_transformer.py", "baseline_point_transformer")
    finally:
        for n, module in current.items():
            if module is None:
                sys.modules.pop(f"ctxir.nn.{n}", None)
            else:
                sys.modules[f"ctxir.nn.{n}"] = module


# --- measuring ----------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _once(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> list[float]:
    """Wall times of ``repeats`` calls after one warm-up."""
    fn()
    return [_once(fn, device) for _ in range(repeats)]


def _alternated(a: Callable[[], Any], b: Callable[[], Any], repeats: int, device: torch.device) -> dict[str, Any]:
    """Times of two calls alternated after a warm-up of each, and the median of the per-pair ratios b / a."""
    a(), b()
    pairs = [(_once(a, device), _once(b, device)) for _ in range(repeats)]
    return {"a_s": [x for x, _ in pairs], "b_s": [y for _, y in pairs],
            "speedup_median": statistics.median(y / x for x, y in pairs)}


def matmul_rate(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """fp32 matmul GFLOP/s of this machine: the best of ``repeats`` ``size``² products."""
    x, y = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = min(_timed(lambda: x @ y, repeats, device))
    return 2 * size**3 / best / 1e9


class MatmulFlopCounter(TorchDispatchMode):
    """Matmul FLOPs of everything run under it, forward and backward.

    Dense products (``mm``, ``addmm``, ``bmm``, ``baddbmm``) are counted by torch's own formulas
    (``torch.utils.flop_counter``, 2·m·k·n); a product with a sparse CSR factor by its stored entries,
    2·nnz·n, and the sampled product ``sparse_sampled_addmm`` by its samples, 2·nnz·k (torch's counter would
    count those as dense products of the full matrix shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        sparse = [t for t in tensors if t.layout == torch.sparse_csr]
        if func is torch.ops.aten.sparse_sampled_addmm.default:
            self.flops += 2 * sparse[0]._nnz() * args[1].shape[1]
        elif sparse and func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
            dense = tensors[-1] if tensors[-1].layout == torch.strided else tensors[-2]
            self.flops += 2 * sparse[0]._nnz() * dense.shape[1]
        elif func._overloadpacket in DENSE_PRODUCTS:
            self.flops += flop_registry[func._overloadpacket](*args, out_val=out, **kwargs)
        return out


DENSE_PRODUCTS = (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm, torch.ops.aten.baddbmm)


def matmul_flops(fn: Callable[[], Any]) -> int:
    """Matmul FLOPs of one call, forward and backward (:class:`MatmulFlopCounter`)."""
    with MatmulFlopCounter() as counter:
        fn()
    return counter.flops


def utilisation(flops: int, seconds: float, rate: float) -> dict[str, float]:
    return {"gflop": flops / 1e9, "gflop_per_s": flops / seconds / 1e9, "utilisation": flops / seconds / 1e9 / rate}


def _train_step(net: nn.Module, pos: Tensor, feats: Tensor, batch: Tensor) -> Callable[[], None]:
    def step() -> None:
        net(pos, feats, batch).square().mean().backward()

    return step


def encoder_parts(net: PointTransformerUNet, pos: Tensor, batch: Tensor, repeats: int,
                  device: torch.device) -> dict[str, float]:
    """Median milliseconds of each part of ``net``'s training step, each timed alone: the pyramid (and, alone, its
    farthest point sampling and the input points' self-kNN, which overlap inside it on the CPU), and forward +
    backward of every level's first encoder block and transitions."""

    def ms(fn: Callable[[], Any]) -> float:
        return 1e3 * statistics.median(_timed(fn, repeats, device))

    def fwd_bwd(module: Callable[..., Tensor], *inputs: Any) -> Callable[[], None]:
        return lambda: module(*inputs).sum().backward()

    levels = build_pyramid(pos, batch, net.neighbours, net.stride)
    parts = {"pyramid": ms(lambda: build_pyramid(pos, batch, net.neighbours, net.stride)),
             "fps": ms(lambda: farthest_point_sampling(pos, batch, 1.0 / net.stride)),
             "self knn": ms(lambda: knn(pos, pos, net.neighbours[0], batch, batch))}
    widths = [block[0].attention.channels for block in net.encoder]
    for i, level in enumerate(levels):
        x = torch.randn(level.pos.shape[0], widths[i], requires_grad=True, device=device)
        parts[f"level {i} block"] = ms(fwd_bwd(net.encoder[i][0], x, level.pos, level.neighbours))
        if i:
            fine = levels[i - 1]
            x_fine = torch.randn(fine.pos.shape[0], widths[i - 1], requires_grad=True, device=device)
            parts[f"level {i} down"] = ms(fwd_bwd(net.down[i], x_fine, fine.pos, level.pos, level.group))
            parts[f"level {i} up"] = ms(fwd_bwd(net.up[i - 1], x_fine, fine.pos, x, level.pos, level.up))
    return parts


def _max_diff(a: nn.Module, b: nn.Module, pos: Tensor, batch: Tensor, train: bool) -> float:
    """Largest output difference of two networks with the same weights (same BatchNorm statistics)."""
    state = {k: v.clone() for k, v in a.state_dict().items()}
    a.train(train), b.train(train)
    with torch.no_grad():
        out_a = a(pos, pos, batch)
        b.load_state_dict(state)  # train mode updated a's running statistics: start b from the same ones
        out_b = b(pos, pos, batch)
    a.load_state_dict(state), b.load_state_dict(state)
    a.train(), b.train()
    return float((out_a - out_b).abs().max())


def float32_error(cls: type[nn.Module], pos: Tensor, batch: Tensor) -> dict[str, float]:
    """Train-mode (batch statistics) error of ``cls``'s float32 forward + backward against the same network in
    float64: the largest output error relative to the largest output, and the median and largest relative
    error of the parameter gradients (over parameters whose float64 gradient is not ~0, i.e. not the biases
    ahead of a BatchNorm)."""
    torch.manual_seed(1)
    net = cls(3, 32)
    exact = cls(3, 32).double()
    exact.load_state_dict(net.state_dict())
    out = net(pos, pos, batch)
    out64 = exact(pos.double(), pos.double(), batch)
    out.square().mean().backward()
    out64.square().mean().backward()
    scale = max(float(p.grad.abs().max()) for p in exact.parameters())
    errors = sorted(float((a.grad.double() - b.grad).abs().max() / b.grad.abs().max())
                    for a, b in zip(net.parameters(), exact.parameters()) if float(b.grad.abs().max()) > 1e-6 * scale)
    out, out64 = out.detach(), out64.detach()
    return {"output_rel_error": float((out.double() - out64).abs().max() / out64.abs().max()),
            "grad_rel_error_median": statistics.median(errors), "grad_rel_error_max": errors[-1]}


def _pair_case(ours: nn.Module, other: nn.Module, pos: Tensor, batch: Tensor, args: argparse.Namespace,
               device: torch.device) -> dict[str, Any]:
    """Ours against another network: alternated times, matmul FLOPs and utilisation of each."""
    step_ours, step_other = _train_step(ours, pos, pos, batch), _train_step(other, pos, pos, batch)
    pair = _alternated(step_ours, step_other, args.repeats, device)
    rate = matmul_rate(device)
    ours_s, other_s = statistics.median(pair["a_s"]), statistics.median(pair["b_s"])
    return {"ours_s": pair["a_s"], "other_s": pair["b_s"], "speedup_median": pair["speedup_median"],
            "matmul_gflop_per_s": rate,
            "ours": utilisation(matmul_flops(step_ours), ours_s, rate),
            "other": utilisation(matmul_flops(step_other), other_s, rate),
            "ours_params": sum(p.numel() for p in ours.parameters()),
            "other_params": sum(p.numel() for p in other.parameters())}


def _clouds(num_clouds: int, points: int, device: torch.device) -> tuple[Tensor, Tensor]:
    pos = torch.rand(num_clouds * points, 3, device=device) - 0.5
    return pos, torch.arange(num_clouds, device=device).repeat_interleave(points)


def _case(name: str, args: argparse.Namespace, out: Any) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.retain:
        assert retain_freed_memory(), "glibc's mallopt is not available here"
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pos, batch = _clouds(args.clouds if name in ENCODER_CASES else 1, args.points, device)
    q = torch.rand(args.queries, 3, device=device) - 0.5
    extra: dict[str, Any] = {}
    run: Callable[[], Any]
    if name == "encoder vs reference":
        net = PointTransformerUNet(3, 32).to(device)
        pair = _alternated(_train_step(net, pos, pos, batch),
                           lambda: reference_forward(net, pos, pos, batch).square().mean().backward(),
                           args.repeats, device)
        extra = {"encoder_s": pair["a_s"], "reference_s": pair["b_s"], "speedup_median": pair["speedup_median"]}
        net.eval()
        with torch.no_grad():  # the reference computes exactly what the module computes
            extra["max_abs_diff_vs_module"] = float((reference_forward(net, pos, pos, batch) - net(pos, pos, batch)).abs().max())
        net.train()
        run = _train_step(net, pos, pos, batch)
    elif name == "encoder vs baseline":
        baseline = load_baseline(Path(args.baseline))
        net = PointTransformerUNet(3, 32).to(device)
        other = baseline.PointTransformerUNet(3, 32).to(device)
        other.load_state_dict(net.state_dict())
        extra = {"baseline": args.baseline,
                 "max_abs_diff_eval": _max_diff(net, other, pos, batch, train=False),
                 "max_abs_diff_train": _max_diff(net, other, pos, batch, train=True),
                 **_pair_case(net, other, pos, batch, args, device)}
        run = _train_step(net, pos, pos, batch)
    elif name == "encoder vs PyG peer":
        net = peer_shaped_encoder().to(device)
        extra = _pair_case(net, PeerUNet(3, 32).to(device), pos, batch, args, device)
        run = _train_step(net, pos, pos, batch)
    elif name in (PEER_OURS, PEER_ALONE, BASE_OURS, BASE_ALONE):  # one side of a comparison, alone in its process
        build = {PEER_OURS: peer_shaped_encoder, PEER_ALONE: lambda: PeerUNet(3, 32),
                 BASE_OURS: lambda: PointTransformerUNet(3, 32),
                 BASE_ALONE: lambda: load_baseline(Path(args.baseline)).PointTransformerUNet(3, 32)}
        net = build[name]().to(device)
        run = _train_step(net, pos, pos, batch)
        extra = {"flops": matmul_flops(run), "matmul_gflop_per_s": matmul_rate(device),
                 "params": sum(p.numel() for p in net.parameters())}
    elif name == "encoder float32 vs float64":
        extra = {"ours": float32_error(PointTransformerUNet, pos, batch)}
        if args.baseline:
            extra["baseline"] = float32_error(load_baseline(Path(args.baseline)).PointTransformerUNet, pos, batch)
        net = PointTransformerUNet(3, 32).to(device)
        run = _train_step(net, pos, pos, batch)
    elif name == "encoder":
        net = PointTransformerUNet(3, 32).to(device)
        run = _train_step(net, pos, pos, batch)
    elif name == "context module":
        net = ContextModule().to(device)
        enc = torch.randn(args.points, 32, device=device)
        run = _train_step(net, pos, enc, batch)
    elif name in ("UDF decoder", "semantic decoder"):
        width = 32 if name == "UDF decoder" else 36
        net = (UDFDecoder(32) if name == "UDF decoder" else SemanticDecoder(36, 20)).to(device)
        enc = torch.randn(args.points, width, requires_grad=True, device=device)
        qb = torch.zeros(args.queries, dtype=torch.long, device=device)

        def run() -> None:
            net(pos, enc, q, batch, qb).square().mean().backward()
    elif name == "fps fpsample":  # fpsample's exact FPS, one cloud at a time, checked against ours
        import fpsample

        fps_pos, fps_batch = _clouds(4, args.points, device)
        clouds = fps_pos.view(4, args.points, 3).numpy()
        ours = farthest_point_sampling(fps_pos, fps_batch, 0.25).view(4, -1) - (torch.arange(4) * args.points)[:, None]

        def run() -> list:
            return [fpsample.fps_sampling(c, args.points // 4, start_idx=0) for c in clouds]
        extra = {"samples_differing_from_ours": sum(int((torch.from_numpy(a.astype("int64")) != b).sum())
                                                    for a, b in zip(run(), ours))}
    elif name == "encoder by part":
        net = peer_shaped_encoder().to(device)
        extra["parts_ms"] = encoder_parts(net, pos, batch, args.repeats, device)
        run = _train_step(net, pos, pos, batch)
    elif name.startswith("fps "):
        backend = name.split(" ")[1]
        fps_pos, fps_batch = _clouds(4, args.points, device)

        def run() -> None:
            farthest_point_sampling(fps_pos, fps_batch, 0.25, backend=backend)
    elif name.startswith("grouped sum "):  # the attention's weighted neighbour sum, level 0 of the peer's shape
        index = knn(pos, pos, PEER_K)
        values = torch.randn(32, args.points, requires_grad=True, device=device)
        weights = torch.rand(4, args.points, PEER_K, requires_grad=True, device=device)
        graph, grad = NeighbourGraph(index, args.points), torch.randn(32, args.points, device=device)
        sparse = name.endswith("sparse")

        def run() -> None:
            grouped_neighbour_sum(values, graph, weights, sparse=sparse).backward(grad)
    elif name.startswith("full step"):
        if name == RETAINED_STEP:
            assert retain_freed_memory(), "glibc's mallopt is not available here"
        run = full_step(args, device)
    elif name.startswith("knn ckdtree"):  # scipy's k-d tree, the kdtree backend's previous engine
        from scipy.spatial import cKDTree

        support = pos.double().numpy()
        queries = (support if name.endswith("self16") else q.double().numpy())
        k = 16 if name.endswith("self16") else 4

        def run() -> None:
            cKDTree(support).query(queries, k=k, workers=-1)
    elif name.startswith("knn "):
        _, backend, kind = name.split(" ")
        if kind == "self16":
            def run() -> None:
                knn(pos, pos, 16, backend=backend)
        else:
            def run() -> None:
                knn(pos, q, 4, backend=backend)
    else:
        raise ValueError(name)
    times = _timed(run, args.repeats, device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.put({"case": name, "median_s": statistics.median(times), "times_s": times,
             "peak_rss_mib": peak / 1024, "rss_increase_mib": (peak - base_rss) / 1024, **extra})


def full_step(args: argparse.Namespace, device: torch.device) -> Callable[[], None]:
    """Encoder + UDF decoder + semantic decoder forward and backward on 4 clouds (the per-GPU batch)."""
    encoder = PointTransformerUNet(3, 32).to(device)
    udf, semantic = UDFDecoder(32).to(device), SemanticDecoder(32, 20).to(device)
    pos, batch = _clouds(4, args.points, device)
    queries, query_batch = _clouds(4, args.queries, device)

    def step() -> None:
        enc = encoder(pos, pos, batch)
        loss = udf(pos, enc, queries, batch, query_batch).mean() + semantic(pos, enc, queries, batch, query_batch).square().mean()
        loss.backward()

    return step


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_case, args=(name, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def case_names(args: argparse.Namespace) -> list[str]:
    device = torch.device(args.device)
    names = ["encoder vs reference"] if device.type == "cpu" else []
    if args.baseline:
        names.append("encoder vs baseline")
    names += ["encoder vs PyG peer", "encoder", "encoder by part"]
    names += ["encoder float32 vs float64"] if device.type == "cpu" else []
    names += ["context module", "UDF decoder", "semantic decoder"]
    names += [f"fps {b}" for b in ("numpy", "torch", "cluster")
              if (b != "numpy" or device.type == "cpu") and (b != "cluster" or has_torch_cluster())]
    if device.type == "cpu" and importlib.util.find_spec("fpsample") is not None:
        names.append("fps fpsample")
    names += ["grouped sum sparse", "grouped sum gathered"] if device.type == "cpu" else ["grouped sum gathered"]
    if args.full_step:
        names.append("full step")
        if device.type == "cpu" and sys.platform.startswith("linux"):
            names.append(RETAINED_STEP)
    for backend in available_backends(device) + (["ckdtree"] if device.type == "cpu" else []):
        names.append(f"knn {backend} self16")
        if backend != "brute":  # the brute-force reference would hold a 50k x 10k float64 matrix
            names.append(f"knn {backend} query4")
    return [n for n in names if not args.only or n in args.only]


def alone_in_separate_processes(args: argparse.Namespace, ours_case: str, other_case: str, label: str) -> dict[str, Any]:
    """Ours and another encoder each alone in a fresh process, ``--rounds`` times, alternating the two: times
    and each side's own peak resident memory.

    In one process the second network runs on a heap the first one shaped: the PyG peer measured up to 1.5x
    slower than alone (0.94–1.35 s against 0.87–1.00 s), so the in-process ratio flatters ours; this one does
    not."""
    rounds = [(run_case(ours_case, args), run_case(other_case, args)) for _ in range(args.rounds)]
    ours = [t for o, _ in rounds for t in o["times_s"]]
    other = [t for _, p in rounds for t in p["times_s"]]
    return {"case": f"encoder vs {label}, separate processes", "label": label, "ours_s": ours, "other_s": other,
            "round_speedups": [p["median_s"] / o["median_s"] for o, p in rounds],
            "speedup_of_medians": statistics.median(other) / statistics.median(ours),
            "peak_rss_mib": {"ours": statistics.median(o["peak_rss_mib"] for o, _ in rounds),
                             "other": statistics.median(p["peak_rss_mib"] for _, p in rounds)},
            "ours": {k: rounds[0][0][k] for k in ("flops", "matmul_gflop_per_s", "params")},
            "other": {k: rounds[0][1][k] for k in ("flops", "matmul_gflop_per_s", "params")}}


def _print_timing_row(label: str, seconds: float, u: dict[str, float], params: int) -> None:
    print(f"  {label:<9} {seconds:7.3f} s  {u['gflop']:6.2f} GFLOP  {u['gflop_per_s']:6.1f} GFLOP/s  "
          f"utilisation {100 * u['utilisation']:5.1f} %  {params:>10,} parameters")


def print_pairs(by_case: dict[str, dict[str, Any]]) -> None:
    if "encoder float32 vs float64" in by_case:
        r = by_case["encoder float32 vs float64"]
        print("\nencoder in float32 against float64, train mode (relative errors):")
        for label in ("ours", "baseline"):
            if label in r:
                e = r[label]
                print(f"  {label:<9} output {e['output_rel_error']:.1e}   parameter gradients: median "
                      f"{e['grad_rel_error_median']:.1e}, worst {e['grad_rel_error_max']:.1e}")
    if "encoder vs reference" in by_case:
        pair = by_case["encoder vs reference"]
        print(f"\nencoder forward+backward, alternating runs: ours {statistics.median(pair['encoder_s']):.3f} s, "
              f"published-pattern reference {statistics.median(pair['reference_s']):.3f} s, median speed-up "
              f"{pair['speedup_median']:.2f}x; max |output difference| (eval) {pair['max_abs_diff_vs_module']:.2e}")
    for name, other in (("encoder vs baseline", "baseline"), ("encoder vs PyG peer", "PyG peer")):
        if name not in by_case:
            continue
        r = by_case[name]
        print(f"\n{name} (forward+backward, alternating; fp32 matmul rate {r['matmul_gflop_per_s']:.0f} GFLOP/s):")
        for label, times, u, params in (("ours", r["ours_s"], r["ours"], r["ours_params"]),
                                        (other, r["other_s"], r["other"], r["other_params"])):
            _print_timing_row(label, statistics.median(times), u, params)
        print(f"  median speed-up ours vs {other}: {r['speedup_median']:.2f}x")
        if name == "encoder vs baseline":
            print(f"  max |output difference| vs baseline: eval {r['max_abs_diff_eval']:.2e}, "
                  f"train {r['max_abs_diff_train']:.2e}")
    if "encoder by part" in by_case:
        r = by_case["encoder by part"]
        parts, levels = r["parts_ms"], sum(name.endswith("block") for name in r["parts_ms"])
        print(f"\nencoder by part (peer shape, forward+backward, each alone; ms): whole step "
              f"{1e3 * r['median_s']:.1f}, pyramid {parts['pyramid']:.1f} (alone: FPS {parts['fps']:.1f}, the input "
              f"points' kNN {parts['self knn']:.1f}; on the CPU these two overlap)")
        for i in range(levels):
            row = f"  level {i}: block {parts[f'level {i} block']:.1f} (two a step: encoder, decoder)"
            if i:
                row += f", down {parts[f'level {i} down']:.1f}, up {parts[f'level {i} up']:.1f}"
            print(row)
        counted = parts["pyramid"] + sum(2 * v if name.endswith("block") else v for name, v in parts.items()
                                         if name.startswith("level"))
        print(f"  these parts add up to {counted:.1f} ms; the rest (stem, bottom, head, loss, glue) "
              f"{1e3 * r['median_s'] - counted:.1f} ms")
    for label in ("baseline", "PyG peer"):
        separate = by_case.get(f"encoder vs {label}, separate processes")
        if not separate:
            continue
        print(f"\nencoder vs {label}, each alone in a fresh process ({len(separate['round_speedups'])} rounds):")
        for side, name, times in (("ours", "ours", separate["ours_s"]), ("other", label, separate["other_s"])):
            seconds, info = statistics.median(times), separate[side]
            u = utilisation(info["flops"], seconds, info["matmul_gflop_per_s"])
            _print_timing_row(name, seconds, u, info["params"])
            print(f"  {'':<9} peak resident memory {separate['peak_rss_mib'][side]:,.0f} MiB")
        print(f"  speed-up ours vs {label} (ratio of medians): {separate['speedup_of_medians']:.2f}x; per round: "
              + ", ".join(f"{x:.2f}x" for x in separate["round_speedups"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10240)
    parser.add_argument("--queries", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--baseline", type=str, default=None, help="another checkout to compare the encoder with")
    parser.add_argument("--device", type=str, default="cpu")
    parser.add_argument("--full-step", action="store_true", help="also time encoder + both decoders, 4 clouds")
    parser.add_argument("--only", nargs="+", default=None, help="run only these cases")
    parser.add_argument("--rounds", type=int, default=3,
                        help="fresh-process rounds of ours and the other encoder each alone (with 'encoder vs "
                             "baseline' and 'encoder vs PyG peer'; 0: none)")
    parser.add_argument("--clouds", type=int, default=1,
                        help="clouds of --points points in the encoder cases (4: the paper's per-GPU batch)")
    parser.add_argument("--retain", action="store_true",
                        help="keep freed memory in every case's process (ctxir.core.memory.retain_freed_memory, "
                             "what the ctxir command does), both sides of every comparison alike")
    args = parser.parse_args()

    results = []
    print(f"{'case':<34}{'median s':>10}{'peak RSS MiB':>14}{'RSS +MiB':>10}")
    for name in case_names(args):
        r = run_case(name, args)
        results.append(r)
        print(f"{name:<34}{r['median_s']:>10.3f}{r['peak_rss_mib']:>14.0f}{r['rss_increase_mib']:>10.0f}")
    if "encoder vs baseline" in case_names(args) and args.rounds:
        results.append(alone_in_separate_processes(args, BASE_OURS, BASE_ALONE, "baseline"))
    if "encoder vs PyG peer" in case_names(args) and args.rounds:
        results.append(alone_in_separate_processes(args, PEER_OURS, PEER_ALONE, "PyG peer"))
    print_pairs({r["case"]: r for r in results})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {"points": args.points, "clouds": args.clouds, "retain": args.retain, "queries": args.queries,
            "repeats": args.repeats, "threads": args.threads,
            "device": args.device, "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    RESULTS.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
