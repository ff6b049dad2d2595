"""Atomic writes (ctxir.core.io): a file appears complete under its final name, or not at all."""

from pathlib import Path

import pytest

from ctxir.core.io import TEMPORARY_SUFFIX, atomic_write, atomic_write_bytes, atomic_write_stream


def test_atomic_write_replaces_the_target_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.bin"
    assert atomic_write_bytes(target, b"first") == target
    atomic_write_stream(target, lambda stream: stream.write(b"second"))
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("old")

    def half_then_fail(temporary: Path) -> None:
        temporary.write_text("half")
        assert temporary.name.startswith(".file.txt.") and temporary.name.endswith(TEMPORARY_SUFFIX)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_an_interrupted_writer_creates_nothing_under_a_new_name(tmp_path: Path) -> None:
    def interrupted(stream) -> None:
        stream.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_stream(tmp_path / "new.bin", interrupted)
    assert list(tmp_path.iterdir()) == []
