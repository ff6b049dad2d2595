"""LightningModules of the three stages, the geometry path they share, and their callbacks."""

from ctxir.tasks.backbone import GeometryBackbone, WrongStageError
from ctxir.tasks.callbacks import BestAndLastCheckpoint, TestReport
from ctxir.tasks.checkpoint import CheckpointMismatchError, strip_encoder
from ctxir.tasks.encodings import EncodingWriter
from ctxir.tasks.reconstructor import UDFReconstructor
from ctxir.tasks.tuners import ContextualisedTuner, FrozenSemanticTuner, SemanticTuner

__all__ = [
    "BestAndLastCheckpoint",
    "CheckpointMismatchError",
    "ContextualisedTuner",
    "EncodingWriter",
    "FrozenSemanticTuner",
    "GeometryBackbone",
    "SemanticTuner",
    "TestReport",
    "UDFReconstructor",
    "WrongStageError",
    "strip_encoder",
]
