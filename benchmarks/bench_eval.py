"""Benchmark: surface extraction, narrow band vs dense, on an analytic room and on a trained model's UDF;
the dense path vs CAP-UDF's per-voxel loop; the metrics at 100k × 100k.

Narrow band vs dense (``ctxir.eval.extract_mesh`` with ``narrow_band=True`` / ``False``), side by side at each
resolution, each run in a fresh process so that its peak resident memory can be read:

* ``analytic``: the exact UDF of a room of thin rectangles (floor, walls, a table, a cabinet, a picture), with
  its analytic gradient;
* ``checkpoint`` (``--checkpoint PATH``, a ``ctxir.tasks.UDFReconstructor`` Lightning checkpoint): the trained
  decoder's UDF of one synthetic room, ``q ↦ distance(points, encode(points), q)`` for ``--points`` input
  points sampled on ``ctxir.data.synthetic`` room ``--room`` (the encoding is computed once, outside the
  timing).

For each: end-to-end seconds, UDF value and gradient queries, peak RSS (and its increase during extraction),
the speed-up dense / band, and how the two meshes differ: identical arrays or not, the Chamfer-L1 distance
between the two surfaces (100k area-uniform samples of each, exact distances to the other mesh; in voxels),
and the farthest dense-mesh vertex from the band mesh.

Loop: the dense and narrow-band paths against the published CAP-UDF pattern (UDF and gradients on the full
grid, then a Python loop over cells calling ``skimage.measure.marching_cubes`` on each pseudo-signed 2×2×2
block; timed on a random subset of cells and extrapolated when there are too many), on the analytic room.

Usage::

    python benchmarks/bench_eval.py [--resolutions 128 256] [--checkpoint PATH] [--points 10240]
        [--lipschitz 1.5] [--threads N] [--no-loop]

Prints tables and writes ``benchmarks/results/bench_eval.json`` (written to a temporary name, then renamed).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from ctxir.eval import extract_mesh, reconstruction_metrics, sample_mesh_surface, semantic_metrics
from ctxir.eval.extraction import grid_values
from ctxir.eval.marching_cubes import Grid
from ctxir.eval.narrow_band import DEFAULT_LIPSCHITZ
from ctxir.eval.udf_queries import UDF, query_values_and_gradients

ROOM_BOUNDS = np.array([[-0.5] * 3, [0.5] * 3])
MODEL_BOUNDS = np.array([[-0.55] * 3, [0.55] * 3])  # the test stage's grid (ctxir.tasks.base.TEST_BOUNDS)
CHUNK = 1 << 17
MESH_SAMPLES = 100_000


def box_faces(lo: list[float], hi: list[float]) -> list[tuple[list[float], list[float]]]:
    """The 6 rectangles bounding an axis-aligned box."""
    faces = []
    for axis in range(3):
        for side in (lo, hi):
            a, b = list(lo), list(hi)
            a[axis] = b[axis] = side[axis]
            faces.append((a, b))
    return faces


def room() -> tuple[torch.Tensor, torch.Tensor]:
    """(R, 3) lower and upper corners of the zero-thickness boxes (rectangles) making up the scene."""
    rects = [
        ([-0.45, -0.45, -0.42], [0.45, 0.45, -0.42]),  # floor
        ([-0.45, -0.45, -0.42], [-0.45, 0.45, 0.4]),  # wall
        ([-0.45, -0.45, -0.42], [0.45, -0.45, 0.4]),  # wall
        ([-0.4493, -0.1, 0.0], [-0.4493, 0.15, 0.2]),  # picture just off the wall
        ([-0.1, 0.0, -0.1], [0.25, 0.25, -0.1]),  # table top
        ([-0.1, 0.0, -0.42], [-0.1, 0.25, -0.1]),  # table end panels
        ([0.25, 0.0, -0.42], [0.25, 0.25, -0.1]),
    ]
    rects += box_faces([0.2, -0.44, -0.42], [0.43, -0.3, -0.05])  # cabinet
    lo, hi = zip(*rects)
    return torch.tensor(lo), torch.tensor(hi)


LO, HI = room()


class _SceneDistance(torch.autograd.Function):
    """Exact unsigned distance to the union of rectangles, with its analytic gradient saved in forward.

    The gradient is the unit vector from the nearest rectangle's closest point (0 on the surface), so the
    benchmark measures extraction, not the backward pass of a 15-way min.
    """

    @staticmethod
    def forward(ctx, points: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        offset = torch.clamp(torch.maximum(LO - points[:, None], points[:, None] - HI), min=0)  # (M, R, 3)
        offset = offset * torch.sign(points[:, None] - (LO + HI) / 2)  # signed: points away from the rectangle
        distance, nearest = torch.linalg.vector_norm(offset, dim=2).min(dim=1)
        direction = offset[torch.arange(len(points)), nearest] / distance.clamp(min=1e-12)[:, None]
        ctx.save_for_backward(direction)
        return distance

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (direction,) = ctx.saved_tensors
        return grad_output[:, None] * direction


def scene_udf(points: torch.Tensor) -> torch.Tensor:
    """The analytic room's UDF (differentiable with respect to ``points``)."""
    return _SceneDistance.apply(points)


