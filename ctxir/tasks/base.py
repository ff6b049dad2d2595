"""What every task shares: batch layout, the optimiser, the validation metrics and the test protocol.

Validation logs (all synchronised across DDP ranks by torchmetrics):

* ``val/udf_mae`` — mean absolute error of the predicted distance of the query points, both sides clamped at
  the loss's clamp (0.1), where the UDF is meaningful;
* ``val/miou`` — ``MulticlassJaccardIndex`` of the query points' labels (macro, label −1 ignored);
* ``val/f1`` and ``val/f1/<class>`` — ``MulticlassF1Score`` of the query points, macro and per class.

Test (the paper's protocol, SPEC §4): per scene the surface is extracted from the UDF
(:func:`~ctxir.eval.extract_mesh`), ``test_num_points`` points are sampled on it, labelled by the semantic
decoder where the task has one, and scored against the scene's GT evaluation points: ``test/cd_l1``,
``test/cd_l2``, ``test/f1``, ``test/f1_2delta`` and ``test/miou``, ``test/mf1``, ``test/mf1_2delta``
(raw values; :func:`paper_row` formats them as the paper's Table 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

from ctxir.data.mesh import IGNORE_LABEL
from ctxir.eval import ReconstructionMetrics, SemanticMetrics, extract_mesh
from ctxir.eval.sampling import sample_mesh_surface

Batch = dict[str, Any]
TEST_BOUNDS = ((-0.55, -0.55, -0.55), (0.55, 0.55, 0.55))
"""Extraction grid: the unit cube of the normalised scenes plus a margin, so surfaces on its faces are kept."""


def paper_row(metrics: dict[str, float]) -> str:
    """Table 1's columns: CD-L1 ×10², CD-L2 ×10⁴, F1-δ, F1-2δ, then mF1-δ, mF1-2δ, mIoU where present."""
    cells = [f"CD-L1 {metrics['cd_l1'] * 1e2:.3f}", f"CD-L2 {metrics['cd_l2'] * 1e4:.3f}",
             f"F1-δ {metrics['f1']:.3f}", f"F1-2δ {metrics['f1_2delta']:.3f}"]
    if "miou" in metrics:
        cells += [f"mF1-δ {metrics['mf1']:.3f}", f"mF1-2δ {metrics['mf1_2delta']:.3f}", f"mIoU {metrics['miou']:.3f}"]
    return " | ".join(cells)


def num_clouds(batch: Batch) -> int:
    """Scenes in a collated batch."""
    return len(batch["scene"])


