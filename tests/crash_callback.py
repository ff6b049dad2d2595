"""Callbacks of the CLI tests: one that kills a fit at a given step (a crash, as far as the checkpoints can tell),
one that records what a (resumed) run did."""

import lightning as L


class CrashAtStep(L.Callback):
    """Raise after the optimiser step that makes ``trainer.global_step == step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError(f"simulated crash at step {trainer.global_step}")


class StepRecorder(L.Callback):
    """Count the optimiser steps a run takes, and keep the step and the weights it starts training from."""

    def __init__(self) -> None:
        self.steps = 0
        self.start_step: int | None = None
        self.start_state: dict | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_step = trainer.global_step
        self.start_state = {key: value.detach().clone() for key, value in pl_module.state_dict().items()}

    def on_before_optimizer_step(self, *args: object) -> None:
        self.steps += 1
