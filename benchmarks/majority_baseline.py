"""Majority-class baseline of the quick start's semantic rows: mIoU of a constant label on its 4 test rooms.

Each room gets its own most frequent label, scored on its ground-truth surface points themselves (perfect
geometry), exactly as the test stage scores a tuner (``ctxir.eval.semantic_metrics``): an upper bound for any
constant predictor. Uses the data of ``configs/synthetic/context.yaml`` with the quick setting's 4 test rooms.

    python benchmarks/majority_baseline.py
"""

from __future__ import annotations

import numpy as np
import yaml

from ctxir.cli import CONFIG_DIR
from ctxir.data import SyntheticRoomsDataModule
from ctxir.data.keys import Key
from ctxir.eval import semantic_metrics

NUM_TEST = 4  # ctxir.reproduce's quick setting


def main() -> None:
    options = yaml.safe_load((CONFIG_DIR / "synthetic" / "context.yaml").read_text())["data"]["init_args"]
    datamodule = SyntheticRoomsDataModule(**{**options, "num_test": NUM_TEST})
    datamodule.prepare_data()
    datamodule.setup("test")
    scores = []
    for batch in datamodule.test_dataloader():
        points, labels, rooms = batch[Key.EVAL_POINTS], batch[Key.EVAL_LABELS], batch[Key.EVAL_BATCH]
        for room in rooms.unique():
            p, lab = points[rooms == room].numpy(), labels[rooms == room].numpy()
            majority = np.bincount(lab[lab >= 0]).argmax()
            scores.append(semantic_metrics(p, np.full(len(p), majority), p, lab, datamodule.num_classes)["miou"])
    print(f"majority-class mIoU per test room {[round(s, 3) for s in scores]}, mean {np.mean(scores):.3f}")


if __name__ == "__main__":
    main()
