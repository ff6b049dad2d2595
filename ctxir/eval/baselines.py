"""UDFs without learning, that a learned UDF must beat on the same queries to have learned anything.

* predicting 0 everywhere (half the NDF queries lie within σ = 0.003 of the surface, so this is a strong
  constant);
* :func:`plane_fit_udf`: the distance of a query to the PCA tangent plane of its nearest input point (normal
  from the point's 16 nearest input points). On the synthetic validation rooms it scores about 0.25× the
  error of predicting 0 at 2,048 input points (``benchmarks/bench_geometry.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ctxir.nn.geometry import pca_normals, plane_distances
from ctxir.nn.ops import knn


@torch.no_grad()
def plane_fit_udf(
    points: Tensor,
    queries: Tensor,
    point_batch: Tensor | None = None,
    query_batch: Tensor | None = None,
    k: int = 16,
    backend: str | None = None,
) -> Tensor:
    """``(M,)`` distance of each query to the tangent plane of its nearest input point (same cloud)."""
    normals = pca_normals(points, point_batch, k, backend)
    nearest = knn(points, queries, 1, point_batch, query_batch, backend=backend)
    return plane_distances(queries, points, normals, nearest)[:, 0]
