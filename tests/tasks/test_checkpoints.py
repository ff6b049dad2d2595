"""BestAndLastCheckpoint: when the monitored metric gets worse, best.ckpt stays at the best epoch while last.ckpt
keeps moving to the latest state (Lightning's own save_last rewrote last.ckpt only with a new best)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from ctxir.tasks import BestAndLastCheckpoint

SCORES = (0.5, 0.7, 0.6, 0.9)
"""The validation score of each epoch (lower is better): best at epoch 0, worse ever after."""


class Scripted(L.LightningModule):
    """One weight moved by SGD every step; validation logs the scripted score of the epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return (self.weight * batch).sum()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/score", SCORES[self.current_epoch])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(folder: Path, **options: object) -> tuple[Scripted, BestAndLastCheckpoint]:
    model = Scripted()
    callback = BestAndLastCheckpoint(dirpath=str(folder), filename="best", monitor="val/score", mode="min",
                                     enable_version_counter=False, **options)
    data = DataLoader(torch.ones(2, 1), batch_size=1)
    trainer = L.Trainer(max_epochs=len(SCORES), callbacks=[callback], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", devices=1)
    trainer.fit(model, data, data)
    return model, callback


def test_last_checkpoint_moves_on_when_the_metric_gets_worse(tmp_path: Path) -> None:
    model, callback = fit(tmp_path)
    best = torch.load(tmp_path / "best.ckpt", weights_only=True)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert (best["epoch"], best["global_step"]) == (0, 2)
    assert (last["epoch"], last["global_step"]) == (3, 8)
    assert float(callback.best_model_score) == pytest.approx(0.5)
    assert torch.equal(last["state_dict"]["weight"], model.weight.detach())  # the final weights: 1 − 8 · 0.1
    assert float(last["state_dict"]["weight"]) == pytest.approx(0.2)
    assert float(best["state_dict"]["weight"]) == pytest.approx(0.8)


def test_last_checkpoint_every_n_steps(tmp_path: Path) -> None:
    fit(tmp_path, every_n_train_steps=3)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 6  # the last multiple of 3
    assert torch.load(tmp_path / "best.ckpt", weights_only=True)["global_step"] == 2


def test_save_last_is_refused() -> None:
    with pytest.raises(ValueError, match="writes last.ckpt itself"):
        BestAndLastCheckpoint(save_last=True)
