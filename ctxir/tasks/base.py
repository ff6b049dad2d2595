"""What every task shares: batch layout, the optimiser, and the validation metrics.

Validation logs (all synchronised across DDP ranks by torchmetrics):

* ``val/udf_mae`` — mean absolute error of the predicted distance of the query points, both sides clamped at
  the loss's clamp (0.1), where the UDF is meaningful;
* ``val/miou`` — ``MulticlassJaccardIndex`` of the query points' labels (macro, label −1 ignored);
* ``val/f1`` and ``val/f1/<class>`` — ``MulticlassF1Score`` of the query points, macro and per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

from ctxir.data.mesh import IGNORE_LABEL

Batch = dict[str, Any]


def num_clouds(batch: Batch) -> int:
    """Scenes in a collated batch."""
    return len(batch["scene"])


class SceneTask(L.LightningModule):
    """Base of the three tasks. Subclasses set ``monitor``/``monitor_mode`` for checkpointing callbacks."""

    monitor: str = "val/loss"
    monitor_mode: str = "min"

    def __init__(self, lr: float, clamp: float, num_classes: int, class_names: Sequence[str] | None) -> None:
        super().__init__()
        if class_names is not None and num_classes and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.lr, self.clamp, self.num_classes = lr, clamp, num_classes
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
