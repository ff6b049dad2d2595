"""The ``ctxir`` command: LightningCLI over every task and DataModule of the library.

    ctxir fit --config configs/synthetic/geometry.yaml
    ctxir test --config configs/synthetic/context.yaml --ckpt_path runs/synthetic/context/checkpoints/last.ckpt
    ctxir fit --model.help ContextualisedTuner
    ctxir scan --ckpt_path runs/synthetic/context/checkpoints/best.ckpt --num_points 2048 room.ply  # your own scan

Classes can be named by their short names in configs (``class_path: UDFReconstructor``) because the task,
DataModule, network and callback modules are imported here.

A checkpoint given as ``--ckpt_path`` is vetted before Lightning merges its hyper-parameters into the config
(jsonargparse would import whatever classes they name): its module specs must be on the allow-list of
:mod:`ctxir.nn.config` and its weights finite. An error that ctxir raises while the CLI builds the task or the
DataModule reaches the user as that error, not wrapped in jsonargparse's "Does not validate against any of
the Union subtypes" and a dump of the config; the console script prints it as one paragraph.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningCLI

import ctxir.data  # noqa: F401  (short class names in configs)
import ctxir.data.datamodules  # noqa: F401
import ctxir.nn  # noqa: F401
import ctxir.tasks  # noqa: F401
from ctxir import __version__
from ctxir.core.memory import retain_freed_memory
from ctxir.nn.config import UntrustedModuleError
from ctxir.tasks.checkpoint import read_checkpoint

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The shipped configs ``<dataset>/<stage>.yaml``, installed with the package (a checkout's ``configs/`` links
here), so ``python -m ctxir.reproduce`` runs after a plain ``pip install``."""
PACKAGE_DIR = Path(__file__).resolve().parent
LIBRARY_ERRORS = (ValueError, OSError, RuntimeError, ArithmeticError)
"""Kinds of error ctxir raises on purpose (bad option, missing or damaged file, diverged model); one of these
raised by ctxir code is shown as its message alone."""
TRACEBACK_VARIABLE = "CTXIR_TRACEBACK"
"""Set it (to anything) to get the full traceback of a library error from the console script."""


class CtxirCLI(LightningCLI):
    """LightningCLI that vets ``--ckpt_path`` (see the module doc) before anything reads the checkpoint."""

    def parse_arguments(self, parser: ArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():  # "last"/"best" and missing files are Lightning's to resolve
            checkpoint = read_checkpoint(ckpt_path, "--ckpt_path")
            check_task_class(checkpoint.get("hyper_parameters", {}).get("_class_path"), f"--ckpt_path {ckpt_path}")


def check_task_class(path: object, where: str) -> None:
    """Refuse the task class a CLI-written checkpoint names (``_class_path``) unless it is a LightningModule that is
    imported already: Lightning would hand it to jsonargparse, which imports whatever module it names."""
    module_name, _, name = str(path).rpartition(".")
    found = getattr(sys.modules.get(module_name), name, None)
    if path is not None and not (isinstance(found, type) and issubclass(found, LightningModule)):
        raise UntrustedModuleError(f"{where}: refusing the task class {path!r}, not an imported LightningModule")


def library_error(error: BaseException) -> BaseException | None:
    """The error ctxir raised behind ``error`` (itself, or the cause jsonargparse wrapped it in), else ``None``."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, LIBRARY_ERRORS) and _raised_by_ctxir(current):
            return current
        current = current.__cause__
    return None


def _raised_by_ctxir(error: BaseException) -> bool:
    """Whether the innermost frame of ``error``'s traceback is ctxir code."""
    frame = error.__traceback__
    if frame is None:
        return False
    while frame.tb_next is not None:
        frame = frame.tb_next
    return Path(frame.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)


def cli(args: ArgsType = None, run: bool = True) -> LightningCLI:
    """Build (and with ``run`` execute) the CLI; returns it, so callers can read ``cli.trainer``/``cli.model``.

    A run closes its W&B run when it ends (also on error), so several runs in one process (a notebook, the
    reproduction script, tests) each log to their own W&B run instead of the first one's.
    """
    try:
        return _build(args, run)
    except LIBRARY_ERRORS as error:
        own = library_error(error)
        if own is None or own is error:
            raise
        own.__suppress_context__ = True  # jsonargparse's wrapper and config dump say nothing more
        raise own
    finally:
        if run:
            finish_wandb()


def finish_wandb() -> None:
    """Finish the active W&B run, if any (a no-op when wandb was never imported)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _build(args: ArgsType, run: bool) -> LightningCLI:
    return CtxirCLI(
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
    """The console script: run the CLI with ``args`` (``None``: the command line); ``ctxir scan ...`` runs
    :mod:`ctxir.scan.command` (reconstruct your own scans) instead of a LightningCLI subcommand. Freed memory
    is kept in the process (:func:`ctxir.core.memory.retain_freed_memory`)."""
    retain_freed_memory()
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, (list, tuple)) and list(argv[:1]) == ["scan"]:
        from ctxir.scan.command import run as scan  # imported for this subcommand only

        raise SystemExit(scan(list(argv[1:])))
    try:
        cli(args)
    except LIBRARY_ERRORS as error:
        if os.environ.get(TRACEBACK_VARIABLE) or library_error(error) is not error:
            raise
        raise SystemExit(f"ctxir: error: {error}\n(set {TRACEBACK_VARIABLE}=1 for the full traceback)") from None


if __name__ == "__main__":
    main()