def checkpoint_udf(path: str, num_points: int, room_index: int) -> UDF:
    """A trained model's UDF of synthetic test room ``room_index`` from ``num_points`` surface samples."""
    from ctxir.data.preprocess import sample_scene
    from ctxir.data.synthetic import read_synthetic_room
    from ctxir.tasks import UDFReconstructor

    model = UDFReconstructor.load_from_checkpoint(path, map_location="cpu").eval()
    mesh = read_synthetic_room(0, 0.25, f"test_{room_index:04d}")[0]
    scene = sample_scene(mesh, num_surface=num_points, num_off_surface=1, sigmas=(), num_eval=1, seed=room_index)
    points = torch.from_numpy(scene["surface_points"])
    batch = torch.zeros(len(points), dtype=torch.long)
    with torch.no_grad():
        encodings = model.geometry.encode(points, batch)
    return lambda queries: model.geometry.distance(points, encodings, queries)


def make_udf(spec: dict[str, Any]) -> tuple[UDF, np.ndarray]:
    """The UDF and grid bounds a case spec names."""
    if spec["kind"] == "analytic":
        return scene_udf, ROOM_BOUNDS
    return checkpoint_udf(spec["path"], spec["points"], spec["room"]), MODEL_BOUNDS


def _extract_case(spec: dict[str, Any], resolution: int, band: bool, lipschitz: float, threads: int,
                  mesh_path: str, queue: Any) -> None:
    """Child process: build the UDF, then time ``extract_mesh`` end to end and read the peak RSS."""
    torch.set_num_threads(threads)
    udf, bounds = make_udf(spec)
    values, gradients = [0], [0]

    def counted(points: torch.Tensor) -> torch.Tensor:
        (gradients if points.requires_grad else values)[0] += len(points)
        return udf(points)

    counted(torch.zeros(8, 3))  # warm-up call (lazy initialisation), not counted below
    values[0] = 0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    vertices, faces = extract_mesh(counted, bounds, resolution, narrow_band=band, lipschitz=lipschitz,
                                   chunk_size=CHUNK)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.savez(mesh_path, vertices=vertices, faces=faces)
    queue.put({"seconds": seconds, "value_queries": values[0], "gradient_queries": gradients[0],
               "peak_rss_mib": peak / 1024, "rss_increase_mib": (peak - before) / 1024,
               "vertices": len(vertices), "triangles": len(faces)})


