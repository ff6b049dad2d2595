"""The four files of a reconstructed scan, built in memory and published together or not at all.

Per scan ``<name>``:

* ``<name>.ply`` — the mesh with ``red, green, blue`` and an integer ``label`` per face (and per vertex, the
  majority of its faces, for viewers that show vertex colours only); class names as ``comment class <id>
  <name>`` lines; float64 coordinates in the scan's frame and units;
* ``<name>_points.ply`` — every input point (its original coordinates, float64) with its predicted ``label``
  and class colour;
* ``<name>.png`` — the labelled render of the mesh (:func:`~ctxir.eval.figures.render_labelled_points` on
  points sampled on it);
* ``<name>.json`` — class names, per-class surface area (squared units of the scan), the normalisation applied,
  sizes and timings.

Label ``-1`` (a geometry model predicts no classes) is grey. :func:`publish` writes all files to temporary
names first and renames them only when every one is complete, so a failure leaves no file under an output
name and never a mixture of old and new outputs from a half-finished scan.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ctxir.core.io import atomic_write
from ctxir.core.palette import class_colors, label_colors
from ctxir.eval.export import labelled_mesh_ply
from ctxir.eval.figures import render_labelled_points
from ctxir.eval.sampling import sample_mesh_surface
from ctxir.scan.reconstruct import ScanResult

RENDER_POINTS = 100000
"""Points sampled on the mesh for its render."""
SUFFIXES: dict[str, str] = {"mesh": ".ply", "points": "_points.ply", "render": ".png", "report": ".json"}
"""File name of each output after the scan's name."""


def output_paths(out_dir: str | PathLike[str], name: str) -> dict[str, Path]:
    """``{"mesh", "points", "render", "report"}`` → the output files of scan ``name`` in ``out_dir``."""
    return {kind: Path(out_dir) / f"{name}{suffix}" for kind, suffix in SUFFIXES.items()}


def mesh_ply(result: ScanResult) -> bytes:
    """``<name>.ply``: the labelled mesh (binary little-endian PLY, float64 coordinates)."""
    ply = labelled_mesh_ply(result.vertices, result.faces, result.face_labels, result.class_names,
                            coordinate_type="f8", where="scan mesh")
    return _ply_bytes(ply)


def points_ply(points: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> bytes:
    """``<name>_points.ply``: the input points (float64) with ``red, green, blue`` and ``label``."""
    from plyfile import PlyData, PlyElement

    rgb = label_colors(labels, class_colors(len(class_names)))
    data = np.empty(len(points), dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1"), ("green", "u1"),
                                        ("blue", "u1"), ("label", "<i4")])
    for axis, name in enumerate("xyz"):
        data[name] = points[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        data[name] = rgb[:, channel]
    data["label"] = labels
    comments = ["ctxir labelled scan points", *(f"class {i} {name}" for i, name in enumerate(class_names))]
    return _ply_bytes(PlyData([PlyElement.describe(data, "vertex")], text=False, byte_order="<", comments=comments))


def render_png(result: ScanResult, title: str) -> bytes:
    """``<name>.png``: top and perspective views of points sampled on the mesh, coloured by their face's class."""
    samples, face_index = sample_mesh_surface(result.vertices, result.faces, RENDER_POINTS, seed=0)
    figure = render_labelled_points(samples, result.face_labels[face_index], result.class_names)
    figure.suptitle(title)
    stream = io.BytesIO()
    figure.savefig(stream, format="png", dpi=120)
    return stream.getvalue()


def report(result: ScanResult, source: str, checkpoint: str | None, num_input: int) -> dict[str, Any]:
    """``<name>.json`` content: what was reconstructed from what, with how much surface per class."""
    areas = result.class_areas()
    return {
        "source": source,
        "checkpoint": checkpoint,
        "stage": result.stage,
        "labelled": bool(result.class_names),
        "class_names": list(result.class_names),
        "class_area": areas,
        "total_area": float(sum(areas.values())),
        "area_units": "squared units of the input coordinates",
        "normalisation": {
            "center": result.normalisation.center.tolist(),
            "scale": result.normalisation.scale,
            "rule": "normalised = (original - center) / scale; center = bounding-box centre of the input points, "
                    "scale = its longest side (the training normalisation, with the points' box standing in for "
                    "the scene mesh's)",
        },
        "num_input_points": num_input,
        "num_encoded_points": len(result.encoded),
        "subsampling": "seeded uniform random subset without replacement" if len(result.encoded) < num_input else "none",
        "resolution": result.resolution,
        "num_vertices": len(result.vertices),
        "num_faces": len(result.faces),
        "face_labels": "semantic decoder at each face centroid" if result.class_names else "none (-1: no classes)",
        "timings_s": {key: round(value, 4) for key, value in result.timings.items()},
    }


def report_json(content: Mapping[str, Any]) -> bytes:
    """The report as indented UTF-8 JSON."""
    return (json.dumps(content, indent=2) + "\n").encode("utf-8")


def publish(contents: Mapping[Path, bytes]) -> list[Path]:
    """Write every ``path → bytes`` so that either all files appear under their names or none does.

    Each file goes through :func:`~ctxir.core.io.atomic_write`, nested: a file's writer fills its temporary
    and then publishes the remaining files, so every temporary is complete before the first rename, and an
    error in any of them removes them all. Returns the paths, in order.
    """
    items = list(contents.items())
    if items:
        (path, data), rest = items[0], dict(items[1:])

        def write(temporary: Path) -> None:
            temporary.write_bytes(data)
            publish(rest)

        atomic_write(path, write)
    return [path for path, _ in items]


def _ply_bytes(ply: Any) -> bytes:
    """A ``plyfile.PlyData`` serialised in memory."""
    stream = io.BytesIO()
    ply.write(stream)
    return stream.getvalue()
