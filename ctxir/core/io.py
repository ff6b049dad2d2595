"""Atomic writes: a file appears under its final name complete, or not at all.

Everything ``ctxir`` writes that a later run reads back (caches, manifests, encodings, checkpoints, meshes,
figures, reports) goes through :func:`atomic_write`: the content is written to a temporary file in the
target's folder and renamed onto the target (``os.replace`` is atomic on one file system). A crash, a full
disk or Ctrl-C leaves at most a hidden ``.<name>.*.tmp`` file, which is removed when the error passes through
here, and never a half-written file under the real name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

TEMPORARY_SUFFIX = ".tmp"
"""Suffix of the temporary files (``.<target name>.<random>.tmp``), so stale ones can be recognised."""


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file onto ``path``; returns ``path``.

    ``write`` receives a path (not a stream), so writers that insist on a file name (matplotlib, plyfile,
    ``torch.save``) work too. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda temporary: temporary.write_bytes(data))


def atomic_write_stream(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(binary_stream)`` on the temporary file, then rename it onto ``path``."""

    def through_stream(temporary: Path) -> None:
        with temporary.open("wb") as stream:
            write(stream)

    return atomic_write(path, through_stream)
