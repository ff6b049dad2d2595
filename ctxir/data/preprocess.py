"""Turn one labelled scene mesh into the training/evaluation samples of the NDF/RangeUDF recipe.

Per scene (SPEC §3): normalise the mesh to the unit cube, draw area-uniform surface samples (encoder input),
perturb further surface samples with isotropic Gaussian noise for each σ and compute their **exact** unsigned
distance to the mesh and the label of the closest face, and draw the 100k ground-truth points used by the
evaluation. Exact distances come from open3d's Embree BVH (``RaycastingScene.compute_closest_points``), the
fastest exact method measured on this project's machines; open3d is imported lazily so ``import ctxir`` stays
light.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ctxir.core.surface import sample_surface
from ctxir.data import cache
from ctxir.data.errors import DatasetNotFoundError
from ctxir.data.mesh import LabelledMesh

DEFAULT_SIGMAS: tuple[float, ...] = (0.08, 0.02, 0.003)
"""Standard deviations of the off-surface noise (NDF/RangeUDF), in normalised units."""


def normalise_vertices(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre ``vertices`` on their bounding-box centre and divide by the longest bounding-box side.

    Returns ``(normalised float64 vertices in [-0.5, 0.5]^3, center (3,), scale)`` with
    ``normalised = (vertices - center) / scale``.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    center = (lo + hi) / 2.0
    scale = float((hi - lo).max())
    if not np.isfinite(scale) or scale <= 0.0:
        raise ValueError(f"cannot normalise a mesh with bounding-box extent {hi - lo}")
    return (vertices - center) / scale, center, scale


def closest_points_on_mesh(
    vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, num_threads: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Exact unsigned distance from each point to a triangle mesh and the index of the closest triangle.

    Uses open3d's ``RaycastingScene`` (Embree BVH, float32 geometry). The distance is measured in float64
    between the given point and the returned closest point, so it is exact up to float32 rounding of the
    mesh (about 1e-7 in normalised units). ``num_threads=0`` uses every core.

    Returns ``(distances (P,) float64, face_ids (P,) int64)``.
    """
    import open3d as o3d  # lazy: open3d is heavy and links system GL/USB libraries at import

    scene = o3d.t.geometry.RaycastingScene(nthreads=num_threads)
    scene.add_triangles(
        o3d.core.Tensor(np.ascontiguousarray(vertices, dtype=np.float32)),
        o3d.core.Tensor(np.ascontiguousarray(faces, dtype=np.uint32)),
    )
    query = np.ascontiguousarray(points, dtype=np.float32)
    answer = scene.compute_closest_points(o3d.core.Tensor(query), nthreads=num_threads)
    closest = answer["points"].numpy().astype(np.float64)
    face_ids = answer["primitive_ids"].numpy().astype(np.int64)
    distances = np.linalg.norm(query.astype(np.float64) - closest, axis=1)
    return distances, face_ids


def label_points(mesh: LabelledMesh, vertices: np.ndarray, points: np.ndarray, face_ids: np.ndarray) -> np.ndarray:
    """Semantic label of each point from the face it lies on / is closest to (RangeUDF's rule).

    A point takes its face's ``face_label``. Where the face's three vertices belong to different
    ``vertex_instances`` (an instance boundary), the point instead takes the ``vertex_label`` of the nearest of
    the three vertices; this applies only when the mesh carries vertex labels and instances.
    ``vertices`` are the mesh vertices in the frame of ``points``.
    """
    labels = mesh.face_labels[face_ids].copy()
    if mesh.vertex_labels is None or mesh.vertex_instances is None:
        return labels
    face_vertices = mesh.faces[face_ids]  # (P, 3)
    instances = mesh.vertex_instances[face_vertices]
    mixed = ~((instances[:, 0] == instances[:, 1]) & (instances[:, 1] == instances[:, 2]))
    if mixed.any():
        corners = vertices[face_vertices[mixed]]  # (Q, 3, 3)
        nearest = np.linalg.norm(corners - points[mixed][:, None, :], axis=2).argmin(axis=1)
        labels[mixed] = mesh.vertex_labels[face_vertices[mixed, nearest]]
    return labels


