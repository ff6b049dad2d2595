"""Point operations on batches of concatenated clouds: kNN, farthest point sampling, 3-NN interpolation and
the vector attention's weighted neighbour sum (:func:`grouped_neighbour_sum`, :class:`NeighbourGraph`).

Clouds of one batch are concatenated, ``(ΣN, 3)``, with a sorted batch-index vector ``(ΣN,)`` that says
which cloud each point belongs to. Nothing here ever mixes clouds. Index computations carry no gradient,
so they run under ``torch.no_grad``.

kNN backends (``backend=`` argument, or the ``CTXIR_KNN_BACKEND`` environment variable):

``"cluster"``
    torch-cluster's ``knn`` (nanoflann k-d tree on the CPU, brute force on the GPU), when importable.
``"kdtree"``
    pykdtree's OpenMP k-d tree per cloud, in float64, all cores, asked for squared distances (the same
    neighbours in the same order without a square root each). CPU tensors only. (Measured against scipy's
    ``cKDTree`` with ``workers=-1``, same indices: 14 against 18 ms for a 10,240-point self-16-NN, 29
    against 32 ms for 50,000 queries' 4-NN; ``benchmarks/bench_nn.py``'s ``knn kdtree`` and ``knn ckdtree`` cases.)
``"cdist"``
    chunked ``torch.cdist`` + ``topk`` per cloud: memory bounded by ``chunk`` × cloud size, never an
    all-pairs matrix of the whole batch. Any device.
``"brute"``
    the pure-torch reference: masked all-pairs distances of the whole batch. Tests only.
``"auto"`` (default)
    ``kdtree`` on the CPU (measured about 2x faster than torch-cluster's CPU kernel here, see
    ``benchmarks/bench_nn.py``); on other devices ``cluster`` when importable, else ``cdist``.

Farthest point sampling backends (``backend=`` of :func:`farthest_point_sampling`, or ``CTXIR_FPS_BACKEND``),
all with the same result (same start, same float32 distance arithmetic, first index on ties):

``"numpy"``
    in numpy, CPU tensors only: large clouds one at a time, each step updating only the slab of points the new
    sample can reach (:func:`_fps_numpy_slab`, exact), batches of small clouds all together updating every
    point (:func:`_fps_numpy_batched`), by a measured cost model (:data:`SLAB_STEP_US`). The fastest on the CPU:
    10,240 → 2,560 points in 27–29 ms here (38 ms updating every point), torch-cluster's CPU kernel 227 ms;
    fpsample 1.0.2's exact ``fps_sampling`` 60 ms, its bucket variants 5–19 ms but with other samples.
``"torch"``
    every point updated every step, all clouds advancing together, on the tensors' device.
``"cluster"``
    torch-cluster's ``fps`` (one kernel on the GPU), when importable.
``"auto"`` (default)
    ``numpy`` on the CPU; elsewhere ``cluster`` when importable, else ``torch``.

Host reads. Output shapes depend on the clouds' sizes, so they must be known on the host; :func:`cloud_sizes`
reads them (one device-to-host transfer of B integers, which also checks that the batch vector is sorted).
Every function here takes them as ``sizes`` and then reads nothing else back from the device, so a caller
that knows them (the encoder reads them once per forward pass and derives every level's) runs kNN, sampling
and gathers on an accelerator without a round trip. Only torch-cluster's kernels still synchronise inside
(their outputs are sized on the host).
"""

from __future__ import annotations

import bisect
import math
import os
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

Backend = Literal["auto", "cluster", "kdtree", "cdist", "brute"]
BACKENDS: tuple[str, ...] = ("auto", "cluster", "kdtree", "cdist", "brute")
BACKEND_ENV = "CTXIR_KNN_BACKEND"
FPS_BACKENDS: tuple[str, ...] = ("auto", "numpy", "torch", "cluster")
FPS_BACKEND_ENV = "CTXIR_FPS_BACKEND"

try:  # optional accelerator
    import torch_cluster as _torch_cluster
except ImportError:  # pragma: no cover - depends on the environment
    _torch_cluster = None


