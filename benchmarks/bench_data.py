"""Data pipeline benchmark: exact UDF distances (ours vs libigl vs trimesh), scene preprocessing, room generation.

Usage:
    python benchmarks/bench_data.py                 # distances, preprocessing, generation
    python benchmarks/bench_data.py --rooms 100     # additionally: generate + preprocess 100 rooms (2 workers)

Prints a table and writes benchmarks/results/bench_data.json. Ratios are measured in the same run; each
timing is the best of ``--repeats`` runs (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ctxir.core.surface import sample_surface
from ctxir.data.preprocess import closest_points_on_mesh, normalise_vertices, sample_scene
from ctxir.data.synthetic import generate_room

RESULTS = Path(__file__).parent / "results" / "bench_data.json"


def best_time(function, repeats: int) -> tuple[float, object]:
    """Shortest wall time of ``repeats`` calls and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def query_points(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """NDF-style queries: surface samples + N(0, σ²) for σ in (0.08, 0.02, 0.003), equal shares, float32."""
    rng = np.random.default_rng(seed)
    base, _ = sample_surface(vertices, faces, count, rng)
    sigmas = np.repeat([0.08, 0.02, 0.003], int(np.ceil(count / 3)))[:count]
    return (base + rng.normal(size=base.shape) * sigmas[:, None]).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell-size", type=float, default=0.05, help="tessellation of the large scene (m)")
    parser.add_argument("--queries", type=int, default=300_000)
    parser.add_argument("--trimesh-queries", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rooms", type=int, default=0, help="also time generating + preprocessing N rooms")
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    results: dict[str, float | int] = {}

    large = generate_room(0, cell_size=args.cell_size)
    vertices = normalise_vertices(large.vertices)[0].astype(np.float32).astype(np.float64)
    faces = large.faces
    points = query_points(vertices, faces, args.queries)
    results.update(faces=int(len(faces)), queries=int(len(points)))
    rows.append(("large scene", f"{len(faces):,} faces, {len(points):,} queries"))

    ours_s, (ours, _) = best_time(lambda: closest_points_on_mesh(vertices, faces, points), args.repeats)
    rows.append(("ours (open3d RaycastingScene, incl. BVH build)", f"{ours_s:.3f} s"))
    results["ours_s"] = ours_s
    try:
        import igl
    except ImportError:
        rows.append(("libigl", "not installed (pip install libigl)"))
    else:
        p64 = points.astype(np.float64)
        igl_s, (squared, _, _) = best_time(lambda: igl.point_mesh_squared_distance(p64, vertices, faces), args.repeats)
        igl_distance = np.sqrt(squared)
        results.update(igl_s=igl_s, speedup_vs_igl=igl_s / ours_s, max_diff_vs_igl=float(np.abs(ours - igl_distance).max()))
        rows.append(("libigl point_mesh_squared_distance (sqrt)", f"{igl_s:.3f} s"))
        rows.append(("speed-up ours vs libigl", f"{igl_s / ours_s:.2f}x (target >= 1.5x)"))
        rows.append(("max |ours - libigl|", f"{results['max_diff_vs_igl']:.2e}"))
    import trimesh

    subset = points[: args.trimesh_queries].astype(np.float64)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    tm_s, (_, tm_distance, _) = best_time(lambda: trimesh.proximity.closest_point(mesh, subset), 1)
    results.update(trimesh_us_per_point=tm_s / len(subset) * 1e6, ours_us_per_point=ours_s / len(points) * 1e6,
                   max_diff_vs_trimesh=float(np.abs(ours[: len(subset)] - tm_distance).max()))  # fmt: skip
    rows.append((f"trimesh closest_point ({len(subset):,} q)", f"{tm_s:.3f} s = {results['trimesh_us_per_point']:.1f} us/point"))
    rows.append(("ours per point", f"{results['ours_us_per_point']:.2f} us/point"))
    rows.append(("max |ours - trimesh|", f"{results['max_diff_vs_trimesh']:.2e}"))

    generate_s, room = best_time(lambda: generate_room(1), args.repeats)
    results.update(generate_s=generate_s, room_faces=int(room.num_faces))
    rows.append(("generate_room (default)", f"{generate_s * 1e3:.1f} ms ({room.num_faces:,} faces)"))
    preprocess_s, _ = best_time(lambda: sample_scene(room), args.repeats)
    results["preprocess_scene_s"] = preprocess_s
    rows.append(("sample_scene (default sizes: 10,240 + 3 x 100k + 100k)", f"{preprocess_s:.3f} s"))

    if args.rooms:
        from ctxir.data.datamodules import SyntheticRoomsDataModule

        with tempfile.TemporaryDirectory() as cache_dir:
            dm = SyntheticRoomsDataModule(num_train=args.rooms, num_val=0, num_test=0, cache_dir=cache_dir,
                                          preprocess_workers=2)  # fmt: skip
            start = time.perf_counter()
            dm.prepare_data()
            rooms_s = time.perf_counter() - start
        results.update(rooms=args.rooms, rooms_s=rooms_s)
        rows.append((f"generate + preprocess {args.rooms} rooms (2 workers)", f"{rooms_s:.1f} s"))

    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
