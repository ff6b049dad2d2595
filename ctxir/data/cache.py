"""Per-scene preprocessing cache: one ``.npz`` per scene, keyed by the preprocessing parameters.

Each file holds the arrays of :func:`ctxir.data.preprocess.sample_scene` plus ``scene_name`` (the original
name) and ``params_json`` (the parameters that produced it, as a JSON string). A file whose recorded
parameters differ from the requested ones is rebuilt, never silently reused. Files are written under a
temporary name in the same folder and atomically renamed, so an interrupted run leaves no half-written cache.
Everything loads with ``np.load(..., allow_pickle=False)``.

Raw data units (a ScanNet scene, a 2D-3D-S area holding many rooms, a synthetic room) are tracked by a small
JSON *manifest* per unit listing the scene names it produced, so an already prepared unit is recognised
without reading its raw files again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ctxir.core.io import atomic_write_bytes, atomic_write_stream

CACHE_FORMAT_VERSION = 1
"""Bumped whenever the layout of a cache file changes, so old caches are rebuilt."""

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


def scene_cache_path(cache_dir: str | os.PathLike, scene_name: str) -> Path:
    """Path of the cache file of one scene."""
    return Path(cache_dir) / f"{safe_name(scene_name)}.npz"


def manifest_path(cache_dir: str | os.PathLike, unit_name: str) -> Path:
    """Path of the manifest of one raw data unit."""
    return Path(cache_dir) / "units" / f"{safe_name(unit_name)}.json"


def params_to_json(params: dict[str, Any]) -> str:
    """Canonical JSON of the preprocessing parameters (sorted keys, tuples as lists, format version added)."""
    return json.dumps({**params, "cache_format": CACHE_FORMAT_VERSION}, sort_keys=True, default=list)


def write_scene_cache(path: Path, scene_name: str, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> None:
    """Write one scene's arrays atomically, recording its name and parameters."""
    payload = {**arrays, "scene_name": np.asarray(scene_name), "params_json": np.asarray(params_to_json(params))}
    atomic_write_stream(path, lambda stream: np.savez(stream, **payload))


def cached_params(path: Path) -> str | None:
    """The parameter JSON recorded in a cache file, or ``None`` when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return str(data["params_json"])
    except (OSError, ValueError, KeyError, EOFError):
        return None


def is_scene_cached(path: Path, params: dict[str, Any]) -> bool:
    """True when ``path`` exists and was written with exactly ``params``."""
    return cached_params(path) == params_to_json(params)


def read_scene_cache(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Load the arrays of a scene cache (all, or only ``keys``); the error names the file if it is bad."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in (data.files if keys is None else keys)}
    except KeyError as error:
        raise ValueError(f"{path}: cache file lacks array {error}; delete it to rebuild") from error
    except (OSError, EOFError, ValueError) as error:
        raise ValueError(f"{path}: unreadable cache file ({error}); delete it to rebuild") from error


def write_manifest(path: Path, unit_name: str, scene_names: list[str], params: dict[str, Any]) -> None:
    """Record atomically which scenes a raw unit produced under ``params``."""
    text = json.dumps({"unit": unit_name, "scenes": scene_names, "params": params_to_json(params)})
    atomic_write_bytes(path, text.encode("utf-8"))


def read_manifest(path: Path, params: dict[str, Any]) -> list[str] | None:
    """Scene names of a prepared unit, or ``None`` when the manifest is missing, stale or any scene file is."""
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("params") != params_to_json(params):
        return None
    scenes = list(manifest.get("scenes", []))
    cache_dir = Path(path).parent.parent
    if not all(is_scene_cached(scene_cache_path(cache_dir, scene), params) for scene in scenes):
        return None
    return scenes
