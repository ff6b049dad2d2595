"""A scan's points → a reconstructed, labelled mesh in the scan's own frame: the Python API of ``ctxir scan``.

The steps are the test stage's (:meth:`~ctxir.tasks.base.SceneTask.test_step`), applied to points that come
with no preprocessing:

1. **Normalise as the training data were** (:func:`~ctxir.data.preprocess.normalise_vertices`): centre on the
   bounding-box centre, divide by the longest side. Training normalises by the scene *mesh*'s box; a scan
   has no mesh, so the box of its points stands in for it (the two agree for a scan that covers the room).
   Done in float64 and only then cast to float32, so a scan thousands of metres from the origin loses no
   precision.
2. **Subsample to the model's input size** ``num_points``: a seeded uniform random subset without
   replacement (sorted), the same draw the test stage makes from a scene's cached surface samples
   (:class:`~ctxir.data.dataset.SceneDataset`): the encoder was trained on i.i.d. area-uniform samples, and
   a random subset of a scan keeps the scan's own sampling instead of imposing farthest-point sampling's
   even spacing, which training never showed the encoder. A scan with fewer points is refused.
3. **Encode** (E_g, and the semantic features: E_g, or E_g ⊕ E_c for the contextualised tuner) through the
   task's own :meth:`~ctxir.tasks.base.SceneTask.scene_fields`.
4. **Extract** the surface with :meth:`~ctxir.tasks.base.SceneTask.scene_mesh` on the test stage's grid (the
   normalised unit cube plus a margin) at ``resolution`` nodes per axis (default: the checkpoint's
   ``test_resolution``).
5. **Label** each face by the semantic decoder at its centroid (a point on the face, as the test stage labels
   points sampled on the surface, so a face's class is the model's prediction there with no voting rule on
   top), and every input point (all of them, not only the subsample) at its own position. Without a
   semantic decoder (geometry checkpoints) every label is ``-1``.
6. **Map back**: vertices ``* scale + center`` in float64, so the mesh lies in the scan's frame and units.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from os import PathLike

import numpy as np
import torch
from torch import Tensor

from ctxir.data.keys import Key
from ctxir.data.mesh import IGNORE_LABEL
from ctxir.data.preprocess import normalise_vertices
from ctxir.eval.figures import subsample_indices
from ctxir.scan.files import ScanError, check_scan_points
from ctxir.scan.model import load_scan_model
from ctxir.tasks.base import SceneTask

DEFAULT_NUM_POINTS = 10240
"""Encoder input size by default: the paper's and the real-data configs' ``num_points`` (the synthetic demo
configs train on 2,048; pass that for their checkpoints). A checkpoint does not record it."""
LABEL_CHUNK = 1 << 16
"""Most decoder queries per call when labelling (bounds memory on 100k-point scans and large meshes)."""


@dataclass(frozen=True)
class Normalisation:
    """``normalised = (original - center) / scale``: the training normalisation of one scan."""

    center: np.ndarray
    scale: float

    @classmethod
    def of_points(cls, points: np.ndarray) -> Normalisation:
        """The normalisation of ``points`` by their own bounding box (see the module doc)."""
        _, center, scale = normalise_vertices(points)
        return cls(center=center, scale=scale)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Original → normalised frame, float64."""
        return (np.asarray(points, dtype=np.float64) - self.center) / self.scale

    def invert(self, points: np.ndarray) -> np.ndarray:
        """Normalised → original frame, float64."""
        return np.asarray(points, dtype=np.float64) * self.scale + self.center


@dataclass
class ScanResult:
    """A reconstructed scan, in its original frame and units.

    Attributes:
        vertices: (V, 3) float64 mesh vertices.
        faces: (F, 3) int64 vertex indices.
        face_labels: (F,) int64 class per face (``-1``: the model predicts no classes).
        point_labels: (N,) int64 class of every input point.
        class_names: name of each class id (empty for a geometry model).
        normalisation: what was applied to the points before encoding.
        encoded: (num_points,) int64 indices of the input points the encoder read.
        resolution: extraction grid nodes per axis.
        stage: the model's stage (``geometry``, ``joint``, ``frozen``, ``unfrozen``, ``context``).
        timings: seconds per step (``normalise``, ``encode``, ``extract``, ``label``).
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_labels: np.ndarray
    point_labels: np.ndarray
    class_names: list[str]
    normalisation: Normalisation
    encoded: np.ndarray
    resolution: int
    stage: str
    timings: dict[str, float] = field(default_factory=dict)

    def face_areas(self) -> np.ndarray:
        """(F,) float64 area of each face, in the scan's squared units."""
        corners = self.vertices[self.faces]
        return 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)

    def class_areas(self) -> dict[str, float]:
        """Surface area per class name, in the scan's squared units; faces labelled ``-1`` under ``"unlabelled"``."""
        totals = np.bincount(self.face_labels + 1, weights=self.face_areas(), minlength=len(self.class_names) + 1)
        return {"unlabelled": float(totals[0]), **{name: float(a) for name, a in zip(self.class_names, totals[1:])}}


