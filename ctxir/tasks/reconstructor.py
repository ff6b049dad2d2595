"""Stage 1: geometry pre-training (encoder + UDF decoder), or the joint baseline with a semantic decoder."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ctxir.data.keys import Key
from ctxir.eval.baselines import plane_fit_udf
from ctxir.eval.metrics import UDFError
from ctxir.nn.config import ModuleOrSpec
from ctxir.tasks.backbone import GeometryBackbone
from ctxir.tasks.base import Batch, SceneTask, num_clouds
from ctxir.tasks.losses import AboveClamp, ReconstructionLoss, UncertaintyWeighting, segmentation_loss


class UDFReconstructor(SceneTask):
    """Encoder → E_g → UDF decoder, trained with the clamped L1 loss.

    With a ``semantic_decoder`` it is the paper's joint baseline: the semantic decoder reads E_g too and the
    two losses are combined by learned uncertainty weights (Kendall et al.).

    Validation also logs two UDFs without learning on the same queries, which the model must beat:
    ``val/baseline/zero_mae`` (predicting 0) and ``val/baseline/plane_fit_mae`` (the distance to the PCA tangent
    plane of the nearest input point, :func:`~ctxir.eval.baselines.plane_fit_udf`), each also per σ pool.

    Args:
        encoder: per-point encoder, called as ``encoder(points, points, point_batch)`` (xyz in, E_g out).
        udf_decoder: a :class:`~ctxir.nn.UDFDecoder` reading E_g.
        semantic_decoder: optional :class:`~ctxir.nn.SemanticDecoder` (joint baseline).
        above_clamp: the UDF loss above its clamp, ``"gradient"`` (default) or NDF's ``"flat"``
            (:func:`~ctxir.tasks.losses.clamped_l1`).
        surface_weight: weight of the input points' own distance (target 0) in the loss (RangeUDF: 0.1). Default
            0: on the synthetic rooms the term made the validation error worse (``benchmarks/bench_geometry.py``).
        weighting_lr: learning rate of the joint baseline's two log-variances. They follow the losses' scales,
            which differ by about two orders of magnitude (a summed L1 over thousands of queries against one
            cross-entropy); at the network's learning rate Adam moves them by about ``lr`` per step, too slowly
            to balance the tasks in a short fit. ``None``: the network's ``lr``.
        **kwargs: the shared arguments of :class:`~ctxir.tasks.base.SceneTask` (``lr``, ``lr_schedule``, ...).

    ``encoder``/``udf_decoder``/``semantic_decoder`` may also be ``{"class_path", "init_args"}`` mappings (how
    they are stored in checkpoints, and how LightningCLI configs write them).
    """

    def __init__(
        self,
        *,
        encoder: ModuleOrSpec,
        udf_decoder: ModuleOrSpec,
        semantic_decoder: ModuleOrSpec | None = None,
        above_clamp: AboveClamp = "gradient",
        surface_weight: float = 0.0,
        weighting_lr: float | None = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            modules={"encoder": encoder, "udf_decoder": udf_decoder, "semantic_decoder": semantic_decoder}, **kwargs
        )

    @property
    def stage(self) -> str:  # type: ignore[override]
        return "joint" if self.semantic_decoder is not None else "geometry"

    @property
    def monitor(self) -> str:  # type: ignore[override]
        return "val/miou" if self.semantic_decoder is not None else "val/udf_mae"

    @property
    def monitor_mode(self) -> str:  # type: ignore[override]
        return "max" if self.semantic_decoder is not None else "min"

    def configure_models(self) -> None:
        self.geometry = GeometryBackbone(self.given["encoder"], self.given["udf_decoder"])
        self.semantic_decoder = self.given["semantic_decoder"]

    def module_specs(self) -> dict[str, Any]:
        return {**super().module_specs(), "semantic_decoder": self.semantic_decoder}

    def configure_losses(self) -> None:
        self.reconstruction_loss = ReconstructionLoss(
            self.hparams.clamp, self.hparams.above_clamp, self.hparams.surface_weight
        )
        self.segmentation_loss = segmentation_loss() if self.semantic_decoder is not None else None
        self.loss_weighting = UncertaintyWeighting(2) if self.semantic_decoder is not None else None

    def configure_metrics(self) -> None:
        super().configure_metrics()
        self.val_zero_error = UDFError(self.val_udf_error.num_bands, self.hparams.clamp)
        self.val_plane_fit_error = UDFError(self.val_udf_error.num_bands, self.hparams.clamp)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.val_zero_error.num_bands != self.val_udf_error.num_bands:
            self.val_zero_error = UDFError(self.val_udf_error.num_bands, self.hparams.clamp)
            self.val_plane_fit_error = UDFError(self.val_udf_error.num_bands, self.hparams.clamp)

    def optimiser_groups(self) -> list[dict[str, Any]]:
        """The network's parameters, and the log-variances at ``weighting_lr`` (joint baseline)."""
        if self.loss_weighting is None or self.hparams.weighting_lr is None:
            return super().optimiser_groups()
        weighting = list(self.loss_weighting.parameters())
        network = [p for p in self.parameters() if p.requires_grad and all(p is not w for w in weighting)]
        return [{"params": network}, {"params": weighting, "lr": self.hparams.weighting_lr}]

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Encodings, query distances (``udf``; before the final ReLU ``udf_raw``) and, for the joint baseline,
        query logits. In training with a surface term, the input points are scored in the same decoder call."""
        points, pb = batch[Key.POINTS], batch[Key.POINT_BATCH]
        queries, qb = batch[Key.QUERIES], batch[Key.QUERY_BATCH]
        encodings = self.geometry.encode(points, pb)
        neighbours = self.geometry.neighbours(points, queries, pb, qb)
        out: dict[str, Tensor] = {"encodings": encodings}
        if self.training and self.hparams.surface_weight:
            # queries and surface points as one decoder batch (one BatchNorm batch composition)
            both, both_batch = torch.cat([queries, points]), torch.cat([qb, pb])
            order = torch.argsort(both_batch, stable=True)
            raw = torch.empty(len(both), device=points.device, dtype=points.dtype)
            raw[order] = self.geometry.distance(points, encodings, both[order], pb, both_batch[order], rectify=False)
            out["udf_raw"], out["surface_raw"] = raw[: len(queries)], raw[len(queries):]
        else:
            out["udf_raw"] = self.geometry.distance(points, encodings, queries, neighbours=neighbours, rectify=False)
        out["udf"] = torch.relu(out["udf_raw"])
        if self.semantic_decoder is not None:
            out["logits"] = self.semantic_decoder(points, encodings, queries, neighbours=neighbours)
        return out

    def losses(self, batch: Batch, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """The loss terms; the UDF terms read the values before the final ReLU (queries predicted below zero
        keep a gradient; with the rectified output the decoder can fall into the all-zero solution)."""
        losses = self.reconstruction_loss(out["udf_raw"], batch[Key.QUERY_UDF], num_clouds(batch), out.get("surface_raw"))
        reconstruction = losses.pop("reconstruction")
        if self.loss_weighting is None:
            losses["loss"] = reconstruction
        else:
            assert self.segmentation_loss is not None
            losses["seg_loss"] = self.segmentation_loss(out["logits"], batch[Key.QUERY_LABELS])
            losses["loss"] = self.loss_weighting(reconstruction, losses["seg_loss"])
        return losses

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        losses = self.losses(batch, self(batch))
        self.log_losses("train", losses, num_clouds(batch))
        return losses["loss"]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        out = self(batch)
        self.log_losses("val", self.losses(batch, out), num_clouds(batch))
        self.update_udf_metrics(out["udf"], batch)
        band, target = batch[Key.QUERY_BAND], batch[Key.QUERY_UDF]
        self.val_zero_error.update(torch.zeros_like(target), target, band)
        plane = plane_fit_udf(batch[Key.POINTS], batch[Key.QUERIES], batch[Key.POINT_BATCH], batch[Key.QUERY_BATCH])
        self.val_plane_fit_error.update(plane, target, band)
        if "logits" in out:
            self.update_semantic_metrics(out["logits"], batch[Key.QUERY_LABELS])

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.val_zero_error.update_called:
            self.log_udf_error(self.val_zero_error, "val/baseline/zero_mae")
            self.log_udf_error(self.val_plane_fit_error, "val/baseline/plane_fit_mae")

    def semantic_features(self, batch: Batch, encodings: Tensor) -> Tensor | None:
        return encodings if self.semantic_decoder is not None else None

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Input points and their encodings E_g (what :class:`~ctxir.tasks.EncodingWriter` stores)."""
        return {Key.SCENE: batch[Key.SCENE], Key.POINTS: batch[Key.POINTS], Key.POINT_BATCH: batch[Key.POINT_BATCH],
                Key.ENCODINGS: self.geometry.encode(batch[Key.POINTS], batch[Key.POINT_BATCH])}
