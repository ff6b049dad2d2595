"""Evaluation: UDF surface extraction and the paper's reconstruction and semantic metrics.

* ``extract_mesh`` — CAP-UDF's gradient pseudo-sign marching cubes, vectorised (``ctxir.eval.extraction``).
* ``extract_points`` — NDF's Algorithm 1 dense surface points (``ctxir.eval.point_extraction``).
* ``reconstruction_metrics`` / ``semantic_metrics`` — per-scene values (``ctxir.eval.functional``).
* ``ReconstructionMetrics`` / ``SemanticMetrics`` — torchmetrics classes averaging them over scenes under DDP.
"""

from ctxir.eval.extraction import extract_mesh
from ctxir.eval.functional import reconstruction_metrics, semantic_metrics
from ctxir.eval.metrics import ReconstructionMetrics, SemanticMetrics
from ctxir.eval.point_extraction import extract_points

__all__ = [
    "ReconstructionMetrics",
    "SemanticMetrics",
    "extract_mesh",
    "extract_points",
    "reconstruction_metrics",
    "semantic_metrics",
]
