"""Shared neural-network modules: point ops, Point Transformer U-Net, RangeUDF decoders, context module."""

from ctxir.nn.context import ContextModule
from ctxir.nn.decoders import PlanePriorUDFDecoder, SemanticDecoder, UDFDecoder, query_neighbours
from ctxir.nn.ops import farthest_point_sampling, knn, three_nn_interpolate
from ctxir.nn.point_transformer import PointTransformerUNet

__all__ = [
    "ContextModule",
    "PlanePriorUDFDecoder",
    "PointTransformerUNet",
    "SemanticDecoder",
    "UDFDecoder",
    "farthest_point_sampling",
    "knn",
    "query_neighbours",
    "three_nn_interpolate",
]
