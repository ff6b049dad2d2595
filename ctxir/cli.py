"""The ``ctxir`` command: LightningCLI over every task and DataModule of the library.

    ctxir fit --config configs/synthetic/geometry.yaml
    ctxir test --config configs/synthetic/context.yaml --ckpt_path runs/synthetic/context/checkpoints/last.ckpt
    ctxir fit --model.help ContextualisedTuner

Classes can be named by their short names in configs (``class_path: UDFReconstructor``) because the task,
DataModule, network and callback modules are imported here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningCLI

import ctxir.data  # noqa: F401  (short class names in configs)
import ctxir.data.datamodules  # noqa: F401
import ctxir.nn  # noqa: F401
import ctxir.tasks  # noqa: F401
from ctxir import __version__

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The shipped configs ``<dataset>/<stage>.yaml``, installed with the package (a checkout's ``configs/`` links
here), so ``python -m ctxir.reproduce`` runs after a plain ``pip install``."""


def cli(args: ArgsType = None, run: bool = True) -> LightningCLI:
    """Build (and with ``run`` execute) the CLI; returns it, so callers can read ``cli.trainer``/``cli.model``.

    A run closes its W&B run when it ends (also on error), so several runs in one process (a notebook, the
    reproduction script, tests) each log to their own W&B run instead of the first one's.
    """
    try:
        return _build(args, run)
    finally:
        if run:
            finish_wandb()


def finish_wandb() -> None:
    """Finish the active W&B run, if any (a no-op when wandb was never imported)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _build(args: ArgsType, run: bool) -> LightningCLI:
    return LightningCLI(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"version": f"ctxir {__version__}"},
        args=args,
        run=run,
    )


def main(args: ArgsType = None) -> None:
    """The console script: run the CLI with ``args`` (``None``: the command line)."""
    cli(args)


if __name__ == "__main__":
    main()