def reconstruct_scan(
    points: np.ndarray,
    model: SceneTask,
    *,
    num_points: int = DEFAULT_NUM_POINTS,
    resolution: int | None = None,
    seed: int = 0,
    source: str | PathLike[str] = "points",
) -> ScanResult:
    """Reconstruct and label a scan's ``(N, 3)`` points with a task (any stage; see the module doc).

    Args:
        points: the scan in any frame and units (N ≥ ``num_points``).
        model: a trained task (:func:`~ctxir.scan.load_scan_model` rebuilds one from a checkpoint); it runs
            on its own device and in eval mode, and is put back into its previous mode afterwards.
        num_points: points the encoder reads (what the model was trained with).
        resolution: extraction grid nodes per axis; default the model's ``test_resolution``.
        seed: seed of the subsample.
        source: the scan's name in error messages (its file).

    Raises:
        ScanError: unusable points, fewer than ``num_points``, or no surface extracted.
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    points = check_scan_points(points, source)
    if num_points < 1:
        raise ValueError(f"num_points must be positive, got {num_points}")
    if len(points) < num_points:
        raise ScanError(
            source, f"has {len(points)} points, but the model reads {num_points}: give a denser scan "
            f"(at least {num_points} points) or a smaller num_points"
        )
    normalisation = Normalisation.of_points(points)
    device = next(model.parameters()).device
    normalised = torch.from_numpy(normalisation.apply(points).astype(np.float32)).to(device)
    encoded = subsample_indices(len(points), num_points, seed)
    resolution = int(model.hparams.test_resolution if resolution is None else resolution)
    timings["normalise"] = time.perf_counter() - clock

    was_training = model.training
    model.eval()
    try:
        # E_g must not be an inference tensor: extraction differentiates the UDF through it (as in test_step)
        with torch.inference_mode(False), torch.no_grad():
            clock = time.perf_counter()
            batch = {Key.POINTS: normalised[torch.from_numpy(encoded).to(device)],
                     Key.POINT_BATCH: torch.zeros(len(encoded), dtype=torch.long, device=device)}
            encodings, features = model.scene_fields(batch)
            timings["encode"] = time.perf_counter() - clock

            clock = time.perf_counter()
            vertices, faces = model.scene_mesh(batch[Key.POINTS], encodings, resolution)
            timings["extract"] = time.perf_counter() - clock
            if len(faces) == 0:
                raise ScanError(
                    source, f"no surface was extracted at resolution {resolution}: the model's distance field "
                    "stays above a voxel everywhere (an untrained model, or a scan unlike its training data)"
                )

            clock = time.perf_counter()
            centroids = torch.from_numpy(vertices[faces].mean(axis=1)).to(device)
            face_labels = predict_labels(model, batch[Key.POINTS], features, centroids)
            point_labels = predict_labels(model, batch[Key.POINTS], features, normalised)
            timings["label"] = time.perf_counter() - clock
    finally:
        model.train(was_training)
    return ScanResult(
        vertices=normalisation.invert(vertices), faces=faces.astype(np.int64), face_labels=face_labels,
        point_labels=point_labels, class_names=model.class_names, normalisation=normalisation,
        encoded=encoded.astype(np.int64), resolution=resolution, stage=model.stage, timings=timings,
    )


def predict_labels(model: SceneTask, points: Tensor, features: Tensor | None, queries: Tensor) -> np.ndarray:
    """(M,) int64 class of each query by the model's semantic decoder (all ``-1`` without one), in chunks."""
    decoder = model.semantic_decoder_or_none()
    if decoder is None or features is None:
        return np.full(len(queries), IGNORE_LABEL, dtype=np.int64)
    chunks = [decoder(points, features, queries[start : start + LABEL_CHUNK]).argmax(dim=1)
              for start in range(0, len(queries), LABEL_CHUNK)]
    return torch.cat(chunks).cpu().numpy().astype(np.int64)


def label_scan(
    points: np.ndarray, model: SceneTask | str | PathLike[str], **options: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vertices, faces, face_labels)`` of a scan's ``(N, 3)`` points, in their frame and units.

    ``model`` is a task or the path of its checkpoint; ``options`` are :func:`reconstruct_scan`'s
    (``num_points``, ``resolution``, ``seed``).
    """
    if not isinstance(model, SceneTask):
        model = load_scan_model(model)
    result = reconstruct_scan(points, model, **options)  # type: ignore[arg-type]
    return result.vertices, result.faces, result.face_labels
