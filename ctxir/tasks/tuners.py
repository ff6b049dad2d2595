"""Stages 2 and 3: semantics on frozen geometric encodings, directly or through the context module.

Both tuners restore the encoder and the UDF decoder of a :class:`~ctxir.tasks.UDFReconstructor` checkpoint
and freeze them: ``requires_grad=False`` and eval mode, kept through Lightning's ``.train()`` calls, so their
weights and BatchNorm statistics never move and reconstruction stays exactly that of geometry pre-training.

*Tuning without the encoder*: when batches carry precomputed ``encodings`` (written by
:class:`~ctxir.tasks.EncodingWriter`, read back with the DataModule's ``encodings_dir``), the encoder is not
run, and a checkpoint without encoder weights is accepted — only encodings and the UDF decoder are needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ctxir.nn.config import build_module, module_spec
from ctxir.nn.decoders import query_neighbours
from ctxir.tasks.base import Batch, SceneTask, num_clouds
from ctxir.tasks.checkpoint import load_strict, read_checkpoint, sub_state_dict


class SemanticTuner(SceneTask):
    """Shared restore/freeze/train logic; subclasses define the semantic features read by the decoder."""

    monitor, monitor_mode = "val/miou", "max"

    def __init__(
        self,
        semantic_decoder: nn.Module,
        reconstructor_ckpt: str | None,
        encoder: nn.Module | Mapping[str, Any] | None,
        udf_decoder: nn.Module | Mapping[str, Any] | None,
        freeze_encoder: bool,
        lr: float,
        clamp: float,
        class_names: Sequence[str] | None,
        test_resolution: int,
        test_num_points: int,
    ) -> None:
        semantic_decoder = build_module(semantic_decoder)
        super().__init__(lr, clamp, semantic_decoder.num_classes, class_names, test_resolution, test_num_points)
        if udf_decoder is None:  # first construction: architecture and weights from the reconstructor
            if reconstructor_ckpt is None:
                raise ValueError("give reconstructor_ckpt (a UDFReconstructor checkpoint) to restore from")
            encoder, udf_decoder = self._restore(reconstructor_ckpt)
        else:  # rebuilt from this tuner's own checkpoint: the weights follow from its state dict
            encoder = None if encoder is None else build_module(encoder)
            udf_decoder = build_module(udf_decoder)
        if encoder is None and not freeze_encoder:
            raise ValueError("freeze_encoder=False needs the encoder, but the checkpoint has no encoder weights")
        self.encoder, self.udf_decoder, self.semantic_decoder = encoder, udf_decoder, semantic_decoder
        self.freeze_encoder = freeze_encoder
        self.save_hyperparameters(ignore=["semantic_decoder", "encoder", "udf_decoder"])
        self.hparams["semantic_decoder"] = module_spec(semantic_decoder)
        self.hparams["encoder"] = None if encoder is None else module_spec(encoder)
        self.hparams["udf_decoder"] = module_spec(udf_decoder)
        for module in self.frozen_modules():
            module.requires_grad_(False)
            module.eval()

    @staticmethod
    def _restore(path: str) -> tuple[nn.Module | None, nn.Module]:
        checkpoint = read_checkpoint(path)
        hparams, state = checkpoint.get("hyper_parameters", {}), checkpoint["state_dict"]
        if not hparams.get("udf_decoder"):
            raise ValueError(f"{path}: not a UDFReconstructor checkpoint (no udf_decoder in its hyper-parameters)")
        udf_decoder = build_module(hparams["udf_decoder"])
        load_strict(udf_decoder, sub_state_dict(state, "udf_decoder"), str(path), "udf_decoder")
        encoder_state = sub_state_dict(state, "encoder")
        encoder = None
        if encoder_state:  # absent: encodings are read from disk instead
            encoder = build_module(hparams["encoder"])
            load_strict(encoder, encoder_state, str(path), "encoder")
        return encoder, udf_decoder

    def frozen_modules(self) -> list[nn.Module]:
        """The modules whose weights and BatchNorm statistics must not change."""
        modules = [self.udf_decoder]
        if self.encoder is not None and self.freeze_encoder:
            modules.append(self.encoder)
        return modules

    def train(self, mode: bool = True) -> SemanticTuner:
        """Switch training mode, keeping the frozen modules in eval mode."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def geometric_encodings(self, batch: Batch) -> Tensor:
        """E_g: read from the batch when precomputed, otherwise computed by the (frozen) encoder."""
        if "encodings" in batch:
            return batch["encodings"]
        if self.encoder is None:
            raise RuntimeError(
                "this tuner has no encoder (its checkpoint had no encoder weights): the DataModule must provide "
                "precomputed encodings (set its encodings_dir)"
            )
        with torch.set_grad_enabled(self.training and not self.freeze_encoder and torch.is_grad_enabled()):
            return self.encoder(batch["points"], batch["points"], batch["point_batch"])

    def semantic_features(self, batch: Batch, encodings: Tensor) -> Tensor:
        """The per-point features the semantic decoder reads."""
        raise NotImplementedError

    def scene_fields(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        encodings = self.geometric_encodings(batch)
        return encodings, self.semantic_features(batch, encodings)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        points, pb = batch["points"], batch["point_batch"]
        encodings = self.geometric_encodings(batch)
        neighbours = query_neighbours(points, batch["queries"], pb, batch["query_batch"], self.udf_decoder.k)
        features = self.semantic_features(batch, encodings)
        return {
            "encodings": encodings,
            "logits": self.semantic_decoder(points, features, batch["queries"], neighbours=neighbours),
            "neighbours": neighbours,
        }

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        out = self(batch)
        loss = nn.functional.cross_entropy(out["logits"], batch["query_labels"], ignore_index=-1)
        self.log_losses("train", {"loss": loss}, num_clouds(batch))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        out = self(batch)
        loss = nn.functional.cross_entropy(out["logits"], batch["query_labels"], ignore_index=-1)
        self.log_losses("val", {"loss": loss}, num_clouds(batch))
        self.update_semantic_metrics(out["logits"], batch["query_labels"])
        udf = self.udf_decoder(batch["points"], out["encodings"], batch["queries"], neighbours=out["neighbours"])
        self.update_udf_metrics(udf, batch["query_udf"])


class FrozenSemanticTuner(SemanticTuner):
    """Stage 2: a semantic decoder trained on the frozen geometric encodings E_g.

    Args:
        semantic_decoder: a :class:`~ctxir.nn.SemanticDecoder` with ``feature_channels = d``.
        reconstructor_ckpt: the :class:`~ctxir.tasks.UDFReconstructor` checkpoint to restore.
        freeze_encoder: ``False`` gives the paper's "unfrozen encoder" row: the encoder is trained by the
            segmentation loss alone (no geometric supervision; the UDF decoder stays frozen).
        lr: Adam learning rate.
        clamp: distance clamp of the logged UDF error.
        class_names: names of the classes (per-class logging).
        test_resolution: extraction grid nodes per axis at test time.
        test_num_points: points sampled on the extracted surface at test time (paper: 100,000).
        encoder, udf_decoder: architecture specs; filled in from the reconstructor and stored in this task's
            checkpoints (leave unset).
    """

    def __init__(
        self,
        semantic_decoder: nn.Module,
        reconstructor_ckpt: str | None = None,
        freeze_encoder: bool = True,
        lr: float = 1e-3,
        clamp: float = 0.1,
        class_names: Sequence[str] | None = None,
        test_resolution: int = 256,
        test_num_points: int = 100000,
        encoder: Mapping[str, Any] | None = None,
        udf_decoder: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(semantic_decoder, reconstructor_ckpt, encoder, udf_decoder, freeze_encoder, lr, clamp,
                         class_names, test_resolution, test_num_points)

    def semantic_features(self, batch: Batch, encodings: Tensor) -> Tensor:
        return encodings


class ContextualisedTuner(SemanticTuner):
    """Stage 3: context features E_c = f_ctx(E_g) from the frozen encodings; the decoder reads E_g ⊕ E_c.

    Args:
        context_module: a :class:`~ctxir.nn.ContextModule` (``in_channels = d``, ``out_channels = l``).
        semantic_decoder: a :class:`~ctxir.nn.SemanticDecoder` with ``feature_channels = d + l``.
        reconstructor_ckpt: the :class:`~ctxir.tasks.UDFReconstructor` checkpoint to restore.
        lr: Adam learning rate.
        clamp: distance clamp of the logged UDF error.
        class_names: names of the classes (per-class logging).
        test_resolution: extraction grid nodes per axis at test time.
        test_num_points: points sampled on the extracted surface at test time (paper: 100,000).
        encoder, udf_decoder: architecture specs; filled in from the reconstructor and stored in this task's
            checkpoints (leave unset).
    """

    def __init__(
        self,
        context_module: nn.Module,
        semantic_decoder: nn.Module,
        reconstructor_ckpt: str | None = None,
        lr: float = 1e-3,
        clamp: float = 0.1,
        class_names: Sequence[str] | None = None,
        test_resolution: int = 256,
        test_num_points: int = 100000,
        encoder: Mapping[str, Any] | None = None,
        udf_decoder: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(semantic_decoder, reconstructor_ckpt, encoder, udf_decoder, True, lr, clamp, class_names,
                         test_resolution, test_num_points)
        self.context_module = build_module(context_module)
        self.hparams["context_module"] = module_spec(self.context_module)
        expected = self.context_module.in_channels + self.context_module.out_channels
        if self.semantic_decoder.feature_channels != expected:
            raise ValueError(
                f"the semantic decoder reads {self.semantic_decoder.feature_channels} channels, but E_g ⊕ E_c has "
                f"{self.context_module.in_channels} + {self.context_module.out_channels} = {expected}"
            )

    def semantic_features(self, batch: Batch, encodings: Tensor) -> Tensor:
        context = self.context_module(batch["points"], encodings, batch["point_batch"])
        return torch.cat([encodings, context], dim=1)
