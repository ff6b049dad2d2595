"""The paper's protocol on synthetic rooms: Table 1 (geometry only, joint, frozen, unfrozen, context) and the
Table 3 ablations (MLP context module, 3 scales, l ∈ {1, 2, 4}), written as Markdown and JSON.

    python -m ctxir.reproduce --setting quick --output runs/quickstart    # Table 1's rows, ≤ 15 min on 2 CPU cores
    python -m ctxir.reproduce --setting full --output runs/reproduce      # + unfrozen encoder and Table 3 ablations
    python -m ctxir.reproduce --setting quick --seed 1 --output runs/quickstart-seed1   # another training seed

Every run is a shipped config (``configs/synthetic/<stage>.yaml``) plus command-line overrides, executed by
the same LightningCLI as ``ctxir fit``/``ctxir test``, so the table is what those commands give. The order
follows the paper's motivation:

1. geometry pre-training; the encodings of every scene are written to disk and the encoder is deleted from
   a copy of the checkpoint (:func:`~ctxir.tasks.strip_encoder`);
2. frozen tuning, contextualised tuning and the ablations train and test from those encodings and the UDF
   decoder alone;
3. the joint baseline and the unfrozen-encoder row train the encoder, from the raw rooms;
4. figures: the t-SNE panels of Fig. 2 and a reconstructed test room coloured by the contextualised
   tuner's classes (PNG, also logged to W&B), and that room as a labelled PLY mesh.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxir.cli import CONFIG_DIR, cli, finish_wandb
from ctxir.core.memory import retain_freed_memory
from ctxir.eval.report import format_value, markdown_table, table1_cells, table1_titles

CONFIGS = CONFIG_DIR / "synthetic"

TABLE1 = ("geometry", "geometry-plane", "joint", "frozen", "unfrozen", "context")
ABLATIONS = ("context-mlp", "context-3-scales", "context-l1", "context-l2")
SEMANTICS = ("mf1", "mf1_2delta", "miou")


@dataclass(frozen=True)
class Setting:
    """How long each kind of run trains, and how finely its test surfaces are extracted."""

    encoder_epochs: int | None
    """Epochs of the runs that train the encoder (geometry, joint, unfrozen); ``None``: the config's."""
    tuner_epochs: int | None
    """Epochs of the runs on stored encodings (frozen, context, ablations); ``None``: the config's."""
    test_resolution: int | None
    test_num_points: int | None
    data: dict[str, Any] = field(default_factory=dict)
    """DataModule overrides."""
    rows: tuple[str, ...] | None = None
    """The rows run (``None``: all of :data:`RUNS`)."""
    trainer: dict[str, Any] = field(default_factory=dict)
    """Trainer overrides."""


SETTINGS = {
    "quick": Setting(None, None, None, None, {"num_test": 4}, rows=("geometry", "frozen", "context", "joint")),
    "full": Setting(None, None, None, None),
    "smoke": Setting(1, 1, 24, 1000, dict(num_train=2, num_val=1, num_test=1, batch_size=1, num_points=1024,
                                          num_queries=512, num_surface=1024, num_off_surface=1500,
                                          num_eval=1500), trainer={"check_val_every_n_epoch": 1}),
}
"""``quick``: the paper's Table 1 pattern (geometry, joint, frozen, context) with the shipped configs, ≤ 15 min
on a 2-core CPU; ``full``: every row, the Table 3 ablations too; ``smoke`` only checks the pipeline (tests), its
numbers mean nothing."""


@dataclass(frozen=True)
class Run:
    """One row: a config and the overrides that make it this row."""

    name: str
    stage: str
    overrides: tuple[str, ...] = ()
    from_encodings: bool = False
    """Train and test from the geometry run's stored encodings (frozen encoder), without the encoder."""

    @property
    def config(self) -> Path:
        return CONFIGS / f"{self.stage}.yaml"


