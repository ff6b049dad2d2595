"""Evaluation: UDF surface extraction and the paper's reconstruction and semantic metrics.

* ``extract_mesh`` — CAP-UDF's gradient pseudo-sign marching cubes, vectorised (``ctxir.eval.extraction``).
* ``extract_points`` — NDF's Algorithm 1 dense surface points (``ctxir.eval.point_extraction``).
* ``reconstruction_metrics`` / ``semantic_metrics`` — per-scene values (``ctxir.eval.functional``).
* ``ReconstructionMetrics`` / ``SemanticMetrics`` — torchmetrics classes averaging them over scenes under DDP.
* ``sample_mesh_surface`` — area-uniform samples of an extracted mesh (``ctxir.eval.sampling``).
* ``export_labelled_mesh`` — a reconstruction as a PLY mesh coloured by class (``ctxir.eval.export``).
* ``plot_tsne_panels`` / ``render_labelled_points`` — Fig. 2 and scene renders (``ctxir.eval.figures``,
  imported on use: it needs matplotlib and scikit-learn).
"""

from importlib import import_module
from typing import Any

from ctxir.eval.export import export_labelled_mesh
from ctxir.eval.extraction import extract_mesh
from ctxir.eval.functional import reconstruction_metrics, semantic_metrics
from ctxir.eval.metrics import ReconstructionMetrics, SemanticMetrics
from ctxir.eval.point_extraction import extract_points
from ctxir.eval.sampling import sample_mesh_surface

__all__ = [
    "ReconstructionMetrics",
    "SemanticMetrics",
    "export_labelled_mesh",
    "extract_mesh",
    "extract_points",
    "reconstruction_metrics",
    "plot_tsne_panels",
    "render_labelled_points",
    "sample_mesh_surface",
    "semantic_metrics",
]


def __getattr__(name: str) -> Any:
    if name in ("plot_tsne_panels", "render_labelled_points"):
        return getattr(import_module("ctxir.eval.figures"), name)
    raise AttributeError(f"module 'ctxir.eval' has no attribute {name!r}")
