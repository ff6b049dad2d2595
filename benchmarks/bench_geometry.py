"""Why the UDF did not learn, and what each fix buys: learning curves against two UDFs without learning.

The geometry model (published encoder + RangeUDF decoder) is trained on synthetic rooms with a sequence of
configurations, each adding one change to the previous one, starting from the recipe on main before the fix:

1. ``main``: NDF's flat clamped L1 (no gradient above the clamp), PyTorch's default output initialisation, the
   surface term (input points, target 0, weight 0.1) scored in a *second* decoder call, constant Adam 1e-3,
   4 rooms per batch;
2. ``+gradient``: the clamped L1 keeps its slope above the clamp where the target is within it;
3. ``+init``: the decoder's output layer starts at 1 % of its default scale;
4. ``+no surface call``: no second decoder call (the surface term off: the library default);
5. ``+one-cycle``: warm-up and cosine annealing, peak 6e-3;
6. ``+batch 2``: 2 rooms per batch (the demo config: twice the steps per second).

Each runs on one room (overfitting: validation queries of the same room) and on the demo's rooms (32 train,
8 validation rooms), for the same number of optimiser steps. Every ``--eval-every`` steps the validation error
(mean |min(f̂, 0.1) − min(d, 0.1)|, overall and per σ pool) is measured in eval mode and in train mode
(BatchNorm batch statistics; running statistics restored afterwards), beside predicting 0 and the plane fit
(:func:`ctxir.eval.baselines.plane_fit_udf`) on the same queries.

    python benchmarks/bench_geometry.py [--steps 576] [--single-steps 300] [--variants main +gradient ...]

Prints a table and writes ``benchmarks/results/bench_geometry.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctxir.core.io import atomic_write_bytes
from ctxir.data import SyntheticRoomsDataModule
from ctxir.data.keys import Key
from ctxir.eval.baselines import plane_fit_udf
from ctxir.nn import PointTransformerUNet, UDFDecoder
from ctxir.tasks.losses import clamped_l1

RESULTS = Path(__file__).parent / "results" / "bench_geometry.json"
CLAMP = 0.1
SIGMAS = (0.08, 0.02, 0.003)
SIZES = dict(num_points=2048, num_queries=4096, num_surface=2048, num_off_surface=20000, num_eval=2000)


@dataclass(frozen=True)
class Variant:
    """One training configuration."""

    above_clamp: str = "flat"
    output_init_scale: float = 1.0
    surface: str = "separate"  # "separate": main's second decoder call; "none"
    lr: float = 1e-3
    schedule: str = "constant"  # or "one_cycle"
    batch_size: int = 4


def variants() -> dict[str, Variant]:
    """The cumulative sequence of changes."""
    steps = {"main": Variant()}
    steps["+gradient"] = replace(steps["main"], above_clamp="gradient")
    steps["+init"] = replace(steps["+gradient"], output_init_scale=0.01)
    steps["+no surface call"] = replace(steps["+init"], surface="none")
    steps["+one-cycle"] = replace(steps["+no surface call"], lr=6e-3, schedule="one_cycle")
    steps["+batch 2"] = replace(steps["+one-cycle"], batch_size=2)
    return steps


def errors(pred: torch.Tensor, target: torch.Tensor, band: torch.Tensor) -> list[float]:
    """Clamped absolute error: overall, then per σ pool."""
    e = (pred.clamp(max=CLAMP) - target.clamp(max=CLAMP)).abs()
    return [float(e.mean())] + [float(e[band == i].mean()) for i in range(len(SIGMAS))]


class Experiment:
    """Train one variant, evaluating on fixed validation batches."""

    def __init__(self, variant: Variant, train: list[dict], val: list[dict], steps: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.variant, self.train_items, self.val, self.steps = variant, train, val, steps
        self.encoder = PointTransformerUNet(3, 32)
        self.decoder = UDFDecoder(32, output_init_scale=variant.output_init_scale)
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.optimiser = torch.optim.Adam(params, lr=variant.lr)
        self.schedule = (torch.optim.lr_scheduler.OneCycleLR(self.optimiser, variant.lr, total_steps=steps, pct_start=0.1)
                         if variant.schedule == "one_cycle" else None)
        self.rng = np.random.default_rng(seed)

    def batch(self) -> dict[str, torch.Tensor]:
        from ctxir.data.collate import collate_scenes

        picks = self.rng.choice(len(self.train_items), min(self.variant.batch_size, len(self.train_items)), replace=False)
        return collate_scenes([self.train_items[i]() for i in picks])

    def step(self) -> float:
        batch = self.batch()
        points, pb, clouds = batch[Key.POINTS], batch[Key.POINT_BATCH], len(batch[Key.SCENE])
        encodings = self.encoder(points, points, pb)
        raw = self.decoder(points, encodings, batch[Key.QUERIES], pb, batch[Key.QUERY_BATCH], rectify=False)
        loss = clamped_l1(raw, batch[Key.QUERY_UDF], clouds, CLAMP, self.variant.above_clamp)
        if self.variant.surface == "separate":  # main before the fix: a second call, its own BatchNorm batch
            on_surface = self.decoder(points, encodings, points, pb, pb, rectify=False)
            loss = loss + 0.1 * clamped_l1(on_surface, torch.zeros_like(on_surface), clouds, CLAMP, self.variant.above_clamp)
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        if self.schedule is not None:
            self.schedule.step()
        return float(loss.detach()) / len(batch[Key.QUERIES])

    @torch.no_grad()
    def evaluate(self, train_mode: bool) -> list[float]:
        modules = (self.encoder, self.decoder)
        saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
        for m in modules:
            m.train(train_mode)
        preds, targets, bands = [], [], []
        for batch in self.val:
            points, pb = batch[Key.POINTS], batch[Key.POINT_BATCH]
            encodings = self.encoder(points, points, pb)
            preds.append(self.decoder(points, encodings, batch[Key.QUERIES], pb, batch[Key.QUERY_BATCH]))
            targets.append(batch[Key.QUERY_UDF])
            bands.append(batch[Key.QUERY_BAND])
        for m, state in zip(modules, saved):
            m.load_state_dict(state)  # train-mode evaluation must not move the running statistics
            m.train()
        return errors(torch.cat(preds), torch.cat(targets), torch.cat(bands))

    def run(self, eval_every: int) -> dict[str, Any]:
        curve, start, train_loss = [], time.perf_counter(), []
        for step in range(1, self.steps + 1):
            train_loss.append(self.step())
            if step % eval_every == 0 or step == self.steps:
                curve.append({"step": step, "seconds": round(time.perf_counter() - start, 1),
                              "train_loss_per_query": float(np.mean(train_loss[-eval_every:])),
                              "val_eval_mode": self.evaluate(False), "val_train_mode": self.evaluate(True)})
                print(f"    step {step:4d} {curve[-1]['seconds']:6.0f}s  val (eval mode) "
                      + " ".join(f"{v:.5f}" for v in curve[-1]["val_eval_mode"]), flush=True)
        return {"variant": asdict(self.variant), "curve": curve}


def baselines(val: list[dict]) -> dict[str, list[float]]:
    zero, plane, targets, bands = [], [], [], []
    for batch in val:
        targets.append(batch[Key.QUERY_UDF])
        bands.append(batch[Key.QUERY_BAND])
        zero.append(torch.zeros_like(batch[Key.QUERY_UDF]))
        plane.append(plane_fit_udf(batch[Key.POINTS], batch[Key.QUERIES], batch[Key.POINT_BATCH], batch[Key.QUERY_BATCH]))
    target, band = torch.cat(targets), torch.cat(bands)
    return {"predict 0": errors(torch.cat(zero), target, band), "plane fit": errors(torch.cat(plane), target, band)}


def setting(name: str, cache: str, steps: int) -> tuple[list, list[dict]]:
    """Training item factories (fresh queries at every draw) and fixed validation batches."""
    from ctxir.data.collate import collate_scenes

    if name == "single room":
        dm = SyntheticRoomsDataModule(num_train=1, num_val=0, num_test=0, cache_dir=cache, **SIZES)
        dm.prepare_data()
        train = dm.make_dataset("train")
        val_set = dm.make_dataset("train", with_eval_points=False)
        val_set.deterministic = True  # fixed held-out queries of the same room
    else:
        dm = SyntheticRoomsDataModule(num_train=32, num_val=8, num_test=0, cache_dir=cache, **SIZES)
        dm.prepare_data()
        train, val_set = dm.make_dataset("train"), dm.make_dataset("val")
    items = [lambda i=i: train[i] for i in range(len(train))]
    val = [collate_scenes([val_set[i] for i in range(j, min(j + 2, len(val_set)))]) for j in range(0, len(val_set), 2)]
    return items, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=576, help="optimiser steps on the demo's rooms")
    parser.add_argument("--single-steps", type=int, default=300, help="optimiser steps on one room")
    parser.add_argument("--eval-every", type=int, default=96)
    parser.add_argument("--variants", nargs="*", default=list(variants()), choices=list(variants()))
    parser.add_argument("--settings", nargs="*", default=["single room", "demo rooms"], choices=["single room", "demo rooms"])
    parser.add_argument("--cache", default=".cache/ctxir")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"sigmas": SIGMAS, "settings": {}}
    for name in args.settings:
        steps = args.single_steps if name == "single room" else args.steps
        items, val = setting(name, args.cache, steps)
        entry = {"steps": steps, "baselines": baselines(val), "runs": {}}
        report["settings"][name] = entry
        print(f"\n== {name}: {len(items)} training rooms, {steps} steps; baselines " + json.dumps(
            {k: [round(x, 5) for x in v] for k, v in entry["baselines"].items()}), flush=True)
        for label in args.variants:
            print(f"  -- {label}", flush=True)
            entry["runs"][label] = Experiment(variants()[label], items, val, steps).run(args.eval_every)
            atomic_write_bytes(RESULTS, (json.dumps(report, indent=1) + "\n").encode())
    print_table(report)


def print_table(report: dict[str, Any]) -> None:
    bands = " ".join(f"σ={s:<6g}" for s in SIGMAS)
    for name, entry in report["settings"].items():
        plane = entry["baselines"]["plane fit"][0]
        print(f"\n{name} ({entry['steps']} steps). Validation error, eval mode (train mode); all, then {bands}")
        for label, values in entry["baselines"].items():
            print(f"  {label:18s} {' '.join(f'{v:.5f}' for v in values)}")
        for label, run in entry["runs"].items():
            last = run["curve"][-1]
            ratio = last["val_eval_mode"][0] / plane if plane > 0 else math.nan
            print(f"  {label:18s} {' '.join(f'{v:.5f}' for v in last['val_eval_mode'])}  "
                  f"({last['val_train_mode'][0]:.5f})  {ratio:.2f}× plane fit  {last['seconds']:.0f} s")


if __name__ == "__main__":
    main()
