"""Local plane geometry of a point cloud: PCA normals and distances to tangent planes.

The simplest unsigned distance field a sparse surface sample defines, with no learning at all: estimate each
input point's normal as the eigenvector of the smallest eigenvalue of the covariance of its ``k`` nearest
input points, and give a query the distance to the tangent plane of its nearest input point. It is the
baseline every learned UDF here is measured against (``ctxir.eval.baselines``) and the prior of the optional
:class:`~ctxir.nn.PlanePriorUDFDecoder`. Normals are unoriented (a UDF needs no orientation). No gradient
flows through any of this (neighbour search and eigen-decomposition are geometry, not parameters).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ctxir.nn.ops import gather_rows, knn


@torch.no_grad()
def pca_normals(points: Tensor, batch: Tensor | None = None, k: int = 16, backend: str | None = None) -> Tensor:
    """Unit normals ``(N, 3)`` from the covariance of each point's ``k`` nearest points (itself included).

    Computed in float64 (the 3×3 eigen-decomposition of nearly planar neighbourhoods is ill-conditioned in
    float32) and returned in the dtype of ``points``. Clouds never mix.
    """
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"expected (N, 3) points, got {tuple(points.shape)}")
    index = knn(points, points, k, batch, batch, backend=backend)
    neighbourhood = gather_rows(points.double(), index)
    centred = neighbourhood - neighbourhood.mean(dim=1, keepdim=True)
    covariance = centred.transpose(1, 2) @ centred
    normals = torch.linalg.eigh(covariance).eigenvectors[..., 0]  # eigenvalues ascending
    return normals.to(points.dtype)


def plane_distances(queries: Tensor, points: Tensor, normals: Tensor, neighbours: Tensor) -> Tensor:
    """``|(q − p_j)·n_j|`` of every query to the tangent plane of each of its neighbours: ``(M, K)``.

    ``neighbours`` (M, K) indexes ``points``/``normals`` (e.g. from :func:`~ctxir.nn.ops.knn`).
    """
    offsets = queries.unsqueeze(1) - gather_rows(points, neighbours)
    return (offsets * gather_rows(normals, neighbours)).sum(dim=-1).abs()