def context_module(**init_args: Any) -> tuple[str, ...]:
    """Overrides of the context module's arguments, and of the semantic decoder's width when ``l`` changes."""
    overrides = [f"--model.init_args.context_module.init_args.{k}={v}" for k, v in init_args.items()]
    if "out_channels" in init_args:
        width = 32 + int(init_args["out_channels"])
        overrides.append(f"--model.init_args.semantic_decoder.init_args.feature_channels={width}")
    return tuple(overrides)


RUNS = (
    Run("geometry", "geometry"),
    Run("frozen", "frozen", from_encodings=True),
    Run("context", "context", from_encodings=True),
    Run("context-mlp", "context", context_module(kind="mlp"), from_encodings=True),
    Run("context-3-scales", "context", context_module(num_scales=3), from_encodings=True),
    Run("context-l1", "context", context_module(out_channels=1), from_encodings=True),
    Run("context-l2", "context", context_module(out_channels=2), from_encodings=True),
    Run("joint", "joint"),
    Run("unfrozen", "frozen", ("--model.init_args.freeze_encoder=false",)),
    Run("geometry-plane", "geometry", ("--model.init_args.udf_decoder=ctxir.nn.PlanePriorUDFDecoder",)),
)

LABELS = {
    "geometry": "Geometry only", "joint": "Joint (RangeUDF-style)", "frozen": "Frozen encoder",
    "unfrozen": "Unfrozen encoder", "context": "Contextualised (ours, l = 4)", "context-mlp": "MLP context module",
    "context-3-scales": "3 scales", "context-l1": "l = 1", "context-l2": "l = 2",
    "geometry-plane": "Geometry, plane-prior decoder (beyond the paper)",
}