def run_extract(spec: dict[str, Any], resolution: int, band: bool, args: argparse.Namespace,
                folder: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """One extraction in a fresh process: its figures and its mesh."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mesh_path = os.path.join(folder, f"{spec['kind']}_{resolution}_{'band' if band else 'dense'}.npz")
    proc = ctx.Process(target=_extract_case, args=(spec, resolution, band, args.lipschitz, args.threads,
                                                   mesh_path, queue))
    proc.start()
    result = queue.get()
    proc.join()
    with np.load(mesh_path) as mesh:
        return result, mesh["vertices"], mesh["faces"]


def compare_meshes(dense: tuple[np.ndarray, np.ndarray], band: tuple[np.ndarray, np.ndarray],
                   voxel: float) -> dict[str, Any]:
    """How far the narrow-band mesh is from the dense one, in voxels.

    Chamfer-L1 between the surfaces: the mean exact distance from 100k area-uniform samples of each mesh to
    the other mesh (open3d's BVH), averaged over both directions; no sampling noise on the target side, so
    identical meshes give 0."""
    from ctxir.data.preprocess import closest_points_on_mesh

    identical = all(np.array_equal(a, b) for a, b in zip(dense, band))
    if len(dense[1]) == 0 or len(band[1]) == 0:
        return {"identical": identical, "chamfer_l1_voxels": None, "farthest_dense_vertex_voxels": None}
    to_band = closest_points_on_mesh(*band, sample_mesh_surface(*dense, MESH_SAMPLES, seed=0)[0])[0]
    to_dense = closest_points_on_mesh(*dense, sample_mesh_surface(*band, MESH_SAMPLES, seed=1)[0])[0]
    farthest = closest_points_on_mesh(*band, dense[0])[0].max()
    return {"identical": identical, "chamfer_l1_voxels": float(0.5 * (to_band.mean() + to_dense.mean()) / voxel),
            "farthest_dense_vertex_voxels": float(farthest / voxel)}


def band_vs_dense(spec: dict[str, Any], args: argparse.Namespace, folder: str) -> list[dict[str, Any]]:
    """Narrow band and dense extraction of one UDF at every resolution."""
    rows = []
    for resolution in args.resolutions:
        band, *band_mesh = run_extract(spec, resolution, True, args, folder)
        dense, *dense_mesh = run_extract(spec, resolution, False, args, folder)
        bounds = ROOM_BOUNDS if spec["kind"] == "analytic" else MODEL_BOUNDS
        voxel = float(Grid.from_bounds(bounds, resolution).spacing.max())
        rows.append({"udf": spec["kind"], "resolution": resolution, "band": band, "dense": dense,
                     "speedup": dense["seconds"] / band["seconds"],
                     **compare_meshes(tuple(dense_mesh), tuple(band_mesh), voxel)})
    return rows


def loop_extract(resolution: int, max_cells: int, rng: np.random.Generator) -> dict[str, Any]:
    """CAP-UDF pattern: full-grid UDF and gradients, then a per-cell Python loop with skimage per block."""
    from skimage.measure import marching_cubes

    start = time.perf_counter()
    grid = Grid.from_bounds(ROOM_BOUNDS, resolution)
    voxel = float(grid.spacing.max())
    values = grid_values(scene_udf, grid, CHUNK, "cpu")
    grads = np.empty((grid.num_nodes, 3), dtype=np.float32)
    for s in range(0, grid.num_nodes, CHUNK):
        nodes = np.arange(s, min(s + CHUNK, grid.num_nodes))
        grads[nodes] = query_values_and_gradients(scene_udf, grid.node_positions(nodes), CHUNK, "cpu")[1].numpy()
    grads = grads.reshape(*grid.shape, 3)
    field_seconds = time.perf_counter() - start

    num_cells = int(np.prod(grid.cell_shape))
    cells = np.arange(num_cells) if num_cells <= max_cells else np.sort(rng.choice(num_cells, max_cells, False))
    start = time.perf_counter()
    num_triangles = 0
    for i, j, k in zip(*np.unravel_index(cells, grid.cell_shape)):
        block = values[i : i + 2, j : j + 2, k : k + 2]
        if block.min() >= voxel:
            continue
        flat = block.ravel()
        g = grads[i : i + 2, j : j + 2, k : k + 2].reshape(8, 3)
        signed = np.where(g @ g[flat.argmax()] < 0, -flat, flat).reshape(2, 2, 2)
        if signed.min() < 0 < signed.max():
            num_triangles += len(marching_cubes(signed, 0.0)[1])
    loop_seconds = (time.perf_counter() - start) * num_cells / len(cells)
    return {"field_seconds": field_seconds, "loop_seconds": loop_seconds,
            "total_seconds": field_seconds + loop_seconds, "cells_timed": len(cells), "cells_total": num_cells,
            "extrapolated": len(cells) < num_cells, "triangles": num_triangles * num_cells / len(cells)}


def vectorised_vs_loop(args: argparse.Namespace, rng: np.random.Generator) -> list[dict[str, Any]]:
    """The dense and narrow-band paths against the per-voxel loop on the analytic room, in this process."""
    rows = []
    for resolution in args.resolutions:
        timings = {}
        for name, band in (("dense", False), ("band", True)):
            start = time.perf_counter()
            _, faces = extract_mesh(scene_udf, ROOM_BOUNDS, resolution, narrow_band=band, chunk_size=CHUNK)
            timings[name] = {"seconds": time.perf_counter() - start, "triangles": len(faces)}
        loop = loop_extract(resolution, args.max_loop_cells, rng)
        rows.append({"resolution": resolution, **timings, "loop": loop,
                     "speedup_dense": loop["total_seconds"] / timings["dense"]["seconds"],
                     "speedup_band": loop["total_seconds"] / timings["band"]["seconds"]})
    return rows


def bench_metrics(count: int, repeats: int, rng: np.random.Generator) -> dict[str, float]:
    gt = rng.random((count, 3)) - 0.5
    pred = gt[rng.permutation(count)] + rng.normal(0, 0.004, (count, 3))
    gt_labels = rng.integers(-1, 20, count)
    pred_labels = rng.integers(0, 20, count)
    timings = {}
    for name, call in {
        "reconstruction_seconds": lambda: reconstruction_metrics(pred, gt),
        "semantic_seconds": lambda: semantic_metrics(pred, pred_labels, gt, gt_labels, 20),
        "one_cKDTree_pair_seconds": lambda: (cKDTree(gt).query(pred, workers=-1), cKDTree(pred).query(gt, workers=-1)),
    }.items():
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
        timings[name] = best
    return timings


def print_band_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'udf':<11}{'res':>5} | {'band s':>8}{'dense s':>9}{'x':>6} | {'band queries':>13}{'dense q.':>11} | "
          f"{'band MiB':>9}{'dense MiB':>10} | {'same':>5}{'CD vox':>8}{'max vox':>8} | {'tris':>9}")
    for r in rows:
        b, d = r["band"], r["dense"]
        cd = "-" if r["chamfer_l1_voxels"] is None else f"{r['chamfer_l1_voxels']:.4f}"
        far = "-" if r["farthest_dense_vertex_voxels"] is None else f"{r['farthest_dense_vertex_voxels']:.3f}"
        print(f"{r['udf']:<11}{r['resolution']:>5} | {b['seconds']:>8.2f}{d['seconds']:>9.2f}{r['speedup']:>6.1f} | "
              f"{b['value_queries'] + b['gradient_queries']:>13,}{d['value_queries'] + d['gradient_queries']:>11,} | "
              f"{b['peak_rss_mib']:>9.0f}{d['peak_rss_mib']:>10.0f} | {'yes' if r['identical'] else 'no':>5}{cd:>8}"
              f"{far:>8} | {b['triangles']:>9,}")
    print("band/dense s: extract_mesh end to end (fresh process each); x = dense s / band s; queries: UDF points "
          "evaluated (values + gradients);\nMiB: peak RSS of the process (model and encoding included); same: "
          "identical vertex and face arrays; CD vox: Chamfer-L1 between\nthe surfaces (100k samples each, exact distance to the other mesh), in voxels; "
          "max vox: farthest dense-mesh vertex from the band mesh, in voxels.")


def print_loop_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'res':>5} {'dense s':>8} {'band s':>8} | {'loop s':>8} {'fields':>8} {'cells':>8} | "
          f"{'x dense':>8} {'x band':>7}  note")
    for r in rows:
        lp = r["loop"]
        note = f"loop timed on {lp['cells_timed']:,} of {lp['cells_total']:,} cells, extrapolated" if lp["extrapolated"] else ""
        print(f"{r['resolution']:>5} {r['dense']['seconds']:>8.2f} {r['band']['seconds']:>8.2f} | "
              f"{lp['total_seconds']:>8.1f} {lp['field_seconds']:>8.1f} {lp['loop_seconds']:>8.1f} | "
              f"{r['speedup_dense']:>8.1f} {r['speedup_band']:>7.1f}  {note}")
    print("analytic room, this process; loop = CAP-UDF pattern (fields: UDF and gradients on the full grid; cells: "
          "the per-cell Python loop); x = loop s / ours.")


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    os.replace(temporary, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--checkpoint", type=str, default=None, help="a UDFReconstructor checkpoint")
    parser.add_argument("--points", type=int, default=10240, help="input points of the checkpoint's room")
    parser.add_argument("--room", type=int, default=0, help="synthetic test room of the checkpoint case")
    parser.add_argument("--lipschitz", type=float, default=DEFAULT_LIPSCHITZ, help="narrow-band safety factor")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-loop", action="store_true", help="skip the per-voxel loop comparison")
    parser.add_argument("--max-loop-cells", type=int, default=2_500_000, help="time the loop on at most this many")
    parser.add_argument("--metric-points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "bench_eval.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    specs: list[dict[str, Any]] = [{"kind": "analytic"}]
    if args.checkpoint:
        specs.append({"kind": "checkpoint", "path": args.checkpoint, "points": args.points, "room": args.room})
    with tempfile.TemporaryDirectory() as folder:
        band_rows = [row for spec in specs for row in band_vs_dense(spec, args, folder)]
    print_band_table(band_rows)
    loop_rows = [] if args.no_loop else vectorised_vs_loop(args, rng)
    if loop_rows:
        print_loop_table(loop_rows)
    metrics = bench_metrics(args.metric_points, args.repeats, rng)
    print(f"\nmetrics on {args.metric_points:,} x {args.metric_points:,} points (best of {args.repeats}):")
    for name, seconds in metrics.items():
        print(f"  {name:<26} {seconds:.3f} s")

    write_json(args.output, {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": args.threads},
        "lipschitz": args.lipschitz, "checkpoint": args.checkpoint, "points": args.points,
        "band_vs_dense": band_rows, "vectorised_vs_loop": loop_rows,
        "metrics": {"points": args.metric_points, **metrics},
    })
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
