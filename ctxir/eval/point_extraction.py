"""Dense surface points from a UDF: NDF's Algorithm 1 (Chibane et al. 2020), as released and as RangeUDF uses it.

Each round moves ``num_seeds`` points ``num_steps`` times by p ← p − f(p)·∇f(p)/‖∇f(p)‖ with f clamped at
``max_distance``; points whose UDF (at their position before the last move, as in the released code) is
below ``keep_below`` are kept (except in the first round when its seeds are uniform and mostly far); then the
next round's seeds are drawn with replacement from the points with UDF below ``resample_below`` and
jittered by N(0, noise_std²). Rounds repeat until ``num_points`` are kept; the result is a uniform random
subset of exactly ``num_points`` of them.

First-round seeds (``seeding``). NDF draws them uniformly in the bounds, so most start far from any surface
and the round is thrown away. By default (``"band"``) they are drawn uniformly inside the cells of the
narrow band (``ctxir.eval.narrow_band``) of a coarse ``band_resolution`` grid, the cells with a corner within
one of its voxels of the surface; they start near it, so the first round's points are kept like any other's.
``seeding="uniform"`` is NDF's algorithm as released.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ctxir.eval.extraction import as_bounds
from ctxir.eval.marching_cubes import Grid
from ctxir.eval.narrow_band import DEFAULT_LIPSCHITZ, narrow_band_cells
from ctxir.eval.udf_queries import UDF, GradientMethod, query_values_and_gradients


def band_seeds(
    udf: UDF,
    bounds: np.ndarray,
    count: int,
    resolution: int,
    lipschitz: float,
    generator: torch.Generator,
    chunk_size: int,
    device: torch.device | str,
) -> torch.Tensor:
    """``count`` points uniform in the narrow-band cells of a ``resolution`` grid (a corner UDF below a voxel)."""
    grid = Grid.from_bounds(bounds, resolution)
    cells, _, _ = narrow_band_cells(
        udf, grid, float(grid.spacing.max()), lipschitz=lipschitz, chunk_size=chunk_size, device=device
    )
    if len(cells) == 0:
        raise RuntimeError(
            f"extract_points: no cell of the {resolution}^3 seeding grid comes within a voxel of the surface; "
            "the UDF never gets that small inside the bounds (seeding='uniform' does not need it)"
        )
    lower = torch.as_tensor(grid.node_positions(grid.cell_corner_nodes(cells)[:, 0]), dtype=torch.float32,
                            device=device)
    pick = torch.randint(len(cells), (count,), generator=generator, device=device)
    spacing = torch.as_tensor(grid.spacing, dtype=torch.float32, device=device)
    return lower[pick] + spacing * torch.rand(count, 3, generator=generator, device=device)


def extract_points(
    udf: UDF,
    bounds: object,
    num_points: int,
    *,
    num_seeds: int = 200_000,
    num_steps: int = 7,
    max_distance: float = 0.1,
    keep_below: float = 0.009,
    resample_below: float = 0.03,
    noise_std: float = 0.1 / 3,
    max_rounds: int = 100,
    seeding: Literal["band", "uniform"] = "band",
    band_resolution: int = 64,
    lipschitz: float = DEFAULT_LIPSCHITZ,
    gradient: GradientMethod = "auto",
    fd_step: float = 1e-3,
    chunk_size: int = 1 << 18,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> np.ndarray:
    """``num_points`` points near the zero level of a UDF, as a (num_points, 3) float32 numpy array.

    Args:
        udf: callable mapping an (M, 3) float32 tensor on ``device`` to (M,) distances.
        bounds: (min xyz, max xyz) of the uniform initial seeds.
        num_points: number of points returned.
        num_seeds: points moved per round (NDF: 200k).
        num_steps: projection steps per round (NDF: 7).
        max_distance: clamp of the UDF in the step (NDF: 0.1).
        keep_below: UDF under which a moved point is kept (NDF: 0.009).
        resample_below: UDF under which a point may seed the next round (NDF: 0.03).
        noise_std: std of the Gaussian jitter of the new seeds (NDF: 0.1 / 3).
        max_rounds: give up after this many rounds (RuntimeError) rather than loop forever.
        seeding: first-round seeds in the narrow band (``"band"``) or uniform in the bounds (``"uniform"``,
            NDF); see the module docstring.
        band_resolution: nodes per axis of the seeding grid.
        lipschitz: the narrow band's safety factor (``ctxir.eval.narrow_band``).
        gradient, fd_step: gradient method and finite-difference step (``ctxir.eval.udf_queries``).
        chunk_size: most points per UDF call.
        device: where query tensors live.
        seed: seed of the random seeds, jitter and final subset (None: nondeterministic).
    """
    box = as_bounds(bounds)
    lo, hi = torch.as_tensor(box, dtype=torch.float32, device=device)
    if num_points < 1 or num_seeds < 1:
        raise ValueError(f"num_points and num_seeds must be positive, got {num_points} and {num_seeds}")
    if seeding not in ("band", "uniform"):
        raise ValueError(f"seeding must be 'band' or 'uniform', got {seeding!r}")
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)

    if seeding == "band":
        points = band_seeds(udf, box, num_seeds, band_resolution, lipschitz, generator, chunk_size, device)
    else:
        points = lo + (hi - lo) * torch.rand(num_seeds, 3, generator=generator, device=device)
    first_kept = 0 if seeding == "band" else 1  # uniform seeds start mostly far: that round is not kept
    kept: list[torch.Tensor] = []
    total = 0
    for round_index in range(max_rounds):
        for _ in range(num_steps):
            values, grads = query_values_and_gradients(udf, points, chunk_size, device, gradient, fd_step)
            values = values.clamp(max=max_distance)
            direction = grads / grads.norm(dim=1, keepdim=True).clamp(min=1e-12)
            points = points - values[:, None] * direction
        if round_index >= first_kept:
            kept.append(points[values < keep_below])
            total += len(kept[-1])
            if total >= num_points:
                break
        near = points[values < resample_below]
        if len(near) == 0:
            raise RuntimeError(
                f"extract_points: no point came within resample_below={resample_below} of the surface in round "
                f"{round_index}; the UDF never gets that small inside bounds {lo.tolist()}..{hi.tolist()}"
            )
        pick = torch.randint(len(near), (num_seeds,), generator=generator, device=device)
        points = near[pick] + noise_std * torch.randn(num_seeds, 3, generator=generator, device=device)
    else:
        raise RuntimeError(
            f"extract_points: only {total} of {num_points} points below keep_below={keep_below} after "
            f"{max_rounds} rounds; raise max_rounds or keep_below"
        )
    collected = torch.cat(kept)
    subset = torch.randperm(len(collected), generator=generator, device=device)[:num_points]
    return collected[subset].cpu().numpy().astype(np.float32)
