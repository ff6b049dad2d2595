"""``ctxir scan``: reconstruct and label your own scans with a trained checkpoint, one command.

    ctxir scan --ckpt_path runs/synthetic/context/checkpoints/best.ckpt --num_points 2048 \\
        --out_dir scans/ room.ply office.xyz

writes ``<name>.ply``, ``<name>_points.ply``, ``<name>.png`` and ``<name>.json`` per scan into ``--out_dir``
(:mod:`ctxir.scan.outputs`). Flags are spelled as in the LightningCLI subcommands (``--ckpt_path``, a
``--config`` YAML may hold them). A scan that fails writes nothing and the others still run; the command
exits with status 1 when any scan failed, naming the file and the problem.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from jsonargparse import ActionConfigFile, ArgumentParser

from ctxir.scan.files import ScanError, read_scan_points
from ctxir.scan.model import load_scan_model
from ctxir.scan.outputs import mesh_ply, output_paths, points_ply, publish, render_png, report, report_json
from ctxir.scan.reconstruct import DEFAULT_NUM_POINTS, reconstruct_scan
from ctxir.tasks.base import SceneTask


def build_parser() -> ArgumentParser:
    """The argument parser of ``ctxir scan``."""
    parser = ArgumentParser(prog="ctxir scan", description="Reconstruct and label your own scans with a trained "
                            "checkpoint: per scan <name>.ply, <name>_points.ply, <name>.png and <name>.json.")
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the flags below")
    parser.add_argument("--ckpt_path", type=str, required=True,
                        help="checkpoint of any ctxir stage (geometry gives an unlabelled mesh)")
    parser.add_argument("--out_dir", type=str, default="scan_outputs", help="folder the outputs are written to")
    parser.add_argument("--num_points", type=int, default=DEFAULT_NUM_POINTS,
                        help="points the encoder reads: the num_points the model was trained with (synthetic "
                             "configs: 2048); larger scans are subsampled (seeded random subset)")
    parser.add_argument("--resolution", type=int | None, default=None,
                        help="extraction grid nodes per axis (default: the checkpoint's test_resolution)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsample")
    parser.add_argument("--device", type=str, default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda:0', ...")
    parser.add_argument("files", nargs="+", type=str, help="scan files: .ply, .npy, .npz, .xyz or .txt")
    return parser


def scan_file(
    path: Path, model: SceneTask, out_dir: Path, *, checkpoint: str | None, num_points: int,
    resolution: int | None, seed: int,
) -> list[Path]:
    """Reconstruct one scan file and publish its four outputs (all or none); returns the paths written."""
    clock = time.perf_counter()
    points = read_scan_points(path)
    read_time = time.perf_counter() - clock
    result = reconstruct_scan(points, model, num_points=num_points, resolution=resolution, seed=seed, source=path)
    clock = time.perf_counter()
    paths = output_paths(out_dir, path.stem)
    contents = {
        paths["mesh"]: mesh_ply(result),
        paths["points"]: points_ply(points, result.point_labels, result.class_names),
        paths["render"]: render_png(result, path.name),
    }
    result.timings = {"read": read_time, **result.timings, "render": time.perf_counter() - clock}
    # the report is published last (outermost), so its presence means the other three are complete
    contents = {paths["report"]: report_json(report(result, str(path), checkpoint, len(points))), **contents}
    return publish(contents)


def check_names(files: Sequence[Path], out_dir: Path) -> None:
    """Refuse two scans with one output name, and outputs that would overwrite an input."""
    stems: dict[str, Path] = {}
    inputs = {p.resolve() for p in files}
    for path in files:
        if path.stem in stems:
            raise ScanError(path, f"has the same name as {stems[path.stem]}: their outputs would overwrite each other")
        stems[path.stem] = path
        clash = [p for p in output_paths(out_dir, path.stem).values() if p.resolve() in inputs]
        if clash:
            raise ScanError(path, f"its output {clash[0]} would overwrite an input file: choose another --out_dir")


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else the CPU; any other name as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(args: Sequence[str] | None = None) -> int:
    """Parse ``args``, scan every file; returns the exit status (0: every scan written, 1: any failed)."""
    options = build_parser().parse_args(args)
    files, out_dir = [Path(f) for f in options.files], Path(options.out_dir)
    try:
        check_names(files, out_dir)
        model = load_scan_model(options.ckpt_path).to(resolve_device(options.device))
    except (ScanError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"ctxir scan: error: {error}", file=sys.stderr)
        return 1
    failed = 0
    for path in files:
        clock = time.perf_counter()
        try:
            written = scan_file(path, model, out_dir, checkpoint=options.ckpt_path, num_points=options.num_points,
                                resolution=options.resolution, seed=options.seed)
        except ValueError as error:  # ScanError names the file already
            message = str(error) if isinstance(error, ScanError) else f"{path}: {error}"
            print(f"ctxir scan: error: {message}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: {', '.join(str(p) for p in sorted(written))} ({time.perf_counter() - clock:.1f} s)")
    return 1 if failed else 0


def main(args: Sequence[str] | None = None) -> None:
    """The ``ctxir scan`` entry: exits with :func:`run`'s status."""
    raise SystemExit(run(args))
