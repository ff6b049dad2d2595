"""Per-scene preprocessing cache: one ``.npz`` per scene and set of preprocessing parameters.

Each file holds the arrays of :func:`ctxir.data.preprocess.sample_scene` plus ``scene_name`` (the original
name) and ``params_json`` (the parameters that produced it, as a JSON string). File names carry a short hash
of the parameters (:func:`params_key`), so caches of different settings (say ``num_surface``) live side by
side: switching between two configs re-preprocesses nothing. Files are written under a temporary name in the
same folder and atomically renamed, so an interrupted run leaves no half-written cache under a real name; the
temporary files of a killed run are removed by the next preparing run (:func:`remove_stale_temporaries`, under
the folder's lock :func:`exclusive`). A file damaged later (cut short by a full disk or a killed copy, a
flipped byte) is found by :func:`damage`, which reads every array and checks its CRC. Everything loads with
``np.load(..., allow_pickle=False)``.

Raw data units (a ScanNet scene, a 2D-3D-S area holding many rooms, a synthetic room) are tracked by a small
JSON *manifest* per unit and parameter set, listing the scene names it produced, so an already prepared unit
is recognised without reading its raw files again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.npyio import NpzFile

from ctxir.core.io import TEMPORARY_SUFFIX, atomic_write_bytes, atomic_write_stream

CACHE_FORMAT_VERSION = 1
"""Bumped whenever the layout of a cache file changes, so old caches are rebuilt."""
READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)
"""What reading a damaged ``.npz`` raises (a truncated zip, a bad CRC, a bad compressed stream, ...)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(name: str) -> str:
    """Map a scene/unit name ('area_1/office_1', 'scene0000_00') to a unique, file-system-safe file stem.

    Unsafe characters become ``_``; a short hash of the original name keeps distinct names distinct
    (e.g. 'a/b' and 'a_b').
    """
    if not name:
        raise ValueError("a scene name must not be empty")
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', name).strip('_.')[:80]}-{digest}"


def params_to_json(params: dict[str, Any]) -> str:
    """Canonical JSON of the preprocessing parameters (sorted keys, tuples as lists, format version added)."""
    return json.dumps({**params, "cache_format": CACHE_FORMAT_VERSION}, sort_keys=True, default=list)


def params_key(params: dict[str, Any]) -> str:
    """Ten hex digits of the parameters' hash: the part of the file names that tells parameter sets apart."""
    return hashlib.sha1(params_to_json(params).encode("utf-8")).hexdigest()[:10]


def scene_cache_path(cache_dir: str | os.PathLike, scene_name: str, params: dict[str, Any]) -> Path:
    """Path of the cache file of one scene preprocessed with ``params``."""
    return Path(cache_dir) / f"{safe_name(scene_name)}-{params_key(params)}.npz"


def manifest_path(cache_dir: str | os.PathLike, unit_name: str, params: dict[str, Any]) -> Path:
    """Path of the manifest of one raw data unit prepared with ``params``."""
    return Path(cache_dir) / "units" / f"{safe_name(unit_name)}-{params_key(params)}.json"


def write_scene_cache(path: Path, scene_name: str, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> None:
    """Write one scene's arrays atomically, recording its name and parameters."""
    payload = {**arrays, "scene_name": np.asarray(scene_name), "params_json": np.asarray(params_to_json(params))}
    atomic_write_stream(path, lambda stream: np.savez(stream, **payload))


@contextmanager
def open_npz(path: str | os.PathLike) -> Iterator[NpzFile]:
    """``np.load`` of an ``.npz`` archive without pickle; the file is closed also when it cannot be read (numpy
    leaves it open then), and anything but an archive raises ``ValueError``."""
    with open(path, "rb") as handle:
        data = np.load(handle, allow_pickle=False)
        if not isinstance(data, NpzFile):
            raise ValueError("not an .npz archive")
        with data:
            yield data


def cached_params(path: Path) -> str | None:
    """The parameter JSON recorded in a cache file, or ``None`` when it is missing or unreadable."""
    try:
        with open_npz(path) as data:
            return str(data["params_json"])
    except READ_ERRORS:
        return None


def damage(path: Path) -> str | None:
    """What is wrong with an existing cache file, read in full with every array's CRC checked (``None``: it
    reads completely). Costs one read of the file."""
    try:
        with open_npz(path) as data:
            broken = data.zip.testzip()
            if broken is not None:
                return f"array {broken.removesuffix('.npy')} fails its CRC check"
            if "params_json" not in data.files:
                return "no recorded parameters"
    except READ_ERRORS as error:
        return f"{type(error).__name__}: {error}"
    return None


def is_scene_cached(path: Path, params: dict[str, Any]) -> bool:
    """True when ``path`` exists and was written with exactly ``params``."""
    return cached_params(path) == params_to_json(params)


def read_scene_cache(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Load the arrays of a scene cache (all, or only ``keys``); the error names the file if it is bad."""
    try:
        with open_npz(path) as data:
            return {key: data[key] for key in (data.files if keys is None else keys)}
    except KeyError as error:
        raise ValueError(f"{path}: cache file lacks array {error}; prepare_data() rebuilds it") from error
    except READ_ERRORS as error:
        raise ValueError(
            f"{path}: unreadable cache file ({type(error).__name__}: {error}); prepare_data() rebuilds it"
        ) from error


def write_manifest(path: Path, unit_name: str, scene_names: list[str], params: dict[str, Any]) -> None:
    """Record atomically which scenes a raw unit produced under ``params``."""
    text = json.dumps({"unit": unit_name, "scenes": scene_names, "params": params_to_json(params)})
    atomic_write_bytes(path, text.encode("utf-8"))


def read_manifest(path: Path, params: dict[str, Any]) -> list[str] | None:
    """Scene names of a prepared unit, or ``None`` when the manifest is missing, stale or unreadable (with a
    warning naming it) or any scene file is missing or stale."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        recorded, scenes = manifest["params"], [str(scene) for scene in manifest["scenes"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        warnings.warn(f"{path}: unreadable cache manifest ({error}); prepare_data() prepares its unit again",
                      stacklevel=2)
        return None
    if recorded != params_to_json(params):
        return None
    cache_dir = path.parent.parent
    if not all(is_scene_cached(scene_cache_path(cache_dir, scene, params), params) for scene in scenes):
        return None
    return scenes


@contextmanager
def exclusive(cache_dir: str | os.PathLike) -> Iterator[bool]:
    """Hold the lock of a cache folder (an advisory ``flock`` on the folder itself, released by the kernel when
    the process dies): one preparing process at a time, so temporary files found inside are stale. Yields whether
    the lock is held: not where the file system offers no locks (then, with a warning, nothing is waited for)."""
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            warnings.warn(f"{folder}: another process is preparing this cache; waiting for it", stacklevel=3)
            fcntl.flock(handle, fcntl.LOCK_EX)
        locked = True
    except OSError as error:  # e.g. ENOLCK on a network file system without locks
        warnings.warn(f"{folder}: cannot lock the cache folder ({error}); temporary files are left alone",
                      stacklevel=3)
        locked = False
    try:
        yield locked
    finally:
        os.close(handle)  # releases the lock


def remove_stale_temporaries(cache_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that a killed run left in a cache folder (hold :func:`exclusive`); returns them."""
    folder = Path(cache_dir)
    stale = [*folder.glob(f".*{TEMPORARY_SUFFIX}"), *(folder / "units").glob(f".*{TEMPORARY_SUFFIX}")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
