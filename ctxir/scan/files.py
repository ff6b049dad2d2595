"""Reading a scan's points from the files people have: PLY, NumPy ``.npy``/``.npz`` and ``x y z`` text.

Every reader returns the points as an ``(N, 3)`` float64 array in the file's own frame and units (float64
so that a scan in a survey frame, thousands of metres from the origin, keeps its millimetres), and every
failure is a :class:`ScanError` that names the file and says what is wrong with it. What the points must
satisfy to be reconstructed (finite, enough of them, not all on one line) is checked by
:func:`check_scan_points`, which the Python API applies to arrays too.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from os import PathLike
from pathlib import Path

import numpy as np

from ctxir.data.errors import CorruptFileError, DatasetNotFoundError
from ctxir.data.ply import read_ply

NPY_MAGIC = b"\x93NUMPY"
"""First bytes of every ``.npy`` file."""
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
"""First bytes of a ``.npz`` file (a zip archive; the second is an empty archive)."""
NPZ_KEY = "points"
"""Array read from a ``.npz`` holding several arrays."""
COLLINEAR_TOLERANCE = 1e-10
"""Points whose second principal variance is below this share of the first lie on one line."""


class ScanError(ValueError):
    """A scan cannot be reconstructed: the message names its source (a file, or ``points`` for an array)."""

    def __init__(self, source: str | PathLike[str], problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # survives a worker process (pickled by argument)
        return type(self), (self.source, self.problem)


def xyz_columns(array: np.ndarray, source: str | PathLike[str]) -> np.ndarray:
    """The first three columns of an ``(N, C ≥ 3)`` numeric array as float64 (further columns, such as colours
    or normals, are ignored)."""
    if array.ndim != 2 or array.shape[1] < 3:
        raise ScanError(source, f"expected an (N, 3) array of x y z (extra columns allowed), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ScanError(source, f"expected numeric coordinates, got dtype {array.dtype}")
    return np.ascontiguousarray(array[:, :3], dtype=np.float64)


def read_ply_points(path: Path) -> np.ndarray:
    """Vertex ``x, y, z`` of a PLY point cloud, or of a triangle mesh whose faces are then ignored."""
    try:
        vertex = read_ply(path, need_faces=False).vertex
    except CorruptFileError as error:
        raise ScanError(path, f"not a readable PLY point cloud or triangle mesh ({error.problem})") from error
    return np.column_stack([np.asarray(vertex[axis], dtype=np.float64) for axis in "xyz"]).reshape(-1, 3)


def read_npy_points(path: Path) -> np.ndarray:
    """An ``(N, ≥3)`` array saved by ``np.save``; pickled object arrays are refused."""
    if not _starts_with(path, (NPY_MAGIC,)):
        raise ScanError(path, "not a NumPy .npy file (it does not start with the .npy magic bytes)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ScanError(path, f"not a readable NumPy .npy file ({error})") from error
    return xyz_columns(array, path)


def read_npz_points(path: Path) -> np.ndarray:
    """The array ``points`` of an ``np.savez`` archive, or its only array."""
    if not _starts_with(path, ZIP_MAGICS):
        raise ScanError(path, "not a NumPy .npz archive (it is not a zip file)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ScanError(path, f"not a readable NumPy .npz archive ({error})") from error
    with archive:
        names = list(archive.files)
        if NPZ_KEY not in names and len(names) != 1:
            raise ScanError(path, f"holds arrays {names}: name the points array {NPZ_KEY!r} or save only one")
        try:
            array = archive[NPZ_KEY if NPZ_KEY in names else names[0]]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise ScanError(path, f"not a readable NumPy .npz archive ({error})") from error
    return xyz_columns(array, path)


def read_text_points(path: Path) -> np.ndarray:
    """``x y z`` per line (spaces, tabs or commas; further columns ignored; ``#`` starts a comment)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ScanError(path, f"not a text file of 'x y z' lines (byte {error.start} is not UTF-8 text)") from error
    text = text.replace(",", " ")
    if not any(line.split("#", 1)[0].strip() for line in text.splitlines()):
        return np.zeros((0, 3))
    try:
        array = np.loadtxt(text.splitlines(), usecols=(0, 1, 2), ndmin=2, comments="#")
    except ValueError as error:
        raise ScanError(path, f"not a text file of 'x y z' lines ({error})") from error
    return xyz_columns(array, path)


READERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".ply": read_ply_points,
    ".npy": read_npy_points,
    ".npz": read_npz_points,
    ".xyz": read_text_points,
    ".txt": read_text_points,
}
"""Reader of each supported file extension (case-insensitive)."""


def read_scan_points(path: str | PathLike[str]) -> np.ndarray:
    """The points ``(N, 3)`` float64 of a scan file, checked by :func:`check_scan_points`.

    Raises:
        ScanError: a missing, empty or unreadable file, an unsupported extension, content that is not what the
            extension says, or points that cannot be reconstructed.
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ScanError(path, f"unsupported file type {path.suffix!r}; expected one of {', '.join(READERS)}")
    if not path.is_file():
        raise ScanError(path, "no such file")
    if path.stat().st_size == 0:
        raise ScanError(path, "the file is empty")
    try:
        points = reader(path)
    except DatasetNotFoundError as error:  # vanished between the checks and the read
        raise ScanError(path, "no such file") from error
    return check_scan_points(points, path)


def check_scan_points(points: np.ndarray, source: str | PathLike[str] = "points") -> np.ndarray:
    """``points`` as ``(N, 3)`` float64 if they can be normalised and reconstructed, else a :class:`ScanError`.

    Refused: a wrong shape, no points, NaN or infinite coordinates (the row is named), and points that span no
    surface: all at one position, or all on one line (the second principal variance is below
    :data:`COLLINEAR_TOLERANCE` of the first). Points on one plane are accepted: a scan of one wall is a
    surface.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ScanError(source, f"points must be an (N, 3) array, got shape {points.shape}")
    points = points.astype(np.float64, copy=False)
    if len(points) == 0:
        raise ScanError(source, "holds no points")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise ScanError(
            source, f"{int(bad.sum())} of {len(points)} points have NaN or infinite coordinates (first: row {int(np.argmax(bad))})"
        )
    spread = np.linalg.eigvalsh(np.cov(points, rowvar=False) if len(points) > 1 else np.zeros((3, 3)))
    if spread[-1] <= 0.0:
        raise ScanError(source, f"all {len(points)} points are at one position: a scan must span a surface")
    if spread[-2] <= COLLINEAR_TOLERANCE * spread[-1]:
        raise ScanError(source, f"all {len(points)} points lie on one line: a scan must span a surface")
    return points


def _starts_with(path: Path, magics: tuple[bytes, ...]) -> bool:
    """Whether the file's first bytes are one of ``magics``."""
    with path.open("rb") as stream:
        head = stream.read(max(len(magic) for magic in magics))
    return any(head.startswith(magic) for magic in magics)
