"""RangeUDF decoders: a query reads the encodings of its K nearest input points through attention pooling.

* :class:`UDFDecoder` ("range-aware"): per neighbour ``[‖q−p_k‖, q−p_k, q, p_k]`` → MLP(10→32), concatenated
  with ``f_k``, attention-pooled to 32 channels, the query position appended (35) and an MLP
  35→512→32→32→1 with a final ReLU, so the distance is never negative.
* :class:`SemanticDecoder` ("surface-oriented"): per neighbour ``[f_k, p_k]`` only — it never sees the query
  position — attention-pooled to 32, MLP 32→64→32, dropout 0.5, then class logits.

Layers are Linear → BatchNorm → LeakyReLU(0.2) with PyTorch's default BatchNorm momentum (RangeUDF's 0.99
is a TensorFlow port error). Both decoders can share one neighbour search (:func:`query_neighbours`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ctxir.nn.config import Configurable
from ctxir.nn.geometry import pca_normals, plane_distances
from ctxir.nn.norm import RowBatchNorm
from ctxir.nn.ops import gather_rows, knn


def query_neighbours(
    points: Tensor,
    queries: Tensor,
    point_batch: Tensor | None = None,
    query_batch: Tensor | None = None,
    k: int = 4,
    backend: str | None = None,
) -> Tensor:
    """``(M, k)`` indices of each query's nearest input points (same cloud), for either decoder."""
    return knn(points, queries, k, point_batch, query_batch, backend=backend)


def shared_mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear → BatchNorm → LeakyReLU(0.2) for each consecutive pair of ``widths``."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(c_in, c_out, bias=False), RowBatchNorm(c_out), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


class AttentionPooling(nn.Module):
    """Per-channel softmax over the K neighbours of a linear map, weighted sum, then Linear-BN-LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.score = nn.Linear(in_channels, in_channels, bias=False)
        self.out = shared_mlp([in_channels, out_channels])

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (M, K, C_in) → (M, C_out)."""
        weights = torch.softmax(self.score(x), dim=1)
        return self.out((weights * x).sum(dim=1))


def _check_inputs(points: Tensor, features: Tensor, channels: int) -> None:
    if features.shape != (points.shape[0], channels):
        raise ValueError(f"expected features of shape ({points.shape[0]}, {channels}), got {tuple(features.shape)}")


