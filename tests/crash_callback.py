"""A callback that kills a fit at a given step (a crash, as far as the checkpoints can tell)."""

import lightning as L


class CrashAtStep(L.Callback):
    """Raise after the optimiser step that makes ``trainer.global_step == step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError(f"simulated crash at step {trainer.global_step}")
