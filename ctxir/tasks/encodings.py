"""Writing every scene's input points and geometric encodings E_g to disk, for tuning without the encoder.

Used as a prediction callback of a trained :class:`~ctxir.tasks.UDFReconstructor`::

    ctxir predict --config configs/synthetic/geometry.yaml \\
        --ckpt_path runs/synthetic/geometry/checkpoints/last.ckpt \\
        --data.init_args.predict_splits='[train, val, test]' \\
        --trainer.callbacks+=EncodingWriter --trainer.callbacks.output_dir=runs/synthetic/encodings

One ``<scene>.npz`` per scene in the format of :mod:`ctxir.data.encodings`; a DataModule with
``encodings_dir`` set reads them back, and both tuners then train, validate and test from the encodings
and the UDF decoder's weights alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from ctxir.data.encodings import encodings_path, write_encodings


class EncodingWriter(BasePredictionWriter):
    """Write the ``predict_step`` output of a :class:`~ctxir.tasks.UDFReconstructor`, one file per scene.

    Args:
        output_dir: folder of the ``<scene>.npz`` files (created).
    """

    def __init__(self, output_dir: str) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        cloud = prediction["point_batch"].cpu()
        points = prediction["points"].detach().cpu().numpy().astype(np.float32)
        encodings = prediction["encodings"].detach().cpu().numpy().astype(np.float32)
        labels = batch["point_labels"].cpu().numpy()
        for index, scene in enumerate(prediction["scene"]):
            rows = (cloud == index).numpy()
            write_encodings(encodings_path(self.output_dir, scene), points[rows], labels[rows], encodings[rows])