class UDFDecoder(Configurable, nn.Module):
    """Unsigned distance of each query from the encodings of its K nearest input points.

    Args:
        feature_channels: width d of the per-point encodings.
        k: neighbours per query (RangeUDF: 4).
        geometry_channels: width of the encoded relative geometry and of the pooled query feature.
        hidden: widths of the distance MLP after the query position is appended.
        output_init_scale: factor on the default initialisation of the final linear layer (weights and
            bias). The targets are small (half the training queries lie within σ = 0.003 of the surface) while
            a default-initialised output layer predicts values of order 0.5, far beyond the loss's clamp; at
            0.01 the first predictions are of the targets' order and every query has a useful gradient from
            the first step (CAP-UDF, GeoUDF and ConvONet also start their output layers small or at zero).
            ``benchmarks/bench_geometry.py`` measures it; 1.0 is PyTorch's default.
        knn_backend: forced kNN backend, ``None`` = automatic.
    """

    def __init__(
        self,
        feature_channels: int = 32,
        k: int = 4,
        geometry_channels: int = 32,
        hidden: Sequence[int] = (512, 32, 32),
        output_init_scale: float = 0.01,
        knn_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.feature_channels, self.k, self.knn_backend = feature_channels, k, knn_backend
        self.geometry = shared_mlp([10, geometry_channels])
        self.pool = AttentionPooling(geometry_channels + feature_channels, geometry_channels)
        self.mlp = shared_mlp([geometry_channels + 3, *hidden])
        self.out = nn.Linear(hidden[-1], 1)
        with torch.no_grad():
            self.out.weight.mul_(output_init_scale)
            self.out.bias.mul_(output_init_scale)

    def forward(
        self,
        points: Tensor,
        features: Tensor,
        queries: Tensor,
        point_batch: Tensor | None = None,
        query_batch: Tensor | None = None,
        neighbours: Tensor | None = None,
        rectify: bool = True,
    ) -> Tensor:
        """Distances ``(M,)`` ≥ 0 of ``queries`` (M, 3) given ``points`` (N, 3) and ``features`` (N, d).

        ``neighbours`` (M, k) may be passed to reuse a search shared with the semantic decoder.
        ``rectify=False`` returns the value before the final ReLU (may be negative), which the training loss
        reads so that queries predicted below zero still get a gradient.
        """
        _check_inputs(points, features, self.feature_channels)
        if neighbours is None:
            neighbours = query_neighbours(points, queries, point_batch, query_batch, self.k, self.knn_backend)
        distance = self.distance_head(self.neighbour_features(points, features, queries, neighbours), queries)
        return torch.relu(distance) if rectify else distance

    def neighbour_features(self, points: Tensor, features: Tensor, queries: Tensor, neighbours: Tensor) -> Tensor:
        """``(M, K, 32 + d)``: each neighbour's encoded relative geometry ⊕ its encoding."""
        p = gather_rows(points, neighbours)
        q = queries.unsqueeze(1).expand_as(p)
        offset = q - p
        geometry = torch.cat([offset.norm(dim=-1, keepdim=True), offset, q, p], dim=-1)
        return torch.cat([self.geometry(geometry), gather_rows(features, neighbours)], dim=-1)

    def distance_head(self, per_neighbour: Tensor, queries: Tensor) -> Tensor:
        """Attention pooling, the query appended, the distance MLP: ``(M,)`` before the final ReLU."""
        hidden = self.mlp(torch.cat([self.pool(per_neighbour), queries], dim=-1))
        return self.out(hidden).squeeze(-1)


class PlanePriorUDFDecoder(UDFDecoder):
    """Beyond the paper: the UDF decoder with an explicit local-plane prior (off in every paper config).

    ``f(q) = Σ_k w_k |(q − p_k)·n_k| + Δ(q)``: the distances of the query to the PCA tangent planes of its K
    nearest input points (normals from ``normal_neighbours`` input points, no learning, as in
    :mod:`ctxir.nn.geometry`), weighted by a softmax over the neighbours of a learned score, plus the paper
    decoder's output as a learned correction (GeoUDF learns such a weighting over ``|(q − p_k)·n_k|``). At
    initialisation the correction is about 0 and the prediction is a plane fit, so the model starts where the
    plane-fit baseline is and learns where planes are wrong (edges, corners, small objects).

    Args: those of :class:`UDFDecoder`, plus ``normal_neighbours`` (PCA neighbourhood size).
    """

    def __init__(
        self,
        feature_channels: int = 32,
        k: int = 4,
        geometry_channels: int = 32,
        hidden: Sequence[int] = (512, 32, 32),
        output_init_scale: float = 0.01,
        normal_neighbours: int = 16,
        knn_backend: str | None = None,
    ) -> None:
        super().__init__(feature_channels, k, geometry_channels, hidden, output_init_scale, knn_backend)
        self.normal_neighbours = normal_neighbours
        self.plane_score = nn.Linear(geometry_channels + feature_channels, 1)

    def forward(
        self,
        points: Tensor,
        features: Tensor,
        queries: Tensor,
        point_batch: Tensor | None = None,
        query_batch: Tensor | None = None,
        neighbours: Tensor | None = None,
        rectify: bool = True,
    ) -> Tensor:
        """As :meth:`UDFDecoder.forward`."""
        _check_inputs(points, features, self.feature_channels)
        if neighbours is None:
            neighbours = query_neighbours(points, queries, point_batch, query_batch, self.k, self.knn_backend)
        per_neighbour = self.neighbour_features(points, features, queries, neighbours)
        normals = pca_normals(points, point_batch, self.normal_neighbours, self.knn_backend)
        planes = plane_distances(queries, points, normals, neighbours)
        weights = torch.softmax(self.plane_score(per_neighbour).squeeze(-1), dim=1)
        distance = (weights * planes).sum(dim=1) + self.distance_head(per_neighbour, queries)
        return torch.relu(distance) if rectify else distance


class SemanticDecoder(Configurable, nn.Module):
    """Class logits of each query from its K nearest input points' encodings and positions only.

    The query position is deliberately not an input: two queries with the same K neighbours get the same
    logits ("surface-oriented" semantics).

    Args:
        feature_channels: width of the per-point features read (d, or d + l when contextualised).
        num_classes: number of classes C.
        k: neighbours per query (RangeUDF: 4).
        pooled_channels: width after attention pooling.
        hidden: widths of the MLP before the classifier.
        dropout: dropout before the classifier.
        knn_backend: forced kNN backend, ``None`` = automatic.
    """

    def __init__(
        self,
        feature_channels: int = 32,
        num_classes: int = 20,
        k: int = 4,
        pooled_channels: int = 32,
        hidden: Sequence[int] = (64, 32),
        dropout: float = 0.5,
        knn_backend: str | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.feature_channels, self.num_classes, self.k = feature_channels, num_classes, k
        self.knn_backend = knn_backend
        self.pool = AttentionPooling(feature_channels + 3, pooled_channels)
        self.mlp = shared_mlp([pooled_channels, *hidden])
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden[-1], num_classes)

    def forward(
        self,
        points: Tensor,
        features: Tensor,
        queries: Tensor,
        point_batch: Tensor | None = None,
        query_batch: Tensor | None = None,
        neighbours: Tensor | None = None,
    ) -> Tensor:
        """Logits ``(M, C)`` for ``queries`` (M, 3) given ``points`` (N, 3) and ``features`` (N, C_f)."""
        _check_inputs(points, features, self.feature_channels)
        if neighbours is None:
            neighbours = query_neighbours(points, queries, point_batch, query_batch, self.k, self.knn_backend)
        pooled = self.pool(torch.cat([gather_rows(features, neighbours), gather_rows(points, neighbours)], dim=-1))
        return self.out(self.dropout(self.mlp(pooled)))
