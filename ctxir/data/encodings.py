"""The stored-encodings format: one ``<scene>.npz`` per scene, written by a trained encoder, read for tuning.

Tuning without the encoder (the paper's motivation) needs, per scene, the input points, their labels and
their geometric encodings E_g. :class:`~ctxir.tasks.EncodingWriter` writes them with :func:`write_encodings`;
a DataModule with ``encodings_dir`` reads them with :func:`read_encodings`. Arrays (no pickle):

* ``points`` (N, 3) float32 — the encoder's input points, in the normalised scene frame;
* ``point_labels`` (N,) int64 — their labels (−1 = ignore);
* ``encodings`` (N, d) float32 — E_g.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ctxir.core.io import atomic_write_stream
from ctxir.data.cache import READ_ERRORS, open_npz, safe_name

ENCODING_KEYS: tuple[str, ...] = ("points", "point_labels", "encodings")


def encodings_path(encodings_dir: str | os.PathLike, scene: str) -> Path:
    """Where the stored encodings of ``scene`` live."""
    return Path(encodings_dir) / f"{safe_name(scene)}.npz"


def write_encodings(path: str | os.PathLike, points: np.ndarray, point_labels: np.ndarray, encodings: np.ndarray) -> Path:
    """Write one scene's points, labels and encodings atomically (never a half-written file under ``path``)."""
    points, encodings = np.asarray(points, np.float32), np.asarray(encodings, np.float32)
    point_labels = np.asarray(point_labels, np.int64)
    if points.ndim != 2 or points.shape[1] != 3 or len(point_labels) != len(points) or len(encodings) != len(points):
        raise ValueError(
            f"{path}: expected points (N, 3), point_labels (N,) and encodings (N, d), got shapes "
            f"{points.shape}, {point_labels.shape}, {encodings.shape}"
        )
    arrays = {"points": points, "point_labels": point_labels, "encodings": encodings}
    return atomic_write_stream(path, lambda stream: np.savez(stream, **arrays))


def read_encodings(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of one stored-encodings file; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no stored encodings (write them with EncodingWriter)")
    try:
        with open_npz(path) as data:
            missing = set(ENCODING_KEYS) - set(data.files)
            if missing:
                raise ValueError(f"{path}: not an encodings file (missing {sorted(missing)})")
            arrays = {key: data[key] for key in ENCODING_KEYS}
    except READ_ERRORS as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"{path}: unreadable encodings file ({type(error).__name__}: {error})") from error
    if not (len(arrays["points"]) == len(arrays["point_labels"]) == len(arrays["encodings"])):
        raise ValueError(f"{path}: points, point_labels and encodings differ in length")
    return arrays
