"""ScanNet v2 reader on raw-format fixtures: labels, instances, colours, layouts and damaged files."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement
from data_fixtures import declare_rows, write_scannet_label_map, write_scannet_root, write_scannet_scene

from ctxir.data import scannet
from ctxir.data.errors import CorruptFileError, DatasetNotFoundError

BENCHMARK = {nyu40: index for index, nyu40 in enumerate(scannet.NYU40_IDS)}


def _class_of(nyu40: int) -> int:
    return BENCHMARK.get(nyu40, -1)


def _face_reference(vertex_values: np.ndarray, faces: np.ndarray) -> list[int]:
    values = [[int(vertex_values[v]) for v in face] for face in faces]
    return [max(face, key=face.count) for face in values]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("scannet")
    return path, write_scannet_root(path)


def test_read_scene_with_labels_ply_matches_brute_force(root: tuple[Path, dict]) -> None:
    path, scenes = root
    truth = scenes["scene0191_00"]
    mesh = scannet.read_scene(truth.scene_dir)
    assert mesh.name == "scene0191_00"
    np.testing.assert_array_equal(mesh.vertices, truth.vertices)
    np.testing.assert_array_equal(mesh.faces, truth.faces)
    np.testing.assert_array_equal(mesh.vertex_colors, truth.colors)
    np.testing.assert_array_equal(mesh.vertex_labels, [_class_of(int(v)) for v in truth.labels_nyu40])
    expected_faces = [_class_of(v) for v in _face_reference(truth.labels_nyu40, truth.faces)]
    np.testing.assert_array_equal(mesh.face_labels, expected_faces)
    np.testing.assert_array_equal(mesh.vertex_instances, truth.instances)
    np.testing.assert_array_equal(mesh.face_instances, _face_reference(truth.instances, truth.faces))


def test_known_answers_for_strays_ties_and_non_benchmark_classes(root: tuple[Path, dict]) -> None:
    truth = root[1]["scene0191_00"]
    mesh = scannet.read_scene(truth.scene_dir)
    assert (mesh.vertex_labels[truth.labels_nyu40 == 50] == -1).all() and (truth.labels_nyu40 == 50).sum() == 4
    assert mesh.face_labels[truth.tie_face] == scannet.CLASS_NAMES.index("chair")  # (5, 22, 1): first vertex
    assert set(mesh.vertex_labels[truth.labels_nyu40 == 23]) == {-1}  # books: nyu40 23, not a benchmark id
    counts = np.bincount(mesh.face_labels + 1, minlength=21)
    assert counts[1 + scannet.CLASS_NAMES.index("floor")] == 128
    assert counts[1 + scannet.CLASS_NAMES.index("table")] == 40
    assert set(mesh.face_instances[mesh.face_labels == 1]) == {0}  # the floor is object 0
    assert (mesh.vertex_instances == -1).sum() == (truth.instances == -1).sum() > 0


def test_labels_from_aggregation_when_labels_ply_is_absent(tmp_path: Path) -> None:
    truth = write_scannet_scene(tmp_path, "scene0000_00", seed=3, labels_ply=False)
    write_scannet_label_map(tmp_path / scannet.LABEL_MAP_NAME)
    mesh = scannet.read_scene(truth.scene_dir)
    np.testing.assert_array_equal(mesh.vertex_labels, [_class_of(int(v)) for v in truth.aggregation_nyu40])
    expected = [_class_of(v) for v in _face_reference(truth.aggregation_nyu40, truth.faces)]
    np.testing.assert_array_equal(mesh.face_labels, expected)
    assert (mesh.vertex_labels[truth.aggregation_nyu40 == 0] == -1).all()
    elsewhere = write_scannet_label_map(tmp_path / "meta" / "table.tsv")
    (tmp_path / scannet.LABEL_MAP_NAME).unlink()
    np.testing.assert_array_equal(scannet.read_scene(truth.scene_dir, label_map_file=elsewhere).face_labels, expected)
    with pytest.raises(DatasetNotFoundError, match=scannet.LABEL_MAP_NAME):
        scannet.read_scene(truth.scene_dir)


def test_scan_without_labels(tmp_path: Path) -> None:
    truth = write_scannet_scene(tmp_path, "scene0707_00", labels_ply=False, aggregation=False, folder="scans_test")
    with pytest.raises(DatasetNotFoundError, match="labels.ply"):
        scannet.read_scene(truth.scene_dir)
    mesh = scannet.read_scene(truth.scene_dir, require_labels=False)
    assert (mesh.face_labels == -1).all() and (mesh.vertex_instances == -1).all()
    assert mesh.num_faces == len(truth.faces)


def test_list_items_follows_official_lists_and_warns_once(root: tuple[Path, dict]) -> None:
    path, _ = root
    with pytest.warns(UserWarning, match="1199 of 1201 items are missing") as record:
        assert scannet.list_items(path, "train") == ["scene0191_00", "scene0191_01"]
    assert len(record) == 1
    with pytest.warns(UserWarning, match="311 of 312"):
        assert scannet.list_items(path, "val") == ["scene0568_00"]
    with pytest.warns(UserWarning, match="311 of 312"):
        assert scannet.list_items(path, "test") == ["scene0568_00"]  # test = the official val list
    with pytest.raises(ValueError, match="split"):
        scannet.list_items(path, "all")


def test_read_item_returns_one_clean_mesh(root: tuple[Path, dict]) -> None:
    path, scenes = root
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (mesh,) = scannet.read_item(path, "scene0191_01")
    assert mesh.name == "scene0191_01"
    assert mesh.num_faces == len(scenes["scene0191_01"].faces)


def test_missing_root_or_layout_names_path_and_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"nowhere.*expected <root>/scans/<scene>"):
        scannet.list_items(tmp_path / "nowhere", "train")
    (tmp_path / "scans" / "junk").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="scans"):
        scannet.list_items(tmp_path, "train")
    with pytest.raises(DatasetNotFoundError, match="scene0001_00"):
        scannet.read_item(tmp_path, "scene0001_00")
    (tmp_path / "scans" / "scene0002_00").mkdir()
    with pytest.raises(DatasetNotFoundError, match="scene0002_00_vh_clean_2.ply"):
        scannet.read_item(tmp_path, "scene0002_00")


@pytest.mark.parametrize("corrupt", ["mesh", "labels", "aggregation", "segs"])
def test_truncated_files_raise_corrupt_file_error_naming_the_file(tmp_path: Path, corrupt: str) -> None:
    truth = write_scannet_scene(tmp_path, "scene0000_00", corrupt=corrupt)
    with pytest.raises(CorruptFileError) as error:
        scannet.read_scene(truth.scene_dir)
    assert error.value.path == truth.paths[corrupt]
    assert truth.paths[corrupt].name in str(error.value)


def test_inconsistent_files_raise_corrupt_file_error(tmp_path: Path) -> None:
    truth = write_scannet_scene(tmp_path, "scene0000_00", seed=0)
    labels = PlyData.read(str(truth.paths["labels"]), mmap=False)["vertex"].data[:-1].copy()  # one vertex short
    PlyData([PlyElement.describe(labels, "vertex")], text=False, byte_order="<").write(str(truth.paths["labels"]))
    with pytest.raises(CorruptFileError, match="359 vertices but"):
        scannet.read_scene(truth.scene_dir)
    truth.paths["labels"].unlink()
    truth.paths["segs"].write_text('{"segIndices": [1, 2, 3]}')
    with pytest.raises(CorruptFileError, match="segIndices has 3 entries"):
        scannet.read_scene(truth.scene_dir)
    truth.paths["segs"].write_text('{"segs": []}')
    with pytest.raises(CorruptFileError, match="segIndices"):
        scannet.read_scene(truth.scene_dir)


def test_non_triangle_ply_and_nan_vertices(tmp_path: Path) -> None:
    truth = write_scannet_scene(tmp_path, "scene0000_00")
    ply = PlyData.read(str(truth.paths["mesh"]), mmap=False)
    vertex = ply["vertex"].data.copy()
    quads = np.empty(1, dtype=[("vertex_indices", "O")])
    quads["vertex_indices"][0] = np.array([0, 1, 2, 3], dtype=np.int32)
    PlyData([PlyElement.describe(vertex, "vertex"), PlyElement.describe(quads, "face")], text=False,
            byte_order="<").write(str(truth.paths["mesh"]))  # fmt: skip
    with pytest.raises(CorruptFileError, match="list length|triangle"):
        scannet.read_scene(truth.scene_dir)
    truth = write_scannet_scene(tmp_path, "scene0000_00")
    ply = PlyData.read(str(truth.paths["mesh"]), mmap=False)
    vertex = ply["vertex"].data.copy()
    vertex["x"][0] = np.nan
    PlyData([PlyElement.describe(vertex, "vertex"), ply["face"]], text=False, byte_order="<").write(
        str(truth.paths["mesh"])
    )
    with pytest.warns(UserWarning, match=r"'scene0000_00'.*1 vertices with NaN/inf coordinates"):
        (mesh,) = scannet.read_item(tmp_path, "scene0000_00")
    assert mesh.num_faces == len(truth.faces) - int((truth.faces == 0).any(axis=1).sum())
    assert np.isfinite(mesh.vertices).all()


def test_header_counts_must_match_the_data(tmp_path: Path) -> None:
    truth = write_scannet_scene(tmp_path, "scene0000_00")
    mesh = truth.paths["mesh"]
    declare_rows(mesh, "face", len(truth.faces) - 10)  # the last 10 faces would be dropped without a word
    with pytest.raises(CorruptFileError, match=rf"{mesh}: corrupt file: 130 bytes of data follow .*counts do not"):
        scannet.read_scene(truth.scene_dir)
    declare_rows(mesh, "face", len(truth.faces) + 1)
    with pytest.raises(CorruptFileError, match=f"{mesh}.*early end-of-file"):
        scannet.read_scene(truth.scene_dir)


def test_a_mesh_without_faces_names_its_file(tmp_path: Path) -> None:
    truth = write_scannet_scene(tmp_path, "scene0000_00")
    vertex = PlyData.read(str(truth.paths["mesh"]), mmap=False)["vertex"].data.copy()
    no_faces = np.empty(0, dtype=[("vertex_indices", "i4", (3,))])
    PlyData([PlyElement.describe(vertex, "vertex"), PlyElement.describe(no_faces, "face")], text=False,
            byte_order="<").write(str(truth.paths["mesh"]))  # fmt: skip
    with pytest.raises(CorruptFileError, match=rf"{truth.paths['mesh']}: corrupt file: declares 0 faces"):
        scannet.read_item(tmp_path, "scene0000_00")


@pytest.mark.parametrize("missing", ["segs", "aggregation"])
def test_a_scan_without_its_instance_files_warns_naming_the_scene_and_the_consequence(
    tmp_path: Path, missing: str
) -> None:
    truth = write_scannet_scene(tmp_path, "scene0000_00")
    truth.paths[missing].unlink()
    with pytest.warns(UserWarning, match=rf"ScanNet scene scene0000_00: {truth.paths[missing].name} missing .* no "
                                         r"instances.*instance-boundary label rule .* is off"):
        mesh = scannet.read_scene(truth.scene_dir)
    assert (mesh.vertex_instances == -1).all()
    np.testing.assert_array_equal(mesh.vertex_labels, [_class_of(int(v)) for v in truth.labels_nyu40])
