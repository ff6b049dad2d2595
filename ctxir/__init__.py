"""ctxir: contextualising implicit representations for semantic tasks.

Train an unsigned-distance-field (UDF) implicit representation of indoor scenes, then give its frozen
encodings semantics with a small contextualising Point Transformer (Costain, Li & Prisacariu, CVPRW 2024).
"""

__version__ = "0.1.0"

from importlib import import_module
from typing import Any

_EXPORTS = {
    "UDFReconstructor": "ctxir.tasks",
    "FrozenSemanticTuner": "ctxir.tasks",
    "ContextualisedTuner": "ctxir.tasks",
    "EncodingWriter": "ctxir.tasks",
    "PointTransformerUNet": "ctxir.nn",
    "ContextModule": "ctxir.nn",
    "UDFDecoder": "ctxir.nn",
    "SemanticDecoder": "ctxir.nn",
    "SyntheticRoomsDataModule": "ctxir.data",
    "ScanNetDataModule": "ctxir.data",
    "SceneNNDataModule": "ctxir.data",
    "Stanford2D3DSDataModule": "ctxir.data",
    "TriadDataModule": "ctxir.data",
    "extract_mesh": "ctxir.eval",
    "extract_points": "ctxir.eval",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """The main classes at the top level (``ctxir.UDFReconstructor``), imported on first use so that
    ``import ctxir`` stays light."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ctxir' has no attribute {name!r}")
