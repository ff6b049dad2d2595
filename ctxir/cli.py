"""The ``ctxir`` command: LightningCLI over every task and DataModule of the library.

    ctxir fit --config configs/synthetic/geometry.yaml
    ctxir test --config configs/synthetic/context.yaml --ckpt_path runs/synthetic/context/checkpoints/last.ckpt
    ctxir fit --model.help ContextualisedTuner

Classes can be named by their short names in configs (``class_path: UDFReconstructor``) because the task,
DataModule, network and callback modules are imported here.
"""

from __future__ import annotations

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningCLI

import ctxir.data  # noqa: F401  (short class names in configs)
import ctxir.data.datamodules  # noqa: F401
import ctxir.nn  # noqa: F401
import ctxir.tasks  # noqa: F401
from ctxir import __version__


def cli(args: ArgsType = None, run: bool = True) -> LightningCLI:
    """Build (and with ``run`` execute) the CLI; returns it, so callers can read ``cli.trainer``/``cli.model``."""
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
