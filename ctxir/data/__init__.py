"""Scene data: labelled meshes, readers for the real data sets, preprocessing, synthetic rooms."""

from ctxir.data.mesh import IGNORE_LABEL, LabelledMesh

__all__ = ["IGNORE_LABEL", "LabelledMesh"]
