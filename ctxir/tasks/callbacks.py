"""Callbacks of the shipped configs: best and latest checkpoints, and the Table 1 report of a test run."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from ctxir.eval.report import table1_line


class BestAndLastCheckpoint(ModelCheckpoint):
    """``best.ckpt`` on the monitored metric and ``last.ckpt`` holding the latest state, from one config entry.

    Lightning's own ``save_last=True`` rewrites ``last.ckpt`` only when a new best is written (measured on 2.6:
    with a metric that stops improving, ``last.ckpt`` stayed at the best epoch and ``--ckpt_path last`` would
    silently repeat epochs). This callback is a plain ``ModelCheckpoint`` for the best model (its arguments),
    and at ``setup`` adds a second plain ``ModelCheckpoint`` to the trainer — same folder, no monitor, file
    ``last.ckpt`` — that saves after every epoch or, with ``every_n_train_steps``, every n optimiser steps.
    Both are public Lightning API; ``--ckpt_path last`` finds ``last.ckpt`` in the folder.

    Args:
        every_n_train_steps: how often ``last.ckpt`` is written (``None``: after every epoch).
        **kwargs: ``ModelCheckpoint``'s arguments for the best checkpoint (``dirpath``, ``filename``,
            ``monitor``, ``mode``, ...); ``save_last`` is not used.
    """

    def __init__(self, *, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        if kwargs.get("save_last"):
            raise ValueError("BestAndLastCheckpoint writes last.ckpt itself; do not set save_last")
        super().__init__(**kwargs)
        self.last_every_n_train_steps = every_n_train_steps
        self.latest: ModelCheckpoint | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.latest is None:
            steps = self.last_every_n_train_steps
            self.latest = ModelCheckpoint(
                dirpath=self.dirpath, filename=self.CHECKPOINT_NAME_LAST, monitor=None, save_top_k=1,
                enable_version_counter=False, every_n_train_steps=steps, every_n_epochs=None if steps else 1,
                save_on_train_epoch_end=True,  # every epoch, also when validation runs less often
            )
            trainer.callbacks.append(self.latest)  # visited by the hooks from now on, setup included


class TestReport(L.Callback):
    """Print a test run's metrics as the paper's Table 1 row (rank 0 only), e.g.
    ``ContextualisedTuner test (8 scenes): CD-L1 ×10² 0.712 | … | mIoU 0.412``."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {key.removeprefix("test/"): float(value) for key, value in trainer.callback_metrics.items()
                   if key.startswith("test/")}
        if trainer.is_global_zero and metrics:
            scenes = int(metrics.pop("num_scenes", 0))
            print(f"\n{type(pl_module).__name__} test ({scenes} scenes): {table1_line(metrics)}")