def has_torch_cluster() -> bool:
    """Whether the optional torch-cluster backend is importable."""
    return _torch_cluster is not None


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The concrete kNN backends usable for tensors on ``device``."""
    device = torch.device(device)
    names = ["cluster"] if has_torch_cluster() else []
    if device.type == "cpu":
        names.append("kdtree")
    return names + ["cdist", "brute"]


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """Pick the concrete backend from the argument, the environment variable or the default rule."""
    name = backend or os.environ.get(BACKEND_ENV) or "auto"
    if name not in BACKENDS:
        raise ValueError(f"unknown kNN backend {name!r}; choose one of {BACKENDS}")
    if name == "auto":
        if device.type == "cpu":
            return "kdtree"
        return "cluster" if has_torch_cluster() else "cdist"
    if name == "cluster" and not has_torch_cluster():
        raise RuntimeError("kNN backend 'cluster' requested but torch-cluster is not installed")
    if name == "kdtree" and device.type != "cpu":
        raise ValueError("kNN backend 'kdtree' only handles CPU tensors; use 'cdist' or 'cluster'")
    return name


def resolve_fps_backend(backend: str | None, device: torch.device) -> str:
    """Pick the concrete sampling backend from the argument, ``CTXIR_FPS_BACKEND`` or the default rule."""
    name = backend or os.environ.get(FPS_BACKEND_ENV) or "auto"
    if name not in FPS_BACKENDS:
        raise ValueError(f"unknown FPS backend {name!r}; choose one of {FPS_BACKENDS}")
    if name == "auto":
        if device.type == "cpu":
            return "numpy"
        return "cluster" if has_torch_cluster() else "torch"
    if name == "cluster" and not has_torch_cluster():
        raise RuntimeError("FPS backend 'cluster' requested but torch-cluster is not installed")
    if name == "numpy" and device.type != "cpu":
        raise ValueError("FPS backend 'numpy' only handles CPU tensors; use 'torch' or 'cluster'")
    return name


Sizes = Sequence[int]
"""Points per cloud, on the host, in batch order."""


def cloud_sizes(batch: Tensor, num_clouds: int = 0) -> list[int]:
    """Points per cloud of a sorted batch-index vector, read to the host in one transfer.

    ``num_clouds`` pads the list with empty clouds up to that length. Raises ``ValueError`` if ``batch`` is
    not sorted (clouds must be concatenated one after another)."""
    counts = torch.bincount(batch, minlength=num_clouds)
    unsorted = (batch[1:] < batch[:-1]).any().to(counts.dtype).reshape(1)
    *sizes, flag = torch.cat([counts, unsorted]).tolist()
    if flag:
        raise ValueError("batch vectors must be sorted (clouds concatenated one after another)")
    return sizes


def offsets(sizes: Sizes) -> list[int]:
    """Start of each cloud and the total, ``[0, n_0, n_0 + n_1, …]``."""
    return [0, *np.cumsum(np.asarray(sizes, dtype=np.int64)).tolist()]


def batch_to_ptr(batch: Tensor, num_clouds: int | None = None) -> Tensor:
    """Cloud start offsets ``(B+1,)`` of a sorted batch-index vector."""
    if num_clouds is None:
        num_clouds = int(batch.max()) + 1 if batch.numel() else 0
    counts = torch.bincount(batch, minlength=num_clouds)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _default_batch(x: Tensor) -> Tensor:
    return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)


def _pad_rows(index: Tensor, valid: Tensor) -> Tensor:
    """Replace invalid slots of each row (cloud smaller than k) by the row's last valid neighbour."""
    last = valid.long().sum(1).clamp(min=1) - 1
    filler = index.gather(1, last[:, None]).expand_as(index)
    return torch.where(valid, index, filler)


def _knn_brute(support: Tensor, query: Tensor, k: int, sb: Tensor, qb: Tensor) -> Tensor:
    dist = torch.cdist(query.double(), support.double()).pow(2)
    dist = dist.masked_fill(qb[:, None] != sb[None, :], float("inf"))
    kk = min(k, support.shape[0])
    d, idx = dist.topk(kk, dim=1, largest=False, sorted=True)
    if kk < k:
        idx = torch.cat([idx, idx[:, -1:].expand(-1, k - kk)], 1)
        d = torch.cat([d, d.new_full((d.shape[0], k - kk), float("inf"))], 1)
    return _pad_rows(idx, torch.isfinite(d))


def _knn_cdist(
    support: Tensor, query: Tensor, k: int, sptr: list[int], qptr: list[int], chunk: int
) -> Tensor:
    out = torch.empty(query.shape[0], k, dtype=torch.long, device=query.device)
    for s0, s1, q0, q1 in zip(sptr[:-1], sptr[1:], qptr[:-1], qptr[1:]):
        kk = min(k, s1 - s0)
        sup = support[s0:s1]
        for c0 in range(q0, q1, chunk):
            c1 = min(c0 + chunk, q1)
            d = torch.cdist(query[c0:c1], sup)
            idx = d.topk(kk, dim=1, largest=False, sorted=True).indices + s0
            if kk < k:
                idx = torch.cat([idx, idx[:, -1:].expand(-1, k - kk)], 1)
            out[c0:c1] = idx
    return out


def _knn_kdtree(support: Tensor, query: Tensor, k: int, sptr: list[int], qptr: list[int]) -> Tensor:
    from pykdtree.kdtree import KDTree

    sup = support.detach().double().numpy()
    qry = query.detach().double().numpy()
    out = np.empty((qry.shape[0], k), dtype=np.int64)
    for s0, s1, q0, q1 in zip(sptr[:-1], sptr[1:], qptr[:-1], qptr[1:]):
        if q1 == q0:
            continue
        kk = min(k, s1 - s0)
        # squared distances: the same order (pykdtree searches with them), without a square root per neighbour
        _, idx = KDTree(sup[s0:s1]).query(qry[q0:q1], k=kk, sqr_dists=True)
        idx = idx.astype(np.int64).reshape(q1 - q0, kk) + s0
        if kk < k:
            idx = np.concatenate([idx, np.repeat(idx[:, -1:], k - kk, axis=1)], 1)
        out[q0:q1] = idx
    return torch.from_numpy(out)


def _knn_cluster(support: Tensor, query: Tensor, k: int, sb: Tensor, qb: Tensor, num_clouds: int) -> Tensor:
    assert _torch_cluster is not None
    row, col = _torch_cluster.knn(support, query, k, sb, qb, batch_size=num_clouds)
    # row: query index, col: support index; order inside a query's group is not guaranteed sorted.
    nq = query.shape[0]
    order = torch.argsort(row, stable=True)
    row, col = row[order], col[order]
    counts = torch.bincount(row, minlength=nq)
    slot = torch.arange(row.numel(), device=row.device) - (counts.cumsum(0) - counts)[row]
    idx = torch.zeros(nq, k, dtype=torch.long, device=query.device)
    idx[row, slot] = col
    valid = torch.arange(k, device=row.device)[None, :] < counts[:, None]
    idx = _pad_rows(idx, valid)
    # sort each row by distance, padded duplicates last (they repeat the farthest valid one)
    d = (support[idx] - query[:, None, :]).pow(2).sum(-1)
    d = d.masked_fill(~valid, float("inf"))
    return idx.gather(1, d.argsort(dim=1, stable=True))


