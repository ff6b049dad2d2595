"""Reconstruct and label your own scan: point cloud files → labelled mesh in the scan's own frame.

* :func:`label_scan` — ``(N, 3)`` points and a task or checkpoint → ``(vertices, faces, face_labels)``;
* :func:`reconstruct_scan` — the same with everything else (labels of the input points, normalisation, timings);
* :func:`load_scan_model` — any stage's checkpoint rebuilt as its task (geometry: unlabelled meshes);
* :func:`read_scan_points` — points of a ``.ply``, ``.npy``, ``.npz``, ``.xyz`` or ``.txt`` file;
* ``ctxir scan`` (:mod:`ctxir.scan.command`) — the command writing ``<name>.ply``, ``<name>_points.ply``,
  ``<name>.png`` and ``<name>.json`` per scan.
"""

from ctxir.scan.files import ScanError, check_scan_points, read_scan_points
from ctxir.scan.model import load_scan_model
from ctxir.scan.reconstruct import DEFAULT_NUM_POINTS, Normalisation, ScanResult, label_scan, reconstruct_scan

__all__ = [
    "DEFAULT_NUM_POINTS",
    "Normalisation",
    "ScanError",
    "ScanResult",
    "check_scan_points",
    "label_scan",
    "load_scan_model",
    "read_scan_points",
    "reconstruct_scan",
]
