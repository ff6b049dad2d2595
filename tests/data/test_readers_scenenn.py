"""SceneNN (nyu40 release) reader on raw-format PLY fixtures: both class sets, instances, layouts, bad files."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import declare_rows, write_scenenn_root, write_scenenn_scene
from plyfile import PlyData, PlyElement

from ctxir.data import scenenn
from ctxir.data.errors import CorruptFileError, DatasetNotFoundError

NYU40 = {
    "scannet20": (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39),
    "rangeudf11": (1, 2, 3, 4, 5, 6, 7, 14, 25, 29, 40),
}


def _face_reference(vertex_values: np.ndarray, faces: np.ndarray) -> list[int]:
    values = [[int(vertex_values[v]) for v in face] for face in faces]
    return [max(face, key=face.count) for face in values]


@pytest.mark.parametrize("classes", ["scannet20", "rangeudf11"])
def test_read_scene_matches_brute_force(tmp_path: Path, classes: str) -> None:
    truth = write_scenenn_scene(tmp_path, "005", seed=4)
    mesh = scenenn.read_scene(truth.path, classes=classes)
    valid = {nyu40: index for index, nyu40 in enumerate(NYU40[classes])}
    assert mesh.name == "005" and mesh.vertex_colors is None  # class colours are not returned
    np.testing.assert_array_equal(mesh.vertices, truth.vertices)
    np.testing.assert_array_equal(mesh.faces, truth.faces)
    np.testing.assert_array_equal(mesh.vertex_labels, [valid.get(int(v), -1) for v in truth.nyu40])
    expected = [valid.get(v, -1) for v in _face_reference(truth.nyu40, truth.faces)]
    np.testing.assert_array_equal(mesh.face_labels, expected)
    np.testing.assert_array_equal(mesh.vertex_instances, truth.instances)
    np.testing.assert_array_equal(mesh.face_instances, _face_reference(truth.instances, truth.faces))


def test_known_answers_per_class_set(tmp_path: Path) -> None:
    truth = write_scenenn_scene(tmp_path, "011")
    default = scenenn.read_scene(truth.path)
    eleven = scenenn.read_scene(truth.path, classes="rangeudf11")
    by_nyu40 = {int(v): (int(a), int(b)) for v, a, b in zip(truth.nyu40, default.vertex_labels, eleven.vertex_labels)}
    # nyu40 -> (scannet20 index, rangeudf11 index): 0 unannotated, 14 desk, 29 box, 40 prop, 25 television
    assert by_nyu40 == {0: (-1, -1), 1: (0, 0), 2: (1, 1), 5: (4, 4), 7: (6, 6), 14: (12, 7), 29: (-1, 9),
                        40: (-1, 10), 25: (-1, 8)}  # fmt: skip
    assert default.face_labels[truth.tie_face] == 6 == eleven.face_labels[truth.tie_face]  # (7, 25, 1): first
    assert set(default.face_instances) == {8000 + 37 * part for part in range(8)}
    assert scenenn.CLASS_NAMES == scenenn.class_names("scannet20") and len(scenenn.CLASS_NAMES) == 20
    assert scenenn.class_names("rangeudf11")[8:] == ("television", "box", "prop")
    with pytest.raises(ValueError, match="rangeudf11"):
        scenenn.read_scene(truth.path, classes="nyu40")


@pytest.mark.parametrize("nested", [False, True])
def test_list_items_and_read_item(tmp_path: Path, nested: bool) -> None:
    scenes = write_scenenn_root(tmp_path / "scenenn_dec24_data" if nested else tmp_path)
    with pytest.warns(UserWarning, match="54 of 56 items are missing") as record:
        assert scenenn.list_items(tmp_path, "train") == ["005", "014"]
    assert len(record) == 1
    with pytest.warns(UserWarning, match="19 of 20"):
        assert scenenn.list_items(tmp_path, "test") == ["011"]
    with pytest.warns(UserWarning, match="19 of 20"):
        assert scenenn.list_items(tmp_path, "val") == ["011"]  # val = the test list
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (mesh,) = scenenn.read_item(tmp_path, "014", classes="rangeudf11")
    assert mesh.name == "014" and mesh.num_faces == len(scenes["014"].faces)


def test_missing_root_layout_and_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"nothing.*<root>/<id>/<id>.ply"):
        scenenn.list_items(tmp_path / "nothing", "train")
    (tmp_path / "005").mkdir()
    (tmp_path / "005" / "mesh.ply").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="<id>/<id>.ply"):
        scenenn.list_items(tmp_path, "train")
    with pytest.raises(DatasetNotFoundError, match="021.ply"):
        scenenn.read_scene(tmp_path / "021" / "021.ply")


def test_damaged_files_raise_corrupt_file_error(tmp_path: Path) -> None:
    truth = write_scenenn_scene(tmp_path, "005", corrupt="truncated")
    with pytest.raises(CorruptFileError, match="005.ply") as error:
        scenenn.read_scene(truth.path)
    assert error.value.path == truth.path
    truth.path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty flo")
    with pytest.raises(CorruptFileError, match="cannot parse PLY"):
        scenenn.read_scene(truth.path)
    good = write_scenenn_scene(tmp_path / "other", "005")
    vertex = PlyData.read(str(good.path), mmap=False)["vertex"].data
    kept = [n for n in vertex.dtype.names if n != "nyu_class"]
    no_class = np.empty(len(vertex), dtype=[(n, vertex.dtype[n]) for n in kept])
    for name in kept:
        no_class[name] = vertex[name]
    PlyData([PlyElement.describe(no_class, "vertex")], text=False).write(str(good.path))
    with pytest.raises(CorruptFileError, match=r"lacks \['nyu_class'\]"):
        scenenn.read_scene(good.path)


def test_ascii_ply_reads_the_same_and_rejects_polygons(tmp_path: Path) -> None:
    truth = write_scenenn_scene(tmp_path, "005")
    binary = scenenn.read_scene(truth.path)
    ply = PlyData.read(str(truth.path), mmap=False)
    PlyData([ply["vertex"], ply["face"]], text=True).write(str(truth.path))
    assert truth.path.read_bytes().startswith(b"ply\nformat ascii")
    ascii_mesh = scenenn.read_scene(truth.path)
    np.testing.assert_array_equal(ascii_mesh.faces, binary.faces)
    np.testing.assert_array_equal(ascii_mesh.face_labels, binary.face_labels)
    faces = np.empty(1, dtype=[("vertex_indices", "O")])
    faces["vertex_indices"][0] = np.array([0, 1, 2, 3], dtype=np.int32)
    PlyData([ply["vertex"], PlyElement.describe(faces, "face")], text=True).write(str(truth.path))
    with pytest.raises(CorruptFileError, match="face 0 has 4 vertices"):
        scenenn.read_scene(truth.path)


def test_ascii_header_counts_must_match_the_data(tmp_path: Path) -> None:
    truth = write_scenenn_scene(tmp_path, "005")
    ply = PlyData.read(str(truth.path), mmap=False)
    PlyData([ply["vertex"], ply["face"]], text=True).write(str(truth.path))
    declare_rows(truth.path, "face", len(truth.faces) - 3)
    with pytest.raises(CorruptFileError, match=rf"{truth.path}: corrupt file: 3 lines of data follow the elements"):
        scenenn.read_scene(truth.path)
