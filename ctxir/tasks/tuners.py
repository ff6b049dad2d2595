"""Stages 2 and 3: semantics on frozen geometric encodings, directly or through the context module.

Both tuners restore the encoder and the UDF decoder of a geometry checkpoint into a frozen
:class:`~ctxir.tasks.backbone.GeometryBackbone`, so reconstruction stays exactly that of geometry
pre-training; they add a semantic decoder (and the context module), trained with cross-entropy.

*Tuning without the encoder*: when batches carry stored ``encodings`` (written by
:class:`~ctxir.tasks.EncodingWriter`, read back with the DataModule's ``encodings_dir``), the encoder is not
run, and a checkpoint without encoder weights is accepted — only encodings and the UDF decoder are needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ctxir.data.keys import Key
from ctxir.nn.config import ModuleOrSpec
from ctxir.tasks.backbone import GEOMETRY_STAGES, GeometryBackbone, WrongStageError
from ctxir.tasks.base import Batch, SceneTask, num_clouds
from ctxir.tasks.losses import segmentation_loss


class SemanticTuner(SceneTask):
    """What both tuners share: the restored geometry path, the semantic loss and the validation logic.

    ``encoder``/``udf_decoder`` are architecture specs: filled in from ``reconstructor_ckpt`` at the first
    construction and stored in the tuner's own checkpoints, from which it rebuilds without the reconstructor
    checkpoint (the weights then come from the tuner's state dict).

    ``reconstructor_ckpt`` must come from geometry pre-training or the joint baseline (:attr:`geometry_stages`):
    a tuner's checkpoint, or the unfrozen-encoder row's (whose encoder was trained by segmentation), is refused
    with a :class:`~ctxir.tasks.WrongStageError` naming the stage it found, unless ``accept_any_stage=True``
    says deliberately to take the encoder and UDF decoder of any checkpoint (also one that records no stage).
    """

    monitor, monitor_mode = "val/miou", "max"
    geometry_stages: tuple[str, ...] = (*GEOMETRY_STAGES, "joint")
    """Stages whose checkpoints may be restored as the geometry (the joint baseline's encoder and UDF decoder
    are a geometry model too)."""

    def __init__(
        self,
        *,
        modules: Mapping[str, ModuleOrSpec | None],
        reconstructor_ckpt: str | None,
        accept_any_stage: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(modules=modules, **kwargs)

    @property
    def train_encoder(self) -> bool:
        """Whether the encoder is trained (only the unfrozen-encoder row)."""
        return False

    def configure_models(self) -> None:
        """The geometry path (restored, or rebuilt from stored specs) and the semantic decoder."""
        if self.given["udf_decoder"] is None:  # first construction: architecture and weights from the checkpoint
            if self.hparams.reconstructor_ckpt is None:
                raise ValueError("give reconstructor_ckpt (a geometry checkpoint) to restore the geometry from")
            self.geometry = self.restore_geometry(self.hparams.reconstructor_ckpt)
        else:
            self.geometry = GeometryBackbone(
                self.given["encoder"], self.given["udf_decoder"], train_encoder=self.train_encoder,
                train_decoder=False,
            )
        self.semantic_decoder = self.given["semantic_decoder"]

    def restore_geometry(self, path: str) -> GeometryBackbone:
        """The frozen geometry path of ``path``, of a geometry stage unless ``accept_any_stage``."""
        stages = None if self.hparams.accept_any_stage else self.geometry_stages
        try:
            return GeometryBackbone.restore(path, train_encoder=self.train_encoder, stages=stages,
                                            option="reconstructor_ckpt")
        except WrongStageError as error:
            raise WrongStageError(f"{error}; set accept_any_stage=True to use its encoder and UDF decoder anyway") from None

    def module_specs(self) -> dict[str, nn.Module | None]:
        return {**super().module_specs(), "semantic_decoder": self.semantic_decoder}

    def configure_losses(self) -> None:
        self.segmentation_loss = segmentation_loss()

    def frozen_modules(self) -> list[nn.Module]:
        """The modules whose weights and BatchNorm statistics must not change."""
        return self.geometry.frozen_modules()

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        points, pb = batch[Key.POINTS], batch[Key.POINT_BATCH]
        encodings = self.geometry.encode(points, pb, batch.get(Key.ENCODINGS))
        neighbours = self.geometry.neighbours(points, batch[Key.QUERIES], pb, batch[Key.QUERY_BATCH])
        features = self.semantic_features(batch, encodings)
        logits = self.semantic_decoder(points, features, batch[Key.QUERIES], neighbours=neighbours)
        return {"encodings": encodings, "logits": logits, "neighbours": neighbours}

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self.segmentation_loss(self(batch)["logits"], batch[Key.QUERY_LABELS])
        self.log_losses("train", {"loss": loss}, num_clouds(batch))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        out = self(batch)
        loss = self.segmentation_loss(out["logits"], batch[Key.QUERY_LABELS])
        self.log_losses("val", {"loss": loss}, num_clouds(batch))
        self.update_semantic_metrics(out["logits"], batch[Key.QUERY_LABELS])
        udf = self.geometry.distance(batch[Key.POINTS], out["encodings"], batch[Key.QUERIES],
                                     neighbours=out["neighbours"])
        self.update_udf_metrics(udf, batch)


class FrozenSemanticTuner(SemanticTuner):
    """Stage 2: a semantic decoder trained on the frozen geometric encodings E_g.

    Args:
        semantic_decoder: a :class:`~ctxir.nn.SemanticDecoder` with ``feature_channels = d``.
        reconstructor_ckpt: the geometry checkpoint to restore (a joint baseline's is accepted too: its
            encoder and UDF decoder are a geometry model).
        accept_any_stage: restore ``reconstructor_ckpt`` whatever stage wrote it (see :class:`SemanticTuner`).
        freeze_encoder: ``False`` gives the paper's "unfrozen encoder" row: the encoder is trained by the
            segmentation loss alone (no geometric supervision; the UDF decoder stays frozen).
        encoder, udf_decoder: architecture specs; filled in from the checkpoint (leave unset).
        **kwargs: the shared arguments of :class:`~ctxir.tasks.base.SceneTask` (``lr``, ``lr_schedule``, ...).
    """

    def __init__(
        self,
        *,
        semantic_decoder: ModuleOrSpec,
        reconstructor_ckpt: str | None = None,
        accept_any_stage: bool = False,
        freeze_encoder: bool = True,
        encoder: Mapping[str, Any] | None = None,
        udf_decoder: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            modules={"semantic_decoder": semantic_decoder, "encoder": encoder, "udf_decoder": udf_decoder},
            reconstructor_ckpt=reconstructor_ckpt, accept_any_stage=accept_any_stage, **kwargs,
        )

    @property
    def train_encoder(self) -> bool:
        return not self.hparams.freeze_encoder

    @property
    def stage(self) -> str:  # type: ignore[override]
        return "unfrozen" if self.train_encoder else "frozen"

    def semantic_features(self, batch: Batch, encodings: Tensor) -> Tensor:
        return encodings


class ContextualisedTuner(SemanticTuner):
    """Stage 3: context features E_c = f_ctx(E_g) from the frozen encodings; the decoder reads E_g ⊕ E_c.

    Args:
        context_module: a :class:`~ctxir.nn.ContextModule` (``in_channels = d``, ``out_channels = l``).
        semantic_decoder: a :class:`~ctxir.nn.SemanticDecoder` with ``feature_channels = d + l``.
        reconstructor_ckpt: the geometry checkpoint to restore (a joint baseline's is accepted too).
        accept_any_stage: restore ``reconstructor_ckpt`` whatever stage wrote it (see :class:`SemanticTuner`).
        encoder, udf_decoder: architecture specs; filled in from the checkpoint (leave unset).
        **kwargs: the shared arguments of :class:`~ctxir.tasks.base.SceneTask` (``lr``, ``lr_schedule``, ...).
    """

    stage = "context"

    def __init__(
        self,
        *,
        context_module: ModuleOrSpec,
        semantic_decoder: ModuleOrSpec,
        reconstructor_ckpt: str | None = None,
        accept_any_stage: bool = False,
        encoder: Mapping[str, Any] | None = None,
        udf_decoder: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            modules={"context_module": context_module, "semantic_decoder": semantic_decoder, "encoder": encoder,
                     "udf_decoder": udf_decoder},
            reconstructor_ckpt=reconstructor_ckpt, accept_any_stage=accept_any_stage, **kwargs,
        )

    def configure_models(self) -> None:
        super().configure_models()
        self.context_module = self.given["context_module"]
        expected = self.context_module.in_channels + self.context_module.out_channels
        if self.semantic_decoder.feature_channels != expected:
            raise ValueError(
                f"the semantic decoder reads {self.semantic_decoder.feature_channels} channels, but E_g ⊕ E_c has "
                f"{self.context_module.in_channels} + {self.context_module.out_channels} = {expected}"
            )

    def module_specs(self) -> dict[str, nn.Module | None]:
        return {**super().module_specs(), "context_module": self.context_module}

    def semantic_features(self, batch: Batch, encodings: Tensor) -> Tensor:
        context = self.context_module(batch[Key.POINTS], encodings, batch[Key.POINT_BATCH])
        return torch.cat([encodings, context], dim=1)