def _pair_sizes(support_batch: Tensor, query_batch: Tensor) -> tuple[list[int], list[int]]:
    """Per-cloud sizes of the support and the query points, padded to the same number of clouds."""
    support_sizes, query_sizes = cloud_sizes(support_batch), cloud_sizes(query_batch)
    num_clouds = max(len(support_sizes), len(query_sizes))
    return (support_sizes + [0] * (num_clouds - len(support_sizes)),
            query_sizes + [0] * (num_clouds - len(query_sizes)))


def _check_pair_sizes(support: Tensor, query: Tensor, sizes: tuple[Sizes, Sizes]) -> None:
    support_sizes, query_sizes = sizes
    if len(support_sizes) != len(query_sizes):
        raise ValueError(f"sizes give {len(support_sizes)} support clouds but {len(query_sizes)} query clouds")
    if sum(support_sizes) != support.shape[0] or sum(query_sizes) != query.shape[0]:
        raise ValueError(f"sizes sum to ({sum(support_sizes)}, {sum(query_sizes)}) points, "
                         f"the inputs have ({support.shape[0]}, {query.shape[0]})")
    for b, (s, q) in enumerate(zip(support_sizes, query_sizes)):
        if q and not s:
            raise ValueError(f"cloud {b} has queries but no support points")


