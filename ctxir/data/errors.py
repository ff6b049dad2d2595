"""Errors raised by the data-set readers, so callers can tell a wrong path from a damaged file."""

from __future__ import annotations

from os import PathLike
from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """A data-set root, scene folder or required file is missing, or the layout is not the expected one.

    The message names the path that was looked at and the layout that was expected there.
    """

    def __init__(self, path: str | PathLike[str], expected: str) -> None:
        self.path = Path(path)
        self.expected = expected
        super().__init__(f"{self.path}: not found or not the expected layout; expected {expected}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:  # survives a worker process (pickled by argument)
        return type(self), (self.path, self.expected)


class CorruptFileError(ValueError):
    """A data file exists but cannot be parsed (truncated, malformed or inconsistent content).

    Attributes:
        path: the offending file.
    """

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: corrupt file: {problem}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:  # survives a worker process (pickled by argument)
        return type(self), (self.path, self.problem)