class Reproduction:
    """Runs :data:`RUNS` in order under ``output`` and collects their test metrics and wall times."""

    def __init__(
        self, setting: str, output: str | Path, only: Sequence[str] | None = None, seed: int | None = None
    ) -> None:
        """``seed``: every run's ``seed_everything`` (weights, batches, query draws), ``None`` for the configs' 0;
        the rooms are the same for every seed (their generator has its own seed, ``generator_seed``)."""
        if setting not in SETTINGS:
            raise ValueError(f"unknown setting {setting!r}; choose one of {sorted(SETTINGS)}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.setting_name, self.setting, self.seed = setting, SETTINGS[setting], seed
        self.output = Path(output).resolve()
        rows = self.setting.rows if only is None else tuple(only)
        self.runs = [run for run in RUNS if rows is None or run.name in rows or run.name == "geometry"]
        self.results: dict[str, dict[str, Any]] = {}
        self.extra: dict[str, Any] = {}

    # -- the command lines -------------------------------------------------------------------------------
    def common(self, run: Run) -> list[str]:
        """Overrides every command of ``run`` shares: where it writes, the setting's sizes."""
        folder = self.output / run.name
        args = [
            f"--trainer.default_root_dir={folder}",
            f"--trainer.logger.init_args.save_dir={folder}",
            f"--trainer.logger.init_args.name=reproduce-{self.setting_name}-{run.name}",
            f"--trainer.callbacks.dirpath={folder / 'checkpoints'}",
            "--trainer.enable_progress_bar=false",
        ]
        if self.seed is not None:
            args.append(f"--seed_everything={self.seed}")
        s = self.setting
        if s.test_resolution is not None:
            args.append(f"--model.init_args.test_resolution={s.test_resolution}")
        if s.test_num_points is not None:
            args.append(f"--model.init_args.test_num_points={s.test_num_points}")
        args += [f"--data.init_args.{k}={v}" for k, v in s.data.items()]
        args += [f"--trainer.{k}={v}" for k, v in s.trainer.items()]
        epochs = s.tuner_epochs if run.from_encodings else s.encoder_epochs
        if epochs is not None:
            args.append(f"--trainer.max_epochs={epochs}")
        if run.stage in ("frozen", "context"):
            geometry = self.output / "geometry" / "checkpoints" / "best.ckpt"
            checkpoint = self.output / "geometry" / "no_encoder.ckpt" if run.from_encodings else geometry
            args.append(f"--model.init_args.reconstructor_ckpt={checkpoint}")
        if run.from_encodings:
            args.append(f"--data.init_args.encodings_dir={self.output / 'encodings'}")
        return args + list(run.overrides)

    # -- the protocol --------------------------------------------------------------------------------------
    def execute(self, run: Run) -> None:
        base = ["--config", str(run.config), *self.common(run)]
        start = time.perf_counter()
        fitted = cli(["fit", *base])
        fit_seconds = time.perf_counter() - start
        callback = fitted.trainer.checkpoint_callback
        best, score = callback.best_model_path, callback.best_model_score
        start = time.perf_counter()
        tested = cli(["test", *base, f"--ckpt_path={best}"])
        self.results[run.name] = {
            "label": LABELS[run.name],
            "config": f"configs/synthetic/{run.config.name}",
            "overrides": list(run.overrides),
            "from_encodings": run.from_encodings,
            "fit_seconds": round(fit_seconds, 1),
            "test_seconds": round(time.perf_counter() - start, 1),
            "monitor": callback.monitor,
            "best_val": None if score is None else float(score),
            "test": {k.removeprefix("test/"): float(v) for k, v in tested.trainer.callback_metrics.items()
                     if k.startswith("test/")},
        }
        if run.stage == "geometry":
            self.results[run.name]["val"] = self.validate(base, Path(best))
        if run.name == "geometry":
            self.write_encodings(base, Path(best))
        self.save()

    def validate(self, base: list[str], best: Path) -> dict[str, float]:
        """The best geometry checkpoint's validation UDF error and the learning-free baselines on the same
        queries (``val/udf_mae``, ``val/baseline/*``, overall and per σ pool)."""
        run = cli(["validate", *base, f"--ckpt_path={best}", "--trainer.logger=false"])
        return {k.removeprefix("val/"): float(v) for k, v in run.trainer.callback_metrics.items()
                if k.startswith(("val/udf_mae", "val/baseline/"))}

    def write_encodings(self, base: list[str], best: Path) -> None:
        """Every scene's E_g to ``encodings/``, and the checkpoint without its encoder."""
        from ctxir.tasks import strip_encoder

        start = time.perf_counter()
        cli(["predict", *base, f"--ckpt_path={best}", "--data.init_args.predict_splits=[train, val, test]",
             "--trainer.logger=false", "--trainer.callbacks+=ctxir.tasks.EncodingWriter",
             f"--trainer.callbacks.output_dir={self.output / 'encodings'}"])
        strip_encoder(best, self.output / "geometry" / "no_encoder.ckpt")
        self.results["geometry"]["encode_seconds"] = round(time.perf_counter() - start, 1)

    def __call__(self) -> dict[str, Any]:
        self.output.mkdir(parents=True, exist_ok=True)
        for run in self.runs:
            print(f"\n=== {run.name}: {LABELS[run.name]} ===", flush=True)
            self.execute(run)
        if {"geometry", "context", "joint"} <= set(self.results):
            from ctxir.reproduce_figures import make_figures

            self.extra["figures"] = make_figures(self.output, self.common(RUNS[0]))
            finish_wandb()
        self.save()
        return self.results

    # -- the tables --------------------------------------------------------------------------------------
    def save(self) -> None:
        """``results.json`` and ``results.md`` (rewritten after every run, so a long run can be watched)."""
        payload = {"setting": self.setting_name, "seed": self.seed, "runs": self.results, **self.extra}
        (self.output / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        (self.output / "results.md").write_text(
            markdown(self.setting_name, self.results, self.extra.get("total_seconds"), self.seed)
        )


def geometry_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """Validation UDF error of the geometry runs beside predicting 0 and the plane fit, per σ pool."""
    runs = [name for name in TABLE1 if "val" in results.get(name, {})]
    if not runs:
        return []
    first = results[runs[0]]["val"]
    bands = sorted({k.split("/sigma_")[1] for k in first if "/sigma_" in k}, key=float, reverse=True)

    def cells(values: dict[str, float], key: str) -> list[str]:
        return [format_value(values.get(key), 1e3), *(format_value(values.get(f"{key}/sigma_{b}"), 1e3) for b in bands)]

    rows = [[results[name]["label"], *cells(results[name]["val"], "udf_mae")] for name in runs]
    rows += [["Plane fit (no learning)", *cells(first, "baseline/plane_fit_mae")],
             ["Predict 0", *cells(first, "baseline/zero_mae")]]
    ratios = ", ".join(f"{results[n]['label']} {results[n]['val']['udf_mae'] / first['baseline/plane_fit_mae']:.2f}×"
                       for n in runs if first.get("baseline/plane_fit_mae"))
    return ["", "Validation UDF error (mean |min(f̂, 0.1) − min(d, 0.1)| ×10³ on the validation rooms' queries; "
            f"error / plane fit: {ratios}):", "",
            *markdown_table(["UDF", "all", *(f"σ = {b}" for b in bands)], rows)]


def markdown(
    setting: str, results: dict[str, dict[str, Any]], total_seconds: float | None = None, seed: int | None = None
) -> str:
    """Table 1 (reconstruction ×10²/×10⁴ as the paper prints them, then semantics) and Table 3."""
    trained = "" if seed is None else f", training seed {seed}"
    lines = [f"# Reproduction on synthetic rooms ({setting} setting{trained})", "",
             "Table 1 protocol: test rooms, surfaces extracted from the UDF, metrics as SPEC §4.", ""]
    rows = []
    for name in (n for n in TABLE1 if n in results):
        r = results[name]
        val = r["best_val"] if r["monitor"] == "val/miou" else None
        rows.append([r["label"], *table1_cells(r["test"]), format_value(val), f"{r['fit_seconds']:.0f}"])
    lines += markdown_table(["Method", *table1_titles(), "val mIoU", "fit (s)"], rows)
    lines += geometry_table(results)
    ablations = [name for name in ("context", *ABLATIONS) if name in results]
    if len(ablations) > 1:
        lines += ["", "Table 3 ablations (contextualised tuning on the same frozen encodings):", ""]
        rows = [[results[n]["label"], *(format_value(results[n]["test"].get(k)) for k in SEMANTICS),
                 format_value(results[n]["best_val"]), f"{results[n]['fit_seconds']:.0f}"] for n in ablations]
        lines += markdown_table(["Variant", "mF1-δ", "mF1-2δ", "mIoU", "val mIoU", "fit (s)"], rows)
    if {"frozen", "context", "joint"} <= set(results):
        joint, frozen, ctx = (results[n]["test"].get("miou") for n in ("joint", "frozen", "context"))
        if joint:
            lines += ["", f"Context mIoU / joint mIoU = {ctx / joint:.3f} (paper: ≥ 0.95); "
                          f"joint mIoU / frozen mIoU = {joint / frozen:.3f} (paper: about 2 on ScanNet)."]
        else:
            lines += ["", "Context mIoU / joint mIoU: undefined (the joint baseline's test mIoU is 0)."]
    if total_seconds is not None:
        lines += ["", f"Total wall time of the command: {total_seconds / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def _seed(text: str) -> int:
    """``--seed``'s type: a non-negative integer, or argparse's usage error naming the option."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", default="quick", choices=sorted(SETTINGS))
    parser.add_argument("--output", default="runs/reproduce")
    parser.add_argument("--only", nargs="*", help="run only these rows (geometry always runs)",
                        choices=[run.name for run in RUNS])
    parser.add_argument("--seed", type=_seed, default=None,
                        help="training seed of every run (default: the configs' 0); the rooms stay the same")
    args = parser.parse_args(argv)
    retain_freed_memory()  # CPU steps several times faster (ctxir.core.memory)
    start = time.perf_counter()
    reproduction = Reproduction(args.setting, args.output, args.only, args.seed)
    reproduction()
    reproduction.extra["total_seconds"] = round(time.perf_counter() - start, 1)
    reproduction.save()
    print(f"\n{(reproduction.output / 'results.md').read_text()}\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