@torch.no_grad()
def knn(
    support: Tensor,
    query: Tensor,
    k: int,
    support_batch: Tensor | None = None,
    query_batch: Tensor | None = None,
    backend: str | None = None,
    chunk: int = 4096,
    sizes: tuple[Sizes, Sizes] | None = None,
) -> Tensor:
    """The ``k`` nearest ``support`` points of every ``query`` point, within the same cloud.

    Args:
        support: ``(S, 3)`` points searched.
        query: ``(Q, 3)`` points whose neighbours are wanted.
        k: neighbours per query.
        support_batch: ``(S,)`` sorted cloud index of each support point (``None``: one cloud).
        query_batch: ``(Q,)`` sorted cloud index of each query point (``None``: one cloud).
        backend: see the module docstring; ``None`` reads ``CTXIR_KNN_BACKEND`` or picks automatically.
        chunk: queries per ``cdist`` block for the ``cdist`` backend.
        sizes: ``(support sizes, query sizes)`` per cloud on the host, if known (they must describe the batch
            vectors); otherwise they are read with :func:`cloud_sizes`.

    Returns:
        ``(Q, k)`` int64 indices into ``support``, nearest first. When a cloud has fewer than ``k``
        points, each row is padded by repeating its farthest neighbour.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    if support.ndim != 2 or query.ndim != 2 or support.shape[1] != query.shape[1]:
        raise ValueError(f"expected (S, D) and (Q, D) points, got {tuple(support.shape)}, {tuple(query.shape)}")
    sb = _default_batch(support) if support_batch is None else support_batch.long()
    qb = _default_batch(query) if query_batch is None else query_batch.long()
    if sizes is None:
        sizes = _pair_sizes(sb, qb)
    _check_pair_sizes(support, query, sizes)
    if query.shape[0] == 0:
        return torch.empty(0, k, dtype=torch.long, device=query.device)
    name = resolve_backend(backend, query.device)
    if name == "brute":
        return _knn_brute(support, query, k, sb, qb)
    if name == "cluster":
        return _knn_cluster(support.float(), query.float(), k, sb, qb, len(sizes[0]))
    sptr, qptr = offsets(sizes[0]), offsets(sizes[1])
    if name == "kdtree":
        return _knn_kdtree(support, query, k, sptr, qptr)
    return _knn_cdist(support, query, k, sptr, qptr, chunk)


def _fps_numpy_slab(points: np.ndarray, steps: int) -> np.ndarray:
    """FPS of one cloud, float32 ``points`` (n, 3), from point 0 → ``(steps,)`` indices, in numpy.

    A sample ``c`` can only lower the running min-distance of points nearer to it than the current largest
    one, ``M = mind[c]``: every other point keeps its value. The points are therefore kept sorted along their
    longest axis, and each step updates only the slab within ``√M`` of ``c`` along it (two bisections), about a
    sixth of a 10,240-point cloud on average over a quarter-sampling: 29 against 39 ms for updating every point
    (``benchmarks/bench_nn.py``, ``fps numpy``).

    The slab is exact, not an approximation. Outside it ``|x_j − x_c| > √M (1 + 1e-5) + 1e-18 + 1e-15 |x_c|``
    (the margins cover float32 rounding of the difference and its square, float64 rounding of the bounds, and
    subnormal squares), so the float32 square of that one axis' difference is already ``> M``; the float32 sum
    of three non-negative squares is at least each of them, so the point's new distance is ``> M ≥`` its
    min-distance, which ``minimum`` would have kept. Ties for the largest min-distance go to the lowest
    original index, as in the other backends (checked each step: ``argmax`` returns the first maximum in the
    sorted order, and a tie can only sit after it)."""
    n = points.shape[0]
    axis = int(np.argmax(points.max(axis=0) - points.min(axis=0)))
    order = np.argsort(points[:, axis], kind="stable")
    coords = np.ascontiguousarray(points[order].T)  # (3, n), sorted along ``axis``
    along = coords[axis].tolist()  # Python floats: ``bisect`` on a list beats ``np.searchsorted`` per call
    mind = np.full(n, np.inf, dtype=np.float32)
    diff, dist = np.empty_like(coords), np.empty(n, dtype=np.float32)
    chosen = np.zeros(steps, dtype=np.int64)  # chosen[0] = 0: original point 0
    current = int(np.flatnonzero(order == 0)[0])  # sorted position of original point 0
    lo, hi = 0, n
    for i in range(1, steps):
        d, t, m = diff[:, lo:hi], dist[lo:hi], mind[lo:hi]
        np.subtract(coords[:, lo:hi], coords[:, current : current + 1], out=d)
        np.multiply(d, d, out=d)
        np.add(d[0], d[1], out=t)
        np.add(t, d[2], out=t)
        np.minimum(m, t, out=m)
        current = int(mind.argmax())
        largest = float(mind[current])
        after = mind[current + 1 :]  # a tie can only sit after the first maximum (argmax beats max here)
        if after.size and after[after.argmax()] == largest:  # the lowest original index wins
            tied = np.flatnonzero(mind == largest)
            current = int(tied[np.argmin(order[tied])])
        chosen[i] = order[current]
        x = along[current]
        reach = math.sqrt(largest) * (1 + 1e-5) + 1e-18 + 1e-15 * abs(x)  # inf on the first step
        lo, hi = bisect.bisect_left(along, x - reach), bisect.bisect_right(along, x + reach)
    return chosen


def _fps_numpy_batched(coords: np.ndarray, mind: np.ndarray, steps: int) -> np.ndarray:
    """FPS on padded clouds ``coords`` (3, B, n) with running min-distances ``mind`` (B, n), every point updated
    every step, all clouds together, in numpy (8 calls per step, whatever the number of clouds)."""
    num_clouds, n = mind.shape
    rows = np.arange(num_clouds)
    chosen = np.zeros((num_clouds, steps), dtype=np.int64)
    current = np.zeros(num_clouds, dtype=np.int64)
    diff, dist = np.empty_like(coords), np.empty((num_clouds, n), np.float32)
    for i in range(1, steps):
        np.subtract(coords, coords[:, rows, current][:, :, None], out=diff)
        np.multiply(diff, diff, out=diff)
        np.add(diff[0], diff[1], out=dist)
        np.add(dist, diff[2], out=dist)
        np.minimum(mind, dist, out=mind)
        current = mind.argmax(axis=1)
        chosen[:, i] = current
    return chosen


SLAB_STEP_US, BATCHED_STEP_US, BATCHED_POINT_US = 8.6, 6.0, 1.2e-3
"""The numpy backend's cost model (µs, measured on the 2-core CPU): one step of one cloud in
:func:`_fps_numpy_slab` (its per-point work is small), and one step of :func:`_fps_numpy_batched`, fixed plus
per padded point. The slab loop wins for large clouds (10,240 points: 27 against 38 ms; 4 × 10,240: 104 against
138 ms), the batched one for batches of small ones (2 × 2,048: 6.9 against 9.3 ms; 4 × 2,048: 9.9 against
16.8 ms); both give the same samples."""


def _fps_numpy(pos: Tensor, sizes: Sizes, keep: Sizes) -> Tensor:
    """The numpy backend: the slab loop cloud by cloud or the batched loop, whichever the cost model above
    expects to be faster."""
    slab_us = SLAB_STEP_US * sum(keep)
    batched_us = max(keep) * (BATCHED_STEP_US + BATCHED_POINT_US * len(sizes) * max(sizes))
    if slab_us < batched_us:
        points, starts = pos.detach().float().numpy(), offsets(sizes)
        return torch.from_numpy(np.concatenate([
            _fps_numpy_slab(points[s0:s1], m) + s0 for s0, s1, m in zip(starts[:-1], starts[1:], keep) if m
        ]))
    coords, mind = _padded_clouds(pos, sizes)
    chosen = torch.from_numpy(_fps_numpy_batched(coords.numpy(), mind.numpy(), max(keep)))
    return _unpad_samples(chosen, sizes, keep)


def _unpad_samples(chosen: Tensor, sizes: Sizes, keep: Sizes) -> Tensor:
    """The first ``keep[b]`` samples of each padded cloud's row of ``chosen`` (B, steps), as indices into the
    concatenated clouds."""
    picks = _host_index(keep, [b * chosen.shape[1] for b in range(len(sizes))], chosen.device)
    cloud_start = torch.from_numpy(np.repeat(np.asarray(offsets(sizes)[:-1], dtype=np.int64), keep))
    return chosen.view(-1)[picks] + cloud_start.to(chosen.device, non_blocking=True)


def _fps_torch(coords: Tensor, mind: Tensor, steps: int) -> Tensor:
    """FPS on padded clouds ``coords`` (3, B, n) with running min-distances ``mind`` (B, n), every point updated
    every step, all clouds together, on the tensors' device (no host reads).

    Each operation is a separate kernel (no fused multiply-add) in the order of :func:`_fps_numpy_batched`, so
    the float32 distances, and with them the choices, equal numpy's bit for bit; ``argmax`` returns the first
    maximum, the lowest index on ties."""
    num_clouds = mind.shape[0]
    chosen = torch.zeros(num_clouds, steps, dtype=torch.long, device=mind.device)
    current = torch.zeros(num_clouds, 1, dtype=torch.long, device=mind.device)
    dist, tmp = torch.empty_like(mind), torch.empty_like(mind)
    for i in range(1, steps):
        torch.sub(coords[0], coords[0].gather(1, current), out=dist)
        dist.mul_(dist)
        for axis in (1, 2):
            torch.sub(coords[axis], coords[axis].gather(1, current), out=tmp)
            dist.add_(tmp.mul_(tmp))
        torch.minimum(mind, dist, out=mind)
        current = mind.argmax(dim=1, keepdim=True)
        chosen[:, i : i + 1] = current
    return chosen


def sampled_sizes(sizes: Sizes, ratio: float) -> list[int]:
    """Points farthest point sampling keeps per cloud: ``max(1, floor(n · ratio))``, 0 for an empty cloud."""
    return [max(1, math.floor(n * ratio)) if n else 0 for n in sizes]


def _host_index(counts: Sizes, starts: Sizes, device: torch.device) -> Tensor:
    """``[starts[b] + j for b, for j < counts[b]]`` built on the host and copied to ``device``."""
    counts_np = np.asarray(counts, dtype=np.int64)
    local = np.arange(counts_np.sum()) - np.repeat(np.cumsum(counts_np) - counts_np, counts_np)
    index = local + np.repeat(np.asarray(starts, dtype=np.int64), counts_np)
    return torch.from_numpy(index).to(device, non_blocking=True)


def cloud_prefixes(sizes: Sizes, counts: Sizes, device: torch.device | str = "cpu") -> Tensor:
    """Indices of the first ``counts[b]`` points of every cloud of a batch with ``sizes`` points per cloud."""
    if any(c > s for c, s in zip(counts, sizes)) or len(counts) != len(sizes):
        raise ValueError(f"prefixes {list(counts)} do not fit clouds of {list(sizes)} points")
    return _host_index(counts, offsets(sizes)[:-1], torch.device(device))


def _padded_clouds(pos: Tensor, sizes: Sizes) -> tuple[Tensor, Tensor]:
    """Clouds as float32 ``coords`` (3, B, n_max) and running min-distances (B, n_max): +inf for points,
    −1 for padding (never picked)."""
    n_max = max(sizes)
    num_clouds = len(sizes)
    slots = _host_index(sizes, [b * n_max for b in range(num_clouds)], pos.device)
    coords = pos.new_zeros(3, num_clouds * n_max, dtype=torch.float32)
    coords[:, slots] = pos.float().T
    mind = torch.full((num_clouds * n_max,), -1.0, device=pos.device)
    mind[slots] = float("inf")
    return coords.view(3, num_clouds, n_max), mind.view(num_clouds, n_max)


def _fps_cluster(pos: Tensor, sizes: Sizes, keep: Sizes, ratio: float) -> Tensor:
    """torch-cluster's FPS from each cloud's first point; it keeps ``ceil(n · ratio)`` (float32) per cloud,
    a prefix of the same sequence, so the first ``keep`` of each are taken."""
    assert _torch_cluster is not None
    ptr = torch.tensor(offsets(sizes), device=pos.device)
    out = _torch_cluster.fps(pos.float(), ptr=ptr, ratio=float(ratio), random_start=False)
    produced = np.ceil(np.asarray(sizes, dtype=np.float32) * np.float32(ratio)).astype(np.int64)
    if int(produced.sum()) != out.shape[0]:
        raise RuntimeError(f"torch-cluster's fps returned {out.shape[0]} samples, expected {int(produced.sum())}")
    return out[_host_index(keep, offsets(produced.tolist())[:-1], pos.device)]


@torch.no_grad()
def farthest_point_sampling(
    pos: Tensor,
    batch: Tensor | None,
    ratio: float,
    *,
    sizes: Sizes | None = None,
    backend: str | None = None,
) -> Tensor:
    """Farthest point sampling, per cloud, starting deterministically at each cloud's first point.

    Args:
        pos: ``(N, 3)`` points.
        batch: ``(N,)`` sorted cloud index (``None``: one cloud).
        ratio: fraction kept; each cloud keeps ``max(1, floor(n_b * ratio))`` points.
        sizes: points per cloud on the host, if known (then ``batch`` is not read); see :func:`cloud_sizes`.
        backend: ``"numpy"``, ``"torch"``, ``"cluster"`` or ``"auto"`` (module docstring); ``None`` reads
            ``CTXIR_FPS_BACKEND``.

    Returns:
        ``(M,)`` int64 indices into ``pos``, grouped by cloud in order, each cloud's in sampling order.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if sizes is None:
        sizes = [pos.shape[0]] if batch is None else cloud_sizes(batch.long())
    if sum(sizes) != pos.shape[0]:
        raise ValueError(f"sizes sum to {sum(sizes)} points, pos has {pos.shape[0]}")
    keep = sampled_sizes(sizes, ratio)
    name = resolve_fps_backend(backend, pos.device)
    if sum(keep) == 0:
        return torch.zeros(0, dtype=torch.long, device=pos.device)
    if name == "cluster":
        return _fps_cluster(pos, sizes, keep, ratio)
    if name == "numpy":
        return _fps_numpy(pos, sizes, keep)
    coords, mind = _padded_clouds(pos, sizes)
    return _unpad_samples(_fps_torch(coords, mind, max(keep)), sizes, keep)


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` for an ``(n, k)`` index, via ``index_select`` (its backward, an ``index_add_``, is much
    faster on the CPU than the accumulating ``index_put_`` behind advanced indexing)."""
    return x.index_select(0, index.reshape(-1)).view(*index.shape, *x.shape[1:])


def gather_columns(x: Tensor, index: Tensor) -> Tensor:
    """``x[:, index]`` of a channel-first ``(C, n)`` tensor for a flat ``(m,)`` or ``(1, m)`` index → ``(C, m)``.

    ``torch.gather`` with the index broadcast over the channels: on the CPU it runs several times faster than
    ``index_select`` along dim 1 or advanced indexing (measured here: 2.3 ms against 12.4 ms and 9.6 ms for
    32 × 163,840 picks), and its backward, a ``scatter_add_`` along the rows, is as fast."""
    return torch.gather(x, 1, index.reshape(1, -1).expand(x.shape[0], -1))


def linear_channels_first(layer: nn.Linear, x: Tensor) -> Tensor:
    """``layer`` applied to a channel-first ``(C_in, m)`` tensor → ``(C_out, m)`` (``W x + b``, one GEMM)."""
    if layer.bias is None:
        return layer.weight @ x
    return torch.addmm(layer.bias.unsqueeze(1), layer.weight, x)


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR matrix from trusted parts (built here, so PyTorch's invariant checks are skipped)."""
    with warnings.catch_warnings():  # PyTorch notes once per process that sparse CSR support is "beta"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


class NeighbourGraph:
    """``(n, k)`` neighbour indices into ``num_support`` points, as the sparse matrices of the vector attention's
    weighted sum.

    With ``G`` channel groups the sum is one sparse-times-dense product: a block-diagonal ``(G·n, G·num_support)``
    CSR matrix (row ``g·n + i`` holds the ``k`` weights of point ``i`` and group ``g``, its columns are the
    neighbours shifted by ``g·num_support``) times the values as ``(G·num_support, C/G)`` rows. Its transpose
    (for the values' gradient) needs the entries sorted by column: one stable argsort of the ``n·k`` indices. Both
    structures are built on first use and kept, so every block of a level (encoder and decoder, forward and
    backward) shares one build.
    """

    def __init__(self, index: Tensor, num_support: int) -> None:
        if index.ndim != 2:
            raise ValueError(f"expected an (n, k) neighbour index, got shape {tuple(index.shape)}")
        self.index, self.num_support = index, num_support
        self._blocks: dict[int, tuple[Tensor, Tensor]] = {}
        self._transposed: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        self._order: Tensor | None = None
        self._counts: Tensor | None = None
        self._offsets: tuple[Tensor, Tensor, Tensor] | None = None

    @property
    def shape(self) -> torch.Size:
        return self.index.shape

    def _index_dtype(self, groups: int) -> torch.dtype:
        """int32 row pointers and columns when they fit (half the memory; the CPU product measured 1.1–1.5x
        faster), else int64."""
        n, k = self.index.shape
        return torch.int32 if groups * max(n * k, self.num_support) < 2**31 else torch.int64

    @torch.no_grad()
    def block_diagonal(self, groups: int) -> tuple[Tensor, Tensor]:
        """Row pointers ``(G·n + 1,)`` and column indices ``(G·n·k,)`` of the block-diagonal matrix."""
        if groups not in self._blocks:
            n, k = self.index.shape
            device, dtype = self.index.device, self._index_dtype(groups)
            shifts = torch.arange(groups, device=device).mul_(self.num_support).view(groups, 1)
            col = (self.index.reshape(1, n * k).to(dtype) + shifts.to(dtype)).view(-1)
            self._blocks[groups] = torch.arange(0, groups * n * k + 1, k, device=device, dtype=dtype), col
        return self._blocks[groups]

    @torch.no_grad()
    def column_counts(self) -> Tensor:
        """How often each support point occurs among the neighbours, ``(num_support,)``."""
        if self._counts is None:
            self._counts = torch.bincount(self.index.reshape(-1), minlength=self.num_support)
        return self._counts

    @torch.no_grad()
    def by_column(self) -> tuple[Tensor, Tensor]:
        """The entries' order by column (rows ascending within a column) and :meth:`column_counts`: one stable
        argsort, shared by every :meth:`transposed` (int32 keys when they fit, measured 1.4 against 2.7 ms at
        163,840 entries)."""
        if self._order is None:
            flat = self.index.reshape(-1)
            self._order = torch.argsort(flat.to(torch.int32) if self.num_support < 2**31 else flat, stable=True)
        return self._order, self.column_counts()

    @torch.no_grad()
    def transposed(self, groups: int) -> tuple[Tensor, Tensor, Tensor]:
        """Row pointers and column indices of the transposed block-diagonal matrix, and :meth:`by_column`'s
        order of the ``n·k`` entries: each group's block takes that group's values in this order."""
        if groups not in self._transposed:
            n, k = self.index.shape
            device, dtype = self.index.device, self._index_dtype(groups)
            order, counts = self.by_column()
            rows = torch.div(order, k, rounding_mode="floor").to(dtype)
            shifts = torch.arange(0, groups * n, n, device=device, dtype=dtype).view(groups, 1)
            col = (rows.view(1, -1) + shifts).view(-1)
            crow = torch.cat([counts.new_zeros(1), counts.repeat(groups).cumsum(0)]).to(dtype)
            self._transposed[groups] = crow, col, order
        return self._transposed[groups]

    def relative_positions(self, support: Tensor, query: Tensor | None = None) -> Tensor:
        """``p_j − p_i`` of every pair, neighbour ``j`` among the ``support`` points ``(num_support, 3)`` and query
        ``i`` among ``query`` ``(n, 3)`` (``None``: the support itself, a self-neighbour graph), channel-first
        ``(3, n·k)``; kept for the next call with the same tensors (every block of a level shares it) unless it
        records a gradient."""
        query = support if query is None else query
        if self._offsets is not None and self._offsets[0] is support and self._offsets[1] is query:
            return self._offsets[2]
        n, k = self.index.shape
        gathered = gather_columns(support.t(), self.index.reshape(1, n * k)).view(3, n, k)
        rel = (gathered - query.t().unsqueeze(2)).view(3, n * k)
        if not rel.requires_grad:
            self._offsets = support, query, rel
        return rel

    def sum_over_pairs(self, x: Tensor) -> Tensor:
        """``Σ_{i: j∈N(i)} x_ij`` for every support point ``j`` → ``(num_support, C)``, of one row per pair,
        ``(n·k, C)`` in the index's order: one sparse product with the transposed pair incidence (``index_add_``
        of the same rows measured 2–5x slower on the CPU here, single-threaded)."""
        crow, _, order = self.transposed(1)
        n, k = self.index.shape
        return _csr(crow, order.to(crow.dtype), x.new_ones(n * k), (self.num_support, n * k)) @ x

    def sum_over_neighbours(self, x: Tensor) -> Tensor:
        """``Σ_{j∈N(i)} x_j`` for every point ``i`` → ``(n, C)``, of ``(num_support, C)`` rows ``x`` (one sparse
        product)."""
        crow, col = self.block_diagonal(1)
        n, k = self.index.shape
        return _csr(crow, col, x.new_ones(n * k), (n, self.num_support)) @ x

    def sum_over_queries(self, x: Tensor) -> Tensor:
        """``Σ_{i: j∈N(i)} x_i`` (with multiplicity) for every support point ``j`` → ``(num_support, C)``, of
        ``(n, C)`` rows ``x`` (one sparse product with the transpose)."""
        crow, col, _ = self.transposed(1)
        n, k = self.index.shape
        return _csr(crow, col, x.new_ones(n * k), (self.num_support, n)) @ x


class _DenseGroupedNeighbourSum(torch.autograd.Function):
    """Gather-multiply-sum form of :func:`grouped_neighbour_sum` on channel-first values (accelerators): the
    backward allocates one ``(C, n·k)`` tensor per input instead of autograd's broadcast-and-reshape copies."""

    @staticmethod
    def forward(ctx, values: Tensor, index: Tensor, weights: Tensor) -> Tensor:  # type: ignore[override]
        channels, n_values = values.shape
        groups, n, k = weights.shape
        gathered = gather_columns(values, index).view(channels // groups, groups, n, k)
        ctx.save_for_backward(gathered, index, weights)
        ctx.n_values = n_values
        return (gathered * weights).sum(dim=-1).view(channels, n)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None]:  # type: ignore[override]
        gathered, index, weights = ctx.saved_tensors
        planes, groups, n, k = gathered.shape
        grad = grad.reshape(planes, groups, n, 1)
        grad_values = grad_weights = None
        if ctx.needs_input_grad[0]:
            per_edge = (weights * grad).view(planes * groups, n * k)
            grad_values = per_edge.new_zeros(planes * groups, ctx.n_values).scatter_add_(
                1, index.reshape(1, -1).expand(planes * groups, -1), per_edge
            )
        if ctx.needs_input_grad[2]:
            grad_weights = (gathered * grad).sum(dim=0)
        return grad_values, None, grad_weights


class _SparseGroupedNeighbourSum(torch.autograd.Function):
    """Sparse-times-dense forward and backward of :func:`grouped_neighbour_sum` on ``(G·rows, C/G)`` values.

    Forward ``A @ V``, backward ``Aᵀ @ grad`` for the values and the sampled product ``(grad @ Vᵀ)`` at ``A``'s
    entries for the weights: no ``(C, n·k)`` tensor is formed in either direction."""

    @staticmethod
    def forward(ctx, rows: Tensor, weights: Tensor, graph: NeighbourGraph) -> Tensor:  # type: ignore[override]
        groups, n, k = weights.shape
        crow, col = graph.block_diagonal(groups)
        flat = weights.reshape(-1)
        ctx.save_for_backward(rows, flat)
        ctx.graph, ctx.groups = graph, groups
        return _csr(crow, col, flat, (groups * n, rows.shape[0])) @ rows

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        rows, flat = ctx.saved_tensors
        graph, groups = ctx.graph, ctx.groups
        n, k = graph.shape
        grad = grad.contiguous()
        grad_rows = grad_weights = None
        if ctx.needs_input_grad[0]:
            crow_t, col_t, order = graph.transposed(groups)
            values_t = flat.view(groups, n * k).gather(1, order.expand(groups, -1)).view(-1)
            grad_rows = _csr(crow_t, col_t, values_t, (rows.shape[0], groups * n)) @ grad
        if ctx.needs_input_grad[1]:
            crow, col = graph.block_diagonal(groups)
            pattern = _csr(crow, col, flat, (groups * n, rows.shape[0]))
            grad_weights = torch.sparse.sampled_addmm(pattern, grad, rows.t(), beta=0.0).values().view(groups, n, k)
        return grad_rows, grad_weights, None


class _PairWeightedSum(torch.autograd.Function):
    """Forward and backward of :func:`pair_weighted_sum` without autograd's broadcast ``(T, G, n, k)`` products
    (forward + backward 2.3 against 3.2 ms at 3 × 4 groups × 10,240 points × 16 neighbours)."""

    @staticmethod
    def forward(ctx, per_pair: Tensor, weights: Tensor) -> Tensor:  # type: ignore[override]
        groups, n, k = weights.shape
        ctx.save_for_backward(per_pair, weights)
        return (per_pair.view(-1, 1, n, k) * weights).sum(dim=-1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        per_pair, weights = ctx.saved_tensors
        groups, n, k = weights.shape
        pairs = per_pair.view(-1, 1, n, k)
        grad_pairs = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_pairs = (weights * grad.unsqueeze(-1)).sum(dim=1).view(-1, n * k)
        if ctx.needs_input_grad[1]:
            grad_weights = pairs[0] * grad[0].unsqueeze(-1)
            for channel in range(1, pairs.shape[0]):
                grad_weights.addcmul_(pairs[channel], grad[channel].unsqueeze(-1))
        return grad_pairs, grad_weights


def pair_weighted_sum(per_pair: Tensor, weights: Tensor) -> Tensor:
    """``Σ_j w_gij x_tij``: per-pair channels ``x`` ``(T, n·k)`` summed over each point's neighbours with each
    group's weights ``w`` ``(G, n, k)`` → ``(T, G, n)``."""
    groups, n, k = weights.shape
    if per_pair.ndim != 2 or per_pair.shape[1] != n * k:
        raise ValueError(f"per-pair values {tuple(per_pair.shape)} do not fit weights {tuple(weights.shape)}")
    return _PairWeightedSum.apply(per_pair, weights)


def grouped_neighbour_sum(
    values: Tensor, neighbours: Tensor | NeighbourGraph, weights: Tensor, *, sparse: bool | None = None
) -> Tensor:
    """Weighted sum over each point's neighbours with one weight per channel group (vector attention).

    Args:
        values: ``(C, n_values)`` channel-first features of the points that ``neighbours`` points into.
        neighbours: ``(n, k)`` neighbours of each of ``n`` points, or their :class:`NeighbourGraph` (which keeps
            the sparse structures for the next call).
        weights: ``(G, n, k)`` weights, ``G`` dividing ``C``; channel ``c`` uses group ``c mod G``.
        sparse: compute it as one sparse-times-dense product (:class:`NeighbourGraph`) or as a gather, multiply
            and sum over the neighbours; ``None`` = sparse on the CPU. The sparse matrices keep the neighbours'
            order and repeated neighbours (padded rows), which PyTorch's CPU kernels accept (tested); CUDA's
            sparse library may require sorted, distinct columns, unverified without a GPU, so accelerators
            gather. Measured on this 2-core CPU at 32 channels in 4 groups, 10,240 points, k = 16, forward +
            backward: 6–8 ms sparse against 15–20 ms gathered (``benchmarks/bench_nn.py``, ``grouped sum``).

    Returns:
        ``(C, n)``: ``out[c, i] = Σ_j weights[c mod G, i, j] · values[c, index[i, j]]``.
    """
    groups, n, k = weights.shape
    channels, n_values = values.shape
    graph = neighbours if isinstance(neighbours, NeighbourGraph) else NeighbourGraph(neighbours, n_values)
    if channels % groups or graph.shape != (n, k) or graph.num_support != n_values:
        raise ValueError(
            f"values {tuple(values.shape)}, neighbours {tuple(graph.shape)} into {graph.num_support} points and "
            f"weights {tuple(weights.shape)} do not fit: need values (C, n_values), neighbours (n, k) into "
            "n_values points, weights (G, n, k) with G dividing C"
        )
    if not (values.device.type == "cpu" if sparse is None else sparse):
        return _DenseGroupedNeighbourSum.apply(values, graph.index, weights)
    planes = channels // groups
    rows = values.view(planes, groups, n_values).permute(1, 2, 0).reshape(groups * n_values, planes)
    out = _SparseGroupedNeighbourSum.apply(rows, weights, graph)
    return out.view(groups, n, planes).permute(2, 0, 1).reshape(channels, n)


def interpolate_knn(
    coarse_feat: Tensor,
    coarse_pos: Tensor,
    fine_pos: Tensor,
    index: Tensor,
    eps: float = 1e-8,
) -> Tensor:
    """Inverse-distance interpolation of coarse features at fine points from precomputed neighbours.

    Args:
        coarse_feat: ``(S, C)`` features at ``coarse_pos`` ``(S, 3)``.
        fine_pos: ``(Q, 3)`` points to interpolate at.
        index: ``(Q, k)`` neighbours of each fine point in the coarse set (from :func:`knn`).
        eps: added to distances, so a fine point on a coarse point takes that point's feature.

    Returns:
        ``(Q, C)`` features, ``Σ_j w_j f_j`` with ``w_j ∝ 1 / (‖p − p_j‖ + eps)``.
    """
    dist = (gather_rows(coarse_pos, index) - fine_pos[:, None, :]).norm(dim=-1)
    weight = 1.0 / (dist + eps)
    weight = weight / weight.sum(dim=1, keepdim=True)
    return (gather_rows(coarse_feat, index) * weight.unsqueeze(-1)).sum(dim=1)


def three_nn_interpolate(
    coarse_feat: Tensor,
    coarse_pos: Tensor,
    fine_pos: Tensor,
    coarse_batch: Tensor | None = None,
    fine_batch: Tensor | None = None,
    k: int = 3,
    backend: str | None = None,
) -> Tensor:
    """3-NN inverse-distance interpolation (Point Transformer's transition up), within each cloud."""
    index = knn(coarse_pos, fine_pos, k, coarse_batch, fine_batch, backend=backend)
    return interpolate_knn(coarse_feat, coarse_pos, fine_pos, index)
