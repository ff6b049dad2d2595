"""LightningModules: geometry pre-training, frozen tuning and contextualised tuning."""

from ctxir.tasks.callbacks import BestAndLastCheckpoint
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
    "SemanticTuner",
    "UDFReconstructor",
    "strip_encoder",
]