def sample_scene(
    mesh: LabelledMesh,
    num_surface: int = 10240,
    num_off_surface: int = 100000,
    sigmas: tuple[float, ...] = DEFAULT_SIGMAS,
    num_eval: int = 100000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Preprocess one scene mesh into the arrays stored in its cache file. Deterministic for a ``seed``.

    Returned keys (points in the normalised frame ``(x - center) / scale``, inside [-0.5, 0.5]^3):

    - ``center`` (3,) float64 and ``scale`` () float64: the normalisation applied to the raw mesh.
    - ``surface_points`` (num_surface, 3) float32, ``surface_labels`` (num_surface,) int64: area-uniform
      encoder input samples with the label of the face they lie on.
    - ``sigmas`` (S,) float64 and, for each σ index ``i``: ``off_points_i`` (num_off_surface, 3) float32
      (surface samples + N(0, σ_i²)), ``off_udf_i`` (num_off_surface,) float32 exact unsigned distance to the
      normalised mesh, ``off_labels_i`` (num_off_surface,) int64 label of the closest face.
    - ``eval_points`` (num_eval, 3) float32, ``eval_labels`` (num_eval,) int64: ground-truth surface samples
      for the reconstruction/segmentation metrics.
    - ``mesh_vertices`` (V, 3) float32, ``mesh_faces`` (F, 3) int64, ``mesh_face_labels`` (F,) int64: the
      normalised mesh itself (for rendering); distances are exact with respect to these float32 vertices.

    Labels follow :func:`label_points` (instance-boundary rule where vertex labels/instances exist);
    ``-1`` means ignore.
    """
    where = mesh.where
    if mesh.num_faces == 0:
        raise ValueError(f"{where}: has no faces")
    for key, value in {"num_surface": num_surface, "num_off_surface": num_off_surface, "num_eval": num_eval}.items():
        if value < 1:
            raise ValueError(f"{where}: {key} must be positive, got {value}")
    if not np.isfinite(mesh.vertices).all():
        raise ValueError(f"{where}: vertices contain NaN or inf (run clean_mesh first)")
    try:
        normalised, center, scale = normalise_vertices(mesh.vertices)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from error
    vertices = normalised.astype(np.float32).astype(np.float64)  # the exact geometry the BVH sees
    rng = np.random.default_rng(seed)
    try:
        surface, surface_faces = sample_surface(vertices, mesh.faces, num_surface, rng)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from error
    out: dict[str, np.ndarray] = {
        "center": center,
        "scale": np.asarray(scale, dtype=np.float64),
        "surface_points": surface.astype(np.float32),
        "surface_labels": label_points(mesh, vertices, surface, surface_faces),
        "sigmas": np.asarray(sigmas, dtype=np.float64),
    }
    pools = []
    for sigma in sigmas:
        base, _ = sample_surface(vertices, mesh.faces, num_off_surface, rng)
        pools.append((base + rng.normal(0.0, sigma, base.shape)).astype(np.float32))
    if pools:
        stacked = np.concatenate(pools)
        distances, closest_faces = closest_points_on_mesh(vertices, mesh.faces, stacked)
        labels = label_points(mesh, vertices, stacked.astype(np.float64), closest_faces)
        for i, chunk in enumerate(np.split(np.arange(len(stacked)), len(pools))):
            out[f"off_points_{i}"] = stacked[chunk]
            out[f"off_udf_{i}"] = distances[chunk].astype(np.float32)
            out[f"off_labels_{i}"] = labels[chunk]
    eval_points, eval_faces = sample_surface(vertices, mesh.faces, num_eval, rng)
    out["eval_points"] = eval_points.astype(np.float32)
    out["eval_labels"] = label_points(mesh, vertices, eval_points, eval_faces)
    out["mesh_vertices"] = vertices.astype(np.float32)
    out["mesh_faces"] = mesh.faces.astype(np.int64)
    out["mesh_face_labels"] = mesh.face_labels.astype(np.int64)
    return out


def preprocessing_params(
    num_surface: int = 10240,
    num_off_surface: int = 100000,
    sigmas: tuple[float, ...] = DEFAULT_SIGMAS,
    num_eval: int = 100000,
    seed: int = 0,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The parameters a cache records: the :func:`sample_scene` keyword arguments plus ``source``.

    ``source`` holds whatever else changes the content (data set, class set, generator settings).
    """
    return {
        "num_surface": int(num_surface),
        "num_off_surface": int(num_off_surface),
        "sigmas": [float(s) for s in sigmas],
        "num_eval": int(num_eval),
        "seed": int(seed),
        "source": dict(source or {}),
    }


INVALID_UNIT_ERRORS = (ValueError, DatasetNotFoundError)
"""What makes a raw unit invalid (``skip_invalid`` skips it): damaged or inconsistent files (``ValueError``, the
readers' ``CorruptFileError`` included), a mesh that cannot be sampled, or a file of the unit missing."""


@dataclass
class UnitResult:
    """What preparing one raw unit gave: its scene names, or the error that made it invalid; and the damaged
    cache files that were found and rebuilt on the way (:func:`damaged_file_message` of each)."""

    unit: str
    scenes: list[str] | None = None
    error: Exception | None = None
    rebuilt: list[str] = field(default_factory=list)


def damaged_file_message(path: Path, problem: str) -> str:
    """The warning that names a damaged cache file and says it is rebuilt."""
    return f"{path}: damaged cache file ({problem}); rebuilding it"


def _portable_error(error: Exception) -> Exception:
    """The error itself if it survives pickling (to cross the process pool), else a ValueError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any unpicklable custom exception is replaced by its message
        return ValueError(f"{type(error).__name__}: {error}")


def _prepare_unit(
    read_unit: Callable[[str], list[LabelledMesh]],
    unit: str,
    cache_dir: str,
    params: dict[str, Any],
) -> UnitResult:
    """Read one raw unit, preprocess and cache each of its scenes, then write the unit's manifest.

    A scene file already cached with ``params`` is reused after a full read (:func:`~ctxir.data.cache.damage`):
    its unit's manifest is missing, so an earlier run stopped before finishing the unit and nothing vouches for it.
    """
    sample_kwargs = {key: value for key, value in params.items() if key != "source"}
    sample_kwargs["sigmas"] = tuple(sample_kwargs["sigmas"])
    result = UnitResult(unit)
    try:
        meshes = read_unit(unit)
        if not meshes:
            raise ValueError(f"{unit}: the reader found no scene in it")
        for mesh in meshes:
            path = cache.scene_cache_path(cache_dir, mesh.name, params)
            problem = cache.damage(path) if path.is_file() else None
            if problem:
                result.rebuilt.append(damaged_file_message(path, problem))
            if problem or not cache.is_scene_cached(path, params):
                cache.write_scene_cache(path, mesh.name, sample_scene(mesh, **sample_kwargs), params)
        result.scenes = [mesh.name for mesh in meshes]
        cache.write_manifest(cache.manifest_path(cache_dir, unit, params), unit, result.scenes, params)
    except INVALID_UNIT_ERRORS as error:
        result.error = error
    return result


def _prepare_unit_in_worker(*args: Any) -> UnitResult:
    """:func:`_prepare_unit` whose error is sure to survive the trip back from a worker process."""
    result = _prepare_unit(*args)
    if result.error is not None:
        result.error = _portable_error(result.error)
    return result


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end the worker as soon as its parent process is gone (killed, not shut down), instead
    of preprocessing on as an orphan. A killed worker may leave a temporary file; the next run removes it."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="ctxir-parent-watch", daemon=True).start()


def _reusable_units(
    units: Sequence[str], cache_dir: str, params: dict[str, Any], verify: bool
) -> tuple[dict[str, list[str]], list[str]]:
    """``({unit: scenes} already prepared, [units to prepare])``. With ``verify`` every cached scene file is read in
    full; a damaged one is deleted, with a warning naming it, and its unit prepared again."""
    prepared: dict[str, list[str]] = {}
    pending: list[str] = []
    for unit in units:
        scenes = cache.read_manifest(cache.manifest_path(cache_dir, unit, params), params)
        damaged = []
        if scenes is not None and verify:
            for scene in scenes:
                path = cache.scene_cache_path(cache_dir, scene, params)
                problem = cache.damage(path)
                if problem:
                    damaged.append(path)
                    warnings.warn(damaged_file_message(path, problem), stacklevel=3)
        for path in damaged:
            path.unlink()
        if scenes is None or damaged:
            pending.append(unit)
        else:
            prepared[unit] = scenes
    return prepared, pending


def preprocess_scenes(
    read_unit: Callable[[str], list[LabelledMesh]],
    units: Sequence[str],
    cache_dir: str | os.PathLike,
    num_surface: int = 10240,
    num_off_surface: int = 100000,
    sigmas: tuple[float, ...] = DEFAULT_SIGMAS,
    num_eval: int = 100000,
    seed: int = 0,
    source: dict[str, Any] | None = None,
    num_workers: int = 0,
    skip_invalid: bool = True,
    progress: bool = True,
    verify: bool = True,
) -> dict[str, list[str]]:
    """Preprocess raw units into the per-scene cache, reusing whatever is already cached with equal parameters.

    Args:
        read_unit: picklable function ``unit -> list[LabelledMesh]`` (e.g. ``functools.partial(scannet.read_item,
            root)``); it runs in the worker processes.
        units: names of the raw units to prepare (scene ids, area names, synthetic room names).
        cache_dir: folder of the cache files (one data set per folder).
        num_surface, num_off_surface, sigmas, num_eval, seed: forwarded to :func:`sample_scene`.
        source: extra settings that change the content (data set, class set, generator settings); recorded
            with the sampling parameters, so each setting has its own cache files.
        num_workers: processes of the pool (0 = in this process). A worker ends when this process dies.
        skip_invalid: when True a unit that is invalid (:data:`INVALID_UNIT_ERRORS`: a damaged, inconsistent or
            missing file, or a mesh that cannot be sampled) is skipped with a warning, and a summary of the
            skipped units is warned at the end; when False the error is re-raised.
        progress: show a tqdm progress bar.
        verify: read every cached file in full (CRC checked) before reusing it, so a damaged file is rebuilt here
            rather than failing mid-training; costs one read of the cache.

    The cache folder is locked for the run (a second process waits), and temporary files that a killed run
    left there are removed first, with a warning (not where the file system cannot lock: another run's temporary
    files could not be told from stale ones).

    Returns:
        ``{unit: [scene names]}`` for every unit that is prepared (skipped units are absent).
    """
    params = preprocessing_params(num_surface, num_off_surface, sigmas, num_eval, seed, source)
    cache_dir = str(cache_dir)
    with cache.exclusive(cache_dir) as locked:
        stale = cache.remove_stale_temporaries(cache_dir) if locked else []
        if stale:
            warnings.warn(f"{cache_dir}: removed {len(stale)} temporary files an interrupted run left", stacklevel=2)
        prepared, pending = _reusable_units(units, cache_dir, params, verify)
        fresh, skipped = _prepare_pending(read_unit, pending, cache_dir, params, num_workers, skip_invalid, progress)
    prepared.update(fresh)
    if skipped:
        warnings.warn(
            f"preprocessing {cache_dir}: skipped {len(skipped)} of {len(units)} units with invalid data: "
            + ", ".join(sorted(skipped)),
            stacklevel=2,
        )
    return {unit: prepared[unit] for unit in units if unit in prepared}


def _prepare_pending(
    read_unit: Callable[[str], list[LabelledMesh]],
    pending: list[str],
    cache_dir: str,
    params: dict[str, Any],
    num_workers: int,
    skip_invalid: bool,
    progress: bool,
) -> tuple[dict[str, list[str]], list[str]]:
    """Prepare the ``pending`` units (in a pool of ``num_workers`` processes when > 0): ``({unit: scenes}, [units
    skipped as invalid])``."""
    prepared: dict[str, list[str]] = {}
    skipped: list[str] = []
    bar = tqdm(total=len(pending), desc=f"preprocessing {Path(cache_dir).name}", disable=not progress or not pending)

    def collect(result: UnitResult, in_worker: bool) -> None:
        bar.update(1)
        for message in result.rebuilt:
            warnings.warn(message, stacklevel=4)
        if result.error is None:
            prepared[result.unit] = result.scenes or []
        elif skip_invalid:
            skipped.append(result.unit)
            warnings.warn(f"skipping {result.unit!r}: {result.error}", stacklevel=4)
        elif in_worker:  # redo the unit here to raise the reader's own exception (its type may not pickle)
            raise _prepare_unit(read_unit, result.unit, cache_dir, params).error or result.error
        else:
            raise result.error

    try:
        if num_workers > 0 and len(pending) > 1:
            # spawn, not fork: forking after open3d/TBB or torch started threads can deadlock the children
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(num_workers, len(pending)), mp_context=context,
                                     initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
                futures = [pool.submit(_prepare_unit_in_worker, read_unit, unit, cache_dir, params) for unit in pending]
                try:
                    for future in as_completed(futures):
                        collect(future.result(), in_worker=True)
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        else:
            for unit in pending:
                collect(_prepare_unit(read_unit, unit, cache_dir, params), in_worker=False)
    finally:
        bar.close()
    return prepared, skipped
