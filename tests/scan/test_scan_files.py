"""Reading scan files (PLY, .npy/.npz, x y z text) and refusing bad ones with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from ctxir.scan import ScanError, check_scan_points, read_scan_points

OFFSET = np.array([431250.25, 5411875.75, 312.5])  # a survey frame: float32 keeps only 3 cm and 50 cm there


def scan_points(count: int = 200, seed: int = 0) -> np.ndarray:
    """Points on two perpendicular walls of a room, far from the origin (float64)."""
    rng = np.random.default_rng(seed)
    u, v = rng.random((2, count))
    wall = np.where(rng.random(count) < 0.5, 0, 1)
    local = np.column_stack([np.where(wall == 0, 4.0 * u, 0.0), np.where(wall == 0, 0.0, 3.0 * u), 2.5 * v])
    return local + OFFSET


def write_ply(path: Path, points: np.ndarray, faces: np.ndarray | None = None, text: bool = False) -> Path:
    vertex = np.empty(len(points), dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("intensity", "<f4")])
    for axis, name in enumerate("xyz"):
        vertex[name] = points[:, axis]
    vertex["intensity"] = 1.0
    elements = [PlyElement.describe(vertex, "vertex")]
    if faces is not None:
        face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
        face["vertex_indices"] = faces
        elements.append(PlyElement.describe(face, "face"))
    PlyData(elements, text=text).write(str(path))
    return path


@pytest.mark.parametrize("text", [False, True])
def test_ply_point_cloud_keeps_survey_coordinates_exactly(tmp_path: Path, text: bool) -> None:
    points = scan_points()
    read = read_scan_points(write_ply(tmp_path / "scan.ply", points, text=text))
    assert read.dtype == np.float64 and read.shape == (200, 3)
    np.testing.assert_allclose(read, points, rtol=0, atol=1e-9 if not text else 1e-6)


def test_ply_mesh_gives_its_vertices(tmp_path: Path) -> None:
    points = scan_points(30)
    faces = np.arange(30).reshape(10, 3)
    np.testing.assert_array_equal(read_scan_points(write_ply(tmp_path / "mesh.PLY", points, faces)), points)


def test_numpy_files_use_the_first_three_columns(tmp_path: Path) -> None:
    points = scan_points()
    with_colours = np.column_stack([points, np.full((200, 3), 255.0)])
    np.save(tmp_path / "a.npy", with_colours)
    np.savez(tmp_path / "b.npz", points=points, normals=np.zeros((200, 3)))
    np.savez(tmp_path / "c.npz", cloud=points.astype(np.float32))
    np.testing.assert_array_equal(read_scan_points(tmp_path / "a.npy"), points)
    np.testing.assert_array_equal(read_scan_points(tmp_path / "b.npz"), points)
    np.testing.assert_array_equal(read_scan_points(tmp_path / "c.npz"), points.astype(np.float32))
    np.savez(tmp_path / "d.npz", cloud=points, normals=points)
    with pytest.raises(ScanError, match=r"d\.npz: holds arrays \['cloud', 'normals'\]"):
        read_scan_points(tmp_path / "d.npz")
    np.save(tmp_path / "e.npy", points[:, :2])
    with pytest.raises(ScanError, match=r"e\.npy: expected an \(N, 3\) array"):
        read_scan_points(tmp_path / "e.npy")


@pytest.mark.parametrize("suffix", [".xyz", ".txt"])
def test_text_files_ignore_extra_columns_commas_and_comments(tmp_path: Path, suffix: str) -> None:
    points = scan_points(50)
    lines = ["# exported by a scanner", *(f"{x:.6f}, {y:.6f}, {z:.6f}, 12, 200 200 200" for x, y, z in points)]
    path = tmp_path / f"scan{suffix}"
    path.write_text("\n".join(lines) + "\n")
    np.testing.assert_allclose(read_scan_points(path), points, rtol=0, atol=1e-6)


def test_empty_files_are_refused(tmp_path: Path) -> None:
    for suffix in (".ply", ".npy", ".npz", ".xyz", ".txt"):
        path = tmp_path / f"empty{suffix}"
        path.touch()
        with pytest.raises(ScanError, match=rf"empty\{suffix}: the file is empty"):
            read_scan_points(path)
    (tmp_path / "comments.xyz").write_text("# nothing here\n\n")
    with pytest.raises(ScanError, match=r"comments\.xyz: holds no points"):
        read_scan_points(tmp_path / "comments.xyz")
    write_ply(tmp_path / "no_vertices.ply", np.zeros((0, 3)))
    with pytest.raises(ScanError, match=r"no_vertices\.ply: holds no points"):
        read_scan_points(tmp_path / "no_vertices.ply")


def test_files_that_are_not_what_their_extension_says(tmp_path: Path) -> None:
    points = scan_points()
    np.save(tmp_path / "real.npy", points)
    write_ply(tmp_path / "real.ply", points)
    cases = {
        "npy_as.ply": ((tmp_path / "real.npy").read_bytes(), r"npy_as\.ply: not a readable PLY"),
        "ply_as.npy": ((tmp_path / "real.ply").read_bytes(), r"ply_as\.npy: not a NumPy \.npy file"),
        "ply_as.npz": ((tmp_path / "real.ply").read_bytes(), r"ply_as\.npz: not a NumPy \.npz archive"),
        "npy_as.xyz": ((tmp_path / "real.npy").read_bytes(), r"npy_as\.xyz: not a text file of 'x y z' lines"),
        "words.txt": (b"hello world and more\n", r"words\.txt: not a text file of 'x y z' lines"),
        "short.xyz": (b"1 2 3\n4 5\n", r"short\.xyz: not a text file of 'x y z' lines"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ScanError, match=message):
            read_scan_points(tmp_path / name)
    (tmp_path / "scan.las").write_bytes(b"LASF")
    with pytest.raises(ScanError, match=r"scan\.las: unsupported file type '\.las'; expected one of \.ply, \.npy"):
        read_scan_points(tmp_path / "scan.las")
    with pytest.raises(ScanError, match=r"missing\.ply: no such file"):
        read_scan_points(tmp_path / "missing.ply")


def test_non_finite_coordinates_name_the_file_and_the_row(tmp_path: Path) -> None:
    points = scan_points()
    points[17, 1], points[40, 2] = np.nan, np.inf
    write_ply(tmp_path / "holes.ply", points)
    with pytest.raises(ScanError, match=r"holes\.ply: 2 of 200 points have NaN or infinite coordinates \(first: row 17\)"):
        read_scan_points(tmp_path / "holes.ply")


def test_points_that_span_no_surface(tmp_path: Path) -> None:
    (tmp_path / "one.xyz").write_text("5000.0 20.0 1.5\n")
    with pytest.raises(ScanError, match=r"one\.xyz: all 1 points are at one position"):
        read_scan_points(tmp_path / "one.xyz")
    np.save(tmp_path / "same.npy", np.tile(OFFSET, (50, 1)))
    with pytest.raises(ScanError, match=r"same\.npy: all 50 points are at one position"):
        read_scan_points(tmp_path / "same.npy")
    t = np.linspace(0.0, 1.0, 300)[:, None]
    line = OFFSET + t * np.array([3.0, -2.0, 0.5])  # a diagonal line: every bounding-box side is non-zero
    write_ply(tmp_path / "line.ply", line)
    with pytest.raises(ScanError, match=r"line\.ply: all 300 points lie on one line"):
        read_scan_points(tmp_path / "line.ply")
    wall = scan_points()
    wall[:, 1] = OFFSET[1]  # one flat wall is a surface
    assert check_scan_points(wall).shape == (200, 3)
    with pytest.raises(ScanError, match=r"points: points must be an \(N, 3\) array"):
        check_scan_points(np.zeros((4, 2)))
