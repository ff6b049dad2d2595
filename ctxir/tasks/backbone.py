"""The geometry path every task holds: encoder → E_g → UDF decoder, built or restored, trainable or frozen.

Geometry pre-training trains both parts; the joint baseline too. The tuners restore both from a geometry
checkpoint and freeze them (the unfrozen-encoder row trains the encoder by segmentation and keeps the UDF
decoder frozen). A frozen part has ``requires_grad=False`` and stays in eval mode through every
``.train()`` call, so neither its weights nor its BatchNorm statistics move and the reconstruction stays
exactly that of pre-training. The encoder may be absent: tuning then reads stored encodings.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ctxir.nn.config import ModuleOrSpec, build_module, module_spec
from ctxir.nn.decoders import query_neighbours
from ctxir.tasks.checkpoint import (
    ENCODER_PREFIX,
    UDF_DECODER_PREFIX,
    checkpoint_stage,
    load_strict,
    read_checkpoint,
    sub_state_dict,
)

GEOMETRY_STAGES: tuple[str, ...] = ("geometry",)
"""Stages whose checkpoints :meth:`GeometryBackbone.restore` accepts unless told otherwise."""


class WrongStageError(ValueError):
    """A checkpoint comes from a different stage than the one asked for."""


class GeometryBackbone(nn.Module):
    """Encoder (optional) + UDF decoder, with per-part freezing.

    Args:
        encoder: per-point encoder ``encoder(points, features, batch)`` (xyz in, E_g out), or ``None`` when the
            encodings are read from disk.
        udf_decoder: a :class:`~ctxir.nn.UDFDecoder` reading E_g.
        train_encoder: whether the encoder's weights and BatchNorm statistics may change.
        train_decoder: the same for the UDF decoder.
    """

    def __init__(
        self,
        encoder: ModuleOrSpec | None,
        udf_decoder: ModuleOrSpec,
        *,
        train_encoder: bool = True,
        train_decoder: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = None if encoder is None else build_module(encoder)
        self.udf_decoder = build_module(udf_decoder)
        if self.encoder is None and train_encoder:
            raise ValueError("train_encoder=True needs an encoder, but none was given (no encoder weights?)")
        self.train_encoder, self.train_decoder = train_encoder, train_decoder
        for module in self.frozen_modules():
            module.requires_grad_(False)
            module.eval()

    @classmethod
    def restore(
        cls,
        path: str | Path,
        *,
        train_encoder: bool = False,
        train_decoder: bool = False,
        stages: Collection[str] | None = GEOMETRY_STAGES,
        option: str = "checkpoint",
    ) -> GeometryBackbone:
        """Rebuild and strictly load encoder and UDF decoder from a task checkpoint.

        Only checkpoints of ``stages`` are accepted (default: geometry pre-training); the joint baseline's is
        also a geometry model (pass ``stages=("geometry", "joint")``). ``stages=None`` accepts a checkpoint of any
        stage, also one that records none. A checkpoint without encoder weights
        (:func:`~ctxir.tasks.strip_encoder`) gives a backbone without encoder. ``option`` names the setting the
        path came from in the errors.
        """
        checkpoint = read_checkpoint(path, option)
        where = f"{option} {path}"
        stage = checkpoint_stage(checkpoint)
        if stages is not None and stage not in stages:
            found = f"written by the {stage} stage" if stage else "records no stage (not written by a ctxir task?)"
            raise WrongStageError(f"{where}: {found}, but a checkpoint of {' or '.join(sorted(stages))} is needed")
        hparams, state = checkpoint.get("hyper_parameters", {}), checkpoint["state_dict"]
        if not hparams.get("udf_decoder"):
            raise ValueError(f"{where}: no udf_decoder spec in its hyper-parameters")
        udf_decoder = build_module(hparams["udf_decoder"])
        load_strict(udf_decoder, sub_state_dict(state, UDF_DECODER_PREFIX), where, UDF_DECODER_PREFIX)
        encoder_state = sub_state_dict(state, ENCODER_PREFIX)
        if train_encoder and not encoder_state:
            raise ValueError(f"{where}: has no encoder weights, so the encoder cannot be trained (freeze_encoder=False)")
        encoder = None
        if encoder_state:
            encoder = build_module(hparams["encoder"])
            load_strict(encoder, encoder_state, where, ENCODER_PREFIX)
        return cls(encoder, udf_decoder, train_encoder=train_encoder, train_decoder=train_decoder)

    def specs(self) -> dict[str, dict[str, Any] | None]:
        """``{"encoder": spec or None, "udf_decoder": spec}`` (what a checkpoint stores to rebuild this)."""
        return {"encoder": None if self.encoder is None else module_spec(self.encoder),
                "udf_decoder": module_spec(self.udf_decoder)}

    def frozen_modules(self) -> list[nn.Module]:
        """The parts whose weights and BatchNorm statistics must not change."""
        frozen = [] if self.train_decoder else [self.udf_decoder]
        if self.encoder is not None and not self.train_encoder:
            frozen.append(self.encoder)
        return frozen

    def train(self, mode: bool = True) -> GeometryBackbone:
        """Switch training mode, keeping the frozen parts in eval mode."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    @property
    def k(self) -> int:
        """Neighbours per query of the UDF decoder (the semantic decoder shares the search)."""
        return int(self.udf_decoder.k)

    def encode(self, points: Tensor, point_batch: Tensor, stored: Tensor | None = None) -> Tensor:
        """E_g ``(ΣN, d)``: ``stored`` encodings when given, else the encoder's (no graph when it is frozen)."""
        if stored is not None:
            return stored
        if self.encoder is None:
            raise RuntimeError(
                "this model has no encoder (its checkpoint had no encoder weights): the DataModule must provide "
                "stored encodings (set its encodings_dir)"
            )
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_encoder and self.training):
            return self.encoder(points, points, point_batch)

    def neighbours(self, points: Tensor, queries: Tensor, point_batch: Tensor | None, query_batch: Tensor | None) -> Tensor:
        """``(M, k)`` nearest input points of each query (shared by both decoders)."""
        return query_neighbours(points, queries, point_batch, query_batch, self.k)

    def distance(
        self,
        points: Tensor,
        encodings: Tensor,
        queries: Tensor,
        point_batch: Tensor | None = None,
        query_batch: Tensor | None = None,
        neighbours: Tensor | None = None,
        rectify: bool = True,
    ) -> Tensor:
        """Unsigned distances ``(M,)`` of ``queries`` (before the final ReLU when ``rectify=False``)."""
        return self.udf_decoder(points, encodings, queries, point_batch, query_batch, neighbours=neighbours,
                                rectify=rectify)


def specs_of(modules: Mapping[str, nn.Module | None]) -> dict[str, dict[str, Any] | None]:
    """Module specs of named modules (``None`` stays ``None``)."""
    return {name: None if module is None else module_spec(module) for name, module in modules.items()}
