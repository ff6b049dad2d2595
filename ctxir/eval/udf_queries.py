"""Chunked queries of an unsigned distance field and of its gradient, by autograd or finite differences.

A UDF here is any callable mapping an (M, 3) float tensor to (M,) (or (M, 1)) distances: a trained decoder
wrapped in a closure over its encodings, or an analytic field.

Gradients (``method``):

* ``"autograd"``: differentiate the callable's output with respect to the query points. This runs under
  ``torch.inference_mode(False)`` and ``torch.enable_grad()``, so it also works inside a Lightning
  validation/test step; the closure's captured tensors must then not be inference tensors (build them
  outside ``inference_mode``, or use ``Trainer(inference_mode=False)``).
* ``"finite_difference"``: central differences ``(f(p + s·e_k) − f(p − s·e_k)) / 2s`` along the three axes
  (six extra evaluations per point). Near a surface this still points away from it (for a plane at distance
  d < s the difference is 2d, of the right sign), which is all the sign rules and projections need.
* ``"auto"``: autograd when the output carries a graph back to the points; otherwise (the callable detaches,
  runs numpy, or captured inference tensors make autograd impossible) finite differences.

Gradients that come out NaN (e.g. a norm differentiated exactly at 0) are set to 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

UDF = Callable[[torch.Tensor], torch.Tensor]
GradientMethod = Literal["auto", "autograd", "finite_difference"]


def evaluate_udf(udf: UDF, points: torch.Tensor) -> torch.Tensor:
    """Call ``udf`` on (M, 3) points and check that it returned M finite distances; returns an (M,) tensor.

    NaN or Inf (a diverged model) raises ``FloatingPointError``: left in, such values compare false with every
    threshold, so the surface would silently lose the cells they touch (an empty mesh if all are NaN).
    """
    values = udf(points)
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"the UDF callable must return a torch.Tensor, got {type(values).__name__}")
    if values.dim() == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.shape != (points.shape[0],):
        raise ValueError(
            f"the UDF callable returned shape {tuple(values.shape)} for {points.shape[0]} query points; "
            "expected (M,) or (M, 1)"
        )
    bad = ~torch.isfinite(values.detach())
    if bool(bad.any()):
        first = points[bad.nonzero()[0, 0]].tolist()
        raise FloatingPointError(
            f"the UDF returned NaN or Inf at {int(bad.sum())} of {len(values)} query points (e.g. at "
            f"{[round(x, 4) for x in first]}): the model has diverged or its inputs hold NaN"
        )
    return values


def query_values(udf: UDF, points: np.ndarray, chunk_size: int, device: torch.device | str) -> np.ndarray:
    """UDF at (N, 3) points, in chunks of ``chunk_size`` without building a graph; (N,) float32 numpy."""
    out = np.empty(len(points), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(points), chunk_size):
            chunk = torch.as_tensor(points[start : start + chunk_size], dtype=torch.float32, device=device)
            out[start : start + len(chunk)] = evaluate_udf(udf, chunk).float().cpu().numpy()
    return out


def _autograd(udf: UDF, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(values, gradients) by autograd, or None when the output has no graph back to the points."""
    with torch.inference_mode(False), torch.enable_grad():
        p = points.detach().clone().requires_grad_(True)
        try:
            values = evaluate_udf(udf, p)
            if not values.requires_grad:
                return None
            (grad,) = torch.autograd.grad(values.sum(), p)
        except RuntimeError as error:
            if "nference tensor" not in str(error):
                raise
            return None
    return values.detach(), grad


def _finite_difference(udf: UDF, points: torch.Tensor, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, central-difference gradients) from one batched call on 7·M points."""
    offsets = torch.cat([torch.zeros(1, 3), step * torch.eye(3), -step * torch.eye(3)]).to(points)
    with torch.no_grad():
        values = evaluate_udf(udf, (points[None] + offsets[:, None]).reshape(-1, 3)).reshape(7, -1)
    grad = (values[1:4] - values[4:7]).T / (2 * step)
    return values[0], grad


def query_values_and_gradients(
    udf: UDF,
    points: np.ndarray | torch.Tensor,
    chunk_size: int,
    device: torch.device | str,
    method: GradientMethod = "auto",
    fd_step: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """UDF values (N,) and gradients (N, 3) at (N, 3) points, float32 on ``device``, in chunks.

    Finite-difference chunks hold ``chunk_size // 7`` points so one call never exceeds ``chunk_size`` queries.
    """
    if method not in ("auto", "autograd", "finite_difference"):
        raise ValueError(f"gradient method must be 'auto', 'autograd' or 'finite_difference', got {method!r}")
    points = torch.as_tensor(points, dtype=torch.float32, device=device)
    values = torch.empty(len(points), device=device)
    grads = torch.empty(len(points), 3, device=device)
    use_fd = method == "finite_difference"
    start = 0
    while start < len(points):
        stop = start + (max(1, chunk_size // 7) if use_fd else chunk_size)
        chunk = points[start:stop]
        result = None if use_fd else _autograd(udf, chunk)
        if result is None:
            if method == "autograd":
                raise RuntimeError(
                    "gradient='autograd' but the UDF output is not differentiable with respect to the query "
                    "points (detached output or inference tensors); use gradient='finite_difference' or 'auto'"
                )
            use_fd = True  # the callable will not become differentiable for later chunks
            stop = start + max(1, chunk_size // 7)
            chunk = points[start:stop]
            result = _finite_difference(udf, chunk, fd_step)
        values[start:stop], grads[start:stop] = result[0].float(), result[1].float()
        start = stop
    return values, torch.nan_to_num(grads, nan=0.0)
