"""Checkpointing that keeps both the best model and the latest state."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class BestAndLastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` always holds the latest state, so ``--ckpt_path last`` resumes.

    Since Lightning 2.5, ``save_last=True`` writes ``last.ckpt`` only when a top-k checkpoint is written: with a
    monitored metric that stops improving, ``last.ckpt`` stays at the best epoch and a resumed fit would
    silently repeat epochs (measured: the synthetic geometry run's ``last.ckpt`` stayed at epoch 14 of 25). This
    subclass also writes ``last.ckpt`` at every validation end and, with ``every_n_train_steps``, after every
    n-th step, while the best checkpoint follows the monitored metric as usual. Same arguments as
    ``ModelCheckpoint``; ``save_last`` defaults to ``True``.
    """

    def __init__(self, *args: Any, save_last: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, save_last=save_last, **kwargs)

    def _save_latest(self, trainer: L.Trainer) -> None:
        if not self.save_last or self._should_skip_saving_checkpoint(trainer):
            return
        step_of_best_logic = self._last_global_step_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_global_step_saved = step_of_best_logic  # the monitored checkpoint must still be considered

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        every = self._every_n_train_steps
        if every >= 1 and trainer.global_step % every == 0:
            self._save_latest(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_latest(trainer)