class SceneTask(L.LightningModule):
    """Base of the three tasks. Subclasses set ``monitor``/``monitor_mode`` for checkpointing callbacks."""

    monitor: str = "val/loss"
    monitor_mode: str = "min"

    def __init__(
        self,
        lr: float,
        clamp: float,
        num_classes: int,
        class_names: Sequence[str] | None,
        test_resolution: int,
        test_num_points: int,
    ) -> None:
        super().__init__()
        if class_names is not None and num_classes and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.lr, self.clamp, self.num_classes = lr, clamp, num_classes
        self.test_resolution, self.test_num_points = test_resolution, test_num_points
        self.test_reconstruction = ReconstructionMetrics()
        self.test_semantics = SemanticMetrics(num_classes) if num_classes else None
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.val_udf_mae = MeanMetric()
        if num_classes:
            self.val_miou = MulticlassJaccardIndex(num_classes, ignore_index=IGNORE_LABEL, average="macro")
            self.val_f1 = MulticlassF1Score(num_classes, ignore_index=IGNORE_LABEL, average="macro")
            self.val_f1_per_class = MulticlassF1Score(num_classes, ignore_index=IGNORE_LABEL, average=None)

    def setup(self, stage: str) -> None:
        """Check the classes against the DataModule's and adopt its class names when none were given."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        if not self.num_classes or not data_classes:
            return
        if data_classes != self.num_classes:
            raise ValueError(
                f"the semantic decoder predicts {self.num_classes} classes but {type(datamodule).__name__} has "
                f"{data_classes}"
            )
        if self.class_names == [str(i) for i in range(self.num_classes)]:
            self.class_names = list(datamodule.class_names)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over the trainable parameters (LightningCLI's ``--optimizer`` replaces this when given)."""
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.lr)

    # -- validation metrics ------------------------------------------------------------------------------
    def update_udf_metrics(self, pred: Tensor, target: Tensor) -> None:
        self.val_udf_mae.update((pred.clamp(max=self.clamp) - target.clamp(max=self.clamp)).abs())
        self.log("val/udf_mae", self.val_udf_mae, on_epoch=True, on_step=False)

    def update_semantic_metrics(self, logits: Tensor, labels: Tensor) -> None:
        pred = logits.argmax(dim=1)
        self.val_miou.update(pred, labels)
        self.val_f1.update(pred, labels)
        self.val_f1_per_class.update(pred, labels)
        self.log("val/miou", self.val_miou, on_epoch=True, on_step=False)
        self.log("val/f1", self.val_f1, on_epoch=True, on_step=False)

    def on_validation_epoch_end(self) -> None:
        if self.num_classes and self.val_f1_per_class.update_called:
            per_class = self.val_f1_per_class.compute()  # synchronised across ranks
            for name, value in zip(self.class_names, per_class):
                self.log(f"val/f1/{name}", value, sync_dist=False)
            self.val_f1_per_class.reset()

    def log_losses(self, stage: str, losses: dict[str, Tensor], batch_size: int) -> None:
        on_step = stage == "train"
        for name, value in losses.items():
            self.log(
                f"{stage}/{name}", value, on_step=on_step, on_epoch=not on_step, batch_size=batch_size,
                prog_bar=name == "loss", sync_dist=not on_step,
            )

    # -- test: the paper's protocol -----------------------------------------------------------------------
    def scene_fields(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """E_g (read by the UDF decoder) and the semantic decoder's features (``None`` without one)."""
        raise NotImplementedError

    def scene_mesh(self, points: Tensor, encodings: Tensor, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """``(vertices, faces)`` of one scene's surface, extracted from the UDF its ``encodings`` define."""

        def udf(queries: Tensor) -> Tensor:
            return self.udf_decoder(points, encodings, queries)

        return extract_mesh(udf, TEST_BOUNDS, resolution, device=points.device)

    def surface_points(self, batch: Batch, encodings: Tensor, scene: int) -> Tensor:
        """Extract scene ``scene``'s surface from the UDF and sample ``test_num_points`` points on it."""
        rows = batch["point_batch"] == scene
        points = batch["points"][rows]
        vertices, faces = self.scene_mesh(points, encodings[rows], self.test_resolution)
        if len(faces) == 0:
            return points.new_zeros(0, 3)
        samples, _ = sample_mesh_surface(vertices, faces, self.test_num_points, seed=scene)
        return torch.from_numpy(samples).to(points.device)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        if "eval_points" not in batch:
            raise RuntimeError("test batches need eval_points (GT surface samples): use the DataModule's test split")
        # E_g must not be an inference tensor: extraction differentiates the UDF through it
        with torch.inference_mode(False), torch.no_grad():
            encodings, features = self.scene_fields(batch)
            for scene in range(num_clouds(batch)):
                pred = self.surface_points(batch, encodings, scene)
                gt_rows = batch["eval_batch"] == scene
                gt_points, gt_labels = batch["eval_points"][gt_rows], batch["eval_labels"][gt_rows]
                self.test_reconstruction.update(pred, gt_points)
                if self.test_semantics is not None and features is not None:
                    rows = batch["point_batch"] == scene
                    logits = self.semantic_decoder(batch["points"][rows], features[rows], pred)
                    self.test_semantics.update(pred, logits.argmax(1), gt_points, gt_labels)

    def on_test_epoch_end(self) -> None:
        metrics = {k: float(v) for k, v in self.test_reconstruction.compute().items()}
        if self.test_semantics is not None and self.test_semantics.update_called:
            metrics.update({k: float(v) for k, v in self.test_semantics.compute().items()})
        self.log_dict({f"test/{k}": v for k, v in metrics.items()}, sync_dist=False)
        row = paper_row(metrics)
        if self.trainer.is_global_zero:
            print(f"\n{type(self).__name__} test ({int(self.test_reconstruction.num_scenes)} scenes): {row}")
        self.test_reconstruction.reset()
        if self.test_semantics is not None:
            self.test_semantics.reset()
