"""The trained model a scan is reconstructed with, rebuilt from any task checkpoint by its recorded stage.

A checkpoint records the stage that wrote it (``checkpoint["ctxir_stage"]``), so one command takes any of
them: geometry pre-training gives an unlabelled mesh; the joint baseline, frozen or unfrozen tuning and
contextualised tuning give a labelled one. A scan is encoded from its raw points, so the checkpoint must hold
the encoder weights (one written by :func:`~ctxir.tasks.strip_encoder` cannot encode a new scan).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from ctxir.tasks import ContextualisedTuner, FrozenSemanticTuner, UDFReconstructor, WrongStageError
from ctxir.tasks.base import SceneTask
from ctxir.tasks.checkpoint import (
    ENCODER_PREFIX,
    CheckpointMismatchError,
    checkpoint_stage,
    read_checkpoint,
    sub_state_dict,
)

TASK_OF_STAGE: dict[str, type[SceneTask]] = {
    "geometry": UDFReconstructor,
    "joint": UDFReconstructor,
    "frozen": FrozenSemanticTuner,
    "unfrozen": FrozenSemanticTuner,
    "context": ContextualisedTuner,
}
"""The task class that rebuilds a checkpoint of each stage."""


def load_scan_model(path: str | PathLike[str]) -> SceneTask:
    """The task stored in a checkpoint, on the CPU and in eval mode, checked to be able to encode a scan.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointMismatchError: not a Lightning checkpoint, or its weights do not rebuild its task.
        WrongStageError: no ctxir stage recorded, or no encoder weights.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    stage = checkpoint_stage(checkpoint)
    if stage not in TASK_OF_STAGE:
        recorded = "records no ctxir stage" if stage is None else f"records the unknown stage {stage!r}"
        raise WrongStageError(
            f"{path}: {recorded}; a scan needs a checkpoint of a ctxir task ({', '.join(TASK_OF_STAGE)})"
        )
    if not sub_state_dict(checkpoint["state_dict"], ENCODER_PREFIX):
        raise WrongStageError(
            f"{path}: a {stage} checkpoint without encoder weights (written by strip_encoder); a scan is encoded "
            "from its points, so use the checkpoint that still holds the encoder"
        )
    try:
        model = TASK_OF_STAGE[stage].load_from_checkpoint(path, map_location="cpu")
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise CheckpointMismatchError(f"{path}: cannot rebuild its {stage} task ({error})") from error
    return model.eval()
