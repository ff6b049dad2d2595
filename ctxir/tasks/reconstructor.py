"""Stage 1: geometry pre-training (encoder + UDF decoder), or the joint baseline with a semantic decoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ctxir.nn.config import build_module, module_spec
from ctxir.nn.decoders import query_neighbours
from ctxir.tasks.base import Batch, SceneTask, num_clouds
from ctxir.tasks.losses import UncertaintyWeighting, clamped_l1

ModuleOrSpec = nn.Module | Mapping[str, Any]


class UDFReconstructor(SceneTask):
    """Encoder → E_g → UDF decoder, trained with the clamped L1 loss.

    With a ``semantic_decoder`` it is the paper's joint baseline: the semantic decoder reads E_g too and the
    two losses are combined by learned uncertainty weights.

    Args:
        encoder: per-point encoder, called as ``encoder(points, points, point_batch)`` (xyz in, E_g out).
        udf_decoder: a :class:`~ctxir.nn.UDFDecoder` reading E_g.
        semantic_decoder: optional :class:`~ctxir.nn.SemanticDecoder` (joint baseline).
        lr: Adam learning rate.
        clamp: distance clamp of the loss (NDF: 0.1).
        surface_weight: weight of the input points' own distance (target 0) in the loss (RangeUDF: 0.1).
        class_names: names of the semantic classes (for per-class logging).
        test_resolution: extraction grid nodes per axis at test time.
        test_num_points: points sampled on the extracted surface at test time (paper: 100,000).

    ``encoder``/``udf_decoder``/``semantic_decoder`` may also be ``{"class_path", "init_args"}`` mappings (how
    they are stored in checkpoints, and how LightningCLI configs write them).
    """

    def __init__(
        self,
        encoder: nn.Module,
        udf_decoder: nn.Module,
        semantic_decoder: nn.Module | None = None,
        lr: float = 1e-3,
        clamp: float = 0.1,
        surface_weight: float = 0.1,
        class_names: Sequence[str] | None = None,
        test_resolution: int = 256,
        test_num_points: int = 100000,
    ) -> None:
        encoder, udf_decoder = build_module(encoder), build_module(udf_decoder)
        semantic_decoder = None if semantic_decoder is None else build_module(semantic_decoder)
        num_classes = getattr(semantic_decoder, "num_classes", 0)
        super().__init__(lr, clamp, num_classes, class_names, test_resolution, test_num_points)
        self.save_hyperparameters(ignore=["encoder", "udf_decoder", "semantic_decoder"])
        self.hparams["encoder"] = module_spec(encoder)
        self.hparams["udf_decoder"] = module_spec(udf_decoder)
        self.hparams["semantic_decoder"] = None if semantic_decoder is None else module_spec(semantic_decoder)
        self.encoder, self.udf_decoder, self.semantic_decoder = encoder, udf_decoder, semantic_decoder
        self.surface_weight = surface_weight
        self.loss_weighting = UncertaintyWeighting(2) if semantic_decoder is not None else None
        if semantic_decoder is not None:
            self.monitor, self.monitor_mode = "val/miou", "max"
        else:
            self.monitor, self.monitor_mode = "val/udf_mae", "min"

    def encode(self, batch: Batch) -> Tensor:
        """E_g of the batch's input points, ``(ΣN, d)``."""
        return self.encoder(batch["points"], batch["points"], batch["point_batch"])

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Encodings, query distances (and before the final ReLU) and (joint baseline) query logits of a batch."""
        points, pb = batch["points"], batch["point_batch"]
        encodings = self.encode(batch)
        neighbours = query_neighbours(points, batch["queries"], pb, batch["query_batch"], self.udf_decoder.k)
        raw = self.udf_decoder(points, encodings, batch["queries"], neighbours=neighbours, rectify=False)
        out = {"encodings": encodings, "udf_raw": raw, "udf": torch.relu(raw)}
        if self.semantic_decoder is not None:
            out["logits"] = self.semantic_decoder(points, encodings, batch["queries"], neighbours=neighbours)
        return out

    def _losses(self, batch: Batch, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """The clamped L1 reads the UDF before its final ReLU (``out["udf_raw"]``): equal to the rectified loss
        wherever the prediction is ≥ 0, but a query predicted below zero still gets a gradient. With the
        rectified output the decoder can fall into the all-zero solution and never leave it (measured: every
        query at 0 after 30 steps on the synthetic rooms, the loss stuck at the trivial value)."""
        clouds = num_clouds(batch)
        losses = {"udf_loss": clamped_l1(out["udf_raw"], batch["query_udf"], clouds, self.clamp)}
        if self.surface_weight and self.training:
            points, pb = batch["points"], batch["point_batch"]
            on_surface = self.udf_decoder(points, out["encodings"], points, pb, pb, rectify=False)
            losses["surface_loss"] = clamped_l1(on_surface, torch.zeros_like(on_surface), clouds, self.clamp)
            reconstruction = losses["udf_loss"] + self.surface_weight * losses["surface_loss"]
        else:
            reconstruction = losses["udf_loss"]
        if self.loss_weighting is None:
            losses["loss"] = reconstruction
        else:
            losses["seg_loss"] = nn.functional.cross_entropy(out["logits"], batch["query_labels"], ignore_index=-1)
            losses["loss"] = self.loss_weighting(reconstruction, losses["seg_loss"])
        return losses

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        losses = self._losses(batch, self(batch))
        self.log_losses("train", losses, num_clouds(batch))
        return losses["loss"]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        out = self(batch)
        self.log_losses("val", self._losses(batch, out), num_clouds(batch))
        self.update_udf_metrics(out["udf"], batch["query_udf"])
        if "logits" in out:
            self.update_semantic_metrics(out["logits"], batch["query_labels"])

    def scene_fields(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        encodings = self.encode(batch)
        return encodings, encodings if self.semantic_decoder is not None else None

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Input points and their encodings E_g (what :class:`~ctxir.tasks.EncodingWriter` stores)."""
        return {"scene": batch["scene"], "points": batch["points"], "point_batch": batch["point_batch"],
                "encodings": self.encode(batch)}
