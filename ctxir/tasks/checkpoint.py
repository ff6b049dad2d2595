"""Reading checkpoints and restoring sub-modules from them, strictly and with errors that say what differs.

A checkpoint is a file from somewhere: :func:`read_checkpoint` loads it without unpickling code
(``weights_only``), refuses module specs off the allow-list (:func:`ctxir.nn.config.check_specs`) and weights
holding NaN or Inf (:func:`check_finite_state`, a diverged run), each with the file named.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ctxir.core.io import atomic_write
from ctxir.nn.config import check_specs

ENCODER_PREFIX = "geometry.encoder"
"""State-dict prefix of the encoder weights in every task's checkpoint."""
UDF_DECODER_PREFIX = "geometry.udf_decoder"
"""State-dict prefix of the UDF decoder weights."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's weights do not fit the module they are loaded into."""


def read_checkpoint(path: str | Path, option: str = "checkpoint") -> dict[str, Any]:
    """A Lightning checkpoint as a dict (``state_dict``, ``hyper_parameters``, ...), loaded on the CPU and vetted:
    its module specs must be allowed and its weights finite. ``option`` names the setting in the errors
    (e.g. ``"reconstructor_ckpt"``)."""
    path = Path(path)
    where = f"{option} {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unreadable or truncated file, or pickled objects beyond plain data
        raise CheckpointMismatchError(f"{where}: not a readable checkpoint ({error})") from error
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointMismatchError(f"{where}: not a Lightning checkpoint (no 'state_dict')")
    check_specs(checkpoint.get("hyper_parameters", {}), where)
    check_finite_state(checkpoint["state_dict"], where)
    return dict(checkpoint)


def check_finite_state(state: Mapping[str, Any], where: str) -> None:
    """Refuse a state dict with NaN or Inf in any floating-point tensor (the weights of a diverged run), naming
    the tensors and ``where`` they come from."""
    bad = [
        f"{key} ({int((~torch.isfinite(value)).sum())} of {value.numel()})"
        for key, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if bad:
        raise FloatingPointError(
            f"{where}: NaN or Inf weights (a diverged run?) in {len(bad)} tensors: " + ", ".join(bad[:8])
            + (" ..." if len(bad) > 8 else "")
        )


def sub_state_dict(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix.``, with the prefix removed."""
    head = prefix + "."
    return {key[len(head) :]: value for key, value in state.items() if key.startswith(head)}


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], where: str, prefix: str = "") -> None:
    """Load ``state`` into ``module``; any missing, unexpected or mis-shaped key is an error naming them all.

    ``prefix`` (e.g. ``"encoder"``) is put before the keys in the message, so they read as in the checkpoint.
    """
    own = module.state_dict()
    head = f"{prefix}." if prefix else ""
    missing = sorted(head + key for key in set(own) - set(state))
    unexpected = sorted(head + key for key in set(state) - set(own))
    shapes = [
        f"{head}{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in sorted(set(own) & set(state))
        if state[key].shape != own[key].shape
    ]
    if missing or unexpected or shapes:
        lines = [f"{where}: the checkpoint does not match the {type(module).__name__} architecture"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): " + ", ".join(missing[:12]) + (" ..." if len(missing) > 12 else ""))
        if unexpected:
            lines.append(
                f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:12]) + (" ..." if len(unexpected) > 12 else "")
            )
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}):\n    " + "\n    ".join(shapes[:12]))
        raise CheckpointMismatchError("\n".join(lines))
    module.load_state_dict(state, strict=True)


STAGE_KEY = "ctxir_stage"
"""Checkpoint entry naming the task stage that wrote it (see :data:`STAGES`)."""

STAGES: tuple[str, ...] = ("geometry", "joint", "frozen", "unfrozen", "context")
"""Stages a checkpoint can come from: geometry pre-training, the joint baseline, frozen tuning, the unfrozen-encoder
row, contextualised tuning."""


def checkpoint_stage(checkpoint: Mapping[str, Any]) -> str | None:
    """The stage recorded in a checkpoint (``None`` for one that records none: not written by a ctxir task, or
    by a version before stages were recorded)."""
    stage = checkpoint.get(STAGE_KEY)
    return str(stage) if stage is not None else None


def strip_encoder(source: str | Path, target: str | Path) -> Path:
    """Copy a :class:`~ctxir.tasks.UDFReconstructor` checkpoint without its encoder weights.

    What a tuner needs when the scenes' encodings were written to disk (:class:`~ctxir.tasks.EncodingWriter`):
    the UDF decoder and the architecture specs, but neither the encoder nor the training data. Written
    atomically.
    """
    checkpoint = read_checkpoint(source)
    head = f"{ENCODER_PREFIX}."
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(head)}
    return atomic_write(target, lambda temporary: torch.save(checkpoint, temporary))
