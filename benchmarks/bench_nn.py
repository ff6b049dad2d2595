"""Benchmark of the shared modules on the CPU: time and peak memory of forward + backward.

Cases: the standard encoder (d = 32) at 10,240 points; the same network run the way the published
implementations run it (a brute-force kNN recomputed inside every layer, same weights, same output); the
context module at 10,240 points; the UDF and semantic decoders at 50,000 queries; the kNN backends side by
side. Every case runs in a fresh process so its peak resident memory can be read; times are the median of
``--repeats`` runs after one warm-up.

    python benchmarks/bench_nn.py [--points 10240] [--queries 50000] [--repeats 3] [--threads 2]

Prints a table and writes ``benchmarks/results/bench_nn.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ctxir.nn import ContextModule, PointTransformerUNet, SemanticDecoder, UDFDecoder
from ctxir.nn.ops import available_backends, batch_to_ptr, knn
from ctxir.nn.point_transformer import PointTransformerBlock, PointTransformerLayer

RESULTS = Path(__file__).parent / "results" / "bench_nn.json"


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


def _timed(fn, repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls after one warm-up (``repeats=0``: one call, no warm-up)."""
    if repeats == 0:
        start = time.perf_counter()
        fn()
        return [time.perf_counter() - start]
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _case(name: str, points: int, queries: int, repeats: int, threads: int, out: Any) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pos = torch.rand(points, 3) - 0.5
    batch = torch.zeros(points, dtype=torch.long)
    q = torch.rand(queries, 3) - 0.5
    extra: dict[str, Any] = {}
    if name in ("encoder", "reference encoder", "encoder vs reference"):
        net = PointTransformerUNet(3, 32)

        def ours() -> None:
            net(pos, pos, batch).square().mean().backward()

        def reference() -> None:
            reference_forward(net, pos, pos, batch).square().mean().backward()

        run = ours if name == "encoder" else reference
        if name == "encoder vs reference":  # alternate the two so both see the same machine load
            ours()
            reference()
            pairs = []
            for _ in range(repeats):
                a, b = _timed(ours, 0)[0], _timed(reference, 0)[0]
                pairs.append((a, b))
            extra["encoder_s"] = [a for a, _ in pairs]
            extra["reference_s"] = [b for _, b in pairs]
            extra["speedup_median"] = statistics.median(b / a for a, b in pairs)
            run = ours
            net.eval()
            with torch.no_grad():  # the reference computes exactly what the module computes
                diff = reference_forward(net, pos, pos, batch) - net(pos, pos, batch)
            extra["max_abs_diff_vs_module"] = float(diff.abs().max())
            net.train()
    elif name == "context module":
        net = ContextModule()
        enc = torch.randn(points, 32)
        def run() -> None:
            net(pos, enc, batch).square().mean().backward()
    elif name in ("UDF decoder", "semantic decoder"):
        width = 32 if name == "UDF decoder" else 36
        net = UDFDecoder(32) if name == "UDF decoder" else SemanticDecoder(36, 20)
        enc = torch.randn(points, width, requires_grad=True)
        def run() -> None:
            net(pos, enc, q, batch, torch.zeros(queries, dtype=torch.long)).square().mean().backward()
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
    times = _timed(run, repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.put({"case": name, "median_s": statistics.median(times), "times_s": times,
             "peak_rss_mib": peak / 1024, "rss_increase_mib": (peak - base_rss) / 1024, **extra})


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_case, args=(name, args.points, args.queries, args.repeats, args.threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10240)
    parser.add_argument("--queries", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    cases = ["encoder vs reference", "encoder", "reference encoder", "context module", "UDF decoder", "semantic decoder"]
    for backend in available_backends():
        cases.append(f"knn {backend} self16")
        if backend != "brute":  # the brute-force reference would hold a 50k x 10k float64 matrix
            cases.append(f"knn {backend} query4")
    results = []
    print(f"{'case':<28}{'median s':>10}{'peak RSS MiB':>14}{'RSS +MiB':>10}")
    for name in cases:
        r = run_case(name, args)
        results.append(r)
        print(f"{name:<28}{r['median_s']:>10.3f}{r['peak_rss_mib']:>14.0f}{r['rss_increase_mib']:>10.0f}")
    pair = {r["case"]: r for r in results}["encoder vs reference"]
    speedup = pair["speedup_median"]
    print(f"\nencoder forward+backward, alternating runs: ours {statistics.median(pair['encoder_s']):.3f} s, "
          f"reference {statistics.median(pair['reference_s']):.3f} s, median speed-up {speedup:.2f}x")
    print(f"reference vs module max |output difference| (eval mode): {pair['max_abs_diff_vs_module']:.2e}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {"points": args.points, "queries": args.queries, "repeats": args.repeats, "threads": args.threads,
            "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "encoder_speedup_vs_reference": speedup}
    RESULTS.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
