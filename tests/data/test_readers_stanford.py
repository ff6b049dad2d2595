"""2D-3D-S reader on raw-format OBJ fixtures: room splitting, re-indexing, classes, instances, bad files."""

from pathlib import Path

import numpy as np
import pytest
from data_fixtures import STANFORD_CLASSES, write_stanford_area, write_stanford_root

from ctxir.data import stanford
from ctxir.data.errors import CorruptFileError, DatasetNotFoundError


def _canonical(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Faces as sorted rows of (9 corner coordinates, label): independent of vertex and face order."""
    rows = np.concatenate([vertices[faces].reshape(len(faces), 9), labels[:, None]], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("stanford")
    return root, write_stanford_area(root, "area_1", rooms=(("office", 1), ("hallway", 2), ("WC", 1)))


def test_class_order_is_pinned() -> None:
    assert stanford.CLASS_NAMES == STANFORD_CLASSES
    assert stanford.CLASS_NAMES[7:11] == ("table", "chair", "sofa", "bookcase")


def test_rooms_are_split_and_reindexed_exactly(area) -> None:
    root, truth = area
    rooms = stanford.read_area(root / "area_1")
    assert sorted(rooms) == ["area_1/WC_1", "area_1/hallway_2", "area_1/office_1"] == sorted(truth.rooms)
    for name, mesh in rooms.items():
        expected = truth.rooms[name]
        assert mesh.name == name
        assert mesh.num_vertices == len(expected.vertices)  # only the room's own vertices
        assert mesh.num_faces == len(expected.faces)
        np.testing.assert_array_equal(
            _canonical(mesh.vertices, mesh.faces, mesh.face_labels),
            _canonical(expected.vertices, expected.faces, expected.face_labels),
        )


def test_known_class_counts_and_instances(area) -> None:
    root, truth = area
    mesh = stanford.read_area(root / "area_1")["area_1/office_1"]
    counts = dict(zip(stanford.CLASS_NAMES, np.bincount(mesh.face_labels, minlength=13)))
    assert counts == {**dict.fromkeys(stanford.CLASS_NAMES, 0), "floor": 128, "wall": 192, "chair": 40,
                      "table": 40, "clutter": 40}  # fmt: skip
    # 8 materials (floor_1, wall_1..wall_4, chair_1, table_1, clutter_1) -> 8 distinct instance ids,
    # one per material: the floor, written in two separate usemtl blocks, is still one instance.
    assert sorted(np.unique(mesh.face_instances)) == list(range(8))
    for label in np.unique(mesh.face_labels):
        per_label = np.unique(mesh.face_instances[mesh.face_labels == label])
        assert len(per_label) == {"wall": 4}.get(stanford.CLASS_NAMES[label], 1)
    wall_ids = np.unique(mesh.face_instances[mesh.face_labels == 2])
    assert all((mesh.face_instances == i).sum() == 48 for i in wall_ids)


def test_unknown_pseudo_room_is_dropped(area) -> None:
    root, truth = area
    rooms = stanford.read_area(root / "area_1")
    assert not any("UNK" in name for name in rooms)
    obj = stanford.read_material_obj(truth.obj_path)
    assert "<UNK>_0_<UNK>_0_0" in obj.materials
    assert sum(m.num_faces for m in rooms.values()) == len(obj.faces) - 4  # the <UNK> block has 4 faces


def test_read_material_obj_known_answer(tmp_path: Path) -> None:
    path = tmp_path / "tiny.obj"
    path.write_bytes(
        b"# comment\r\nmtllib x.mtl\r\nv 0 0 0 255 0 0\r\nv 1 0 0 255 0 0\r\nv 0 1 0 1 2 3\r\n"
        b"v 1 1 0.5 4 5 6\r\nvt 0 0\r\nvn 0 0 1\r\nusemtl b_1_office_1_1\r\nf 1//1 2//1 3//1\r\n"
        b"usemtl a_1_office_1_1\r\nf 2/1/1 4/1/1 3/1/1\r\nf\t1 2 4\r\nusemtl b_1_office_1_1\r\nf 4 3 1"
    )
    obj = stanford.read_material_obj(path)
    np.testing.assert_array_equal(obj.vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.5]])
    np.testing.assert_array_equal(obj.faces, [[0, 1, 2], [1, 3, 2], [0, 1, 3], [3, 2, 0]])
    assert obj.materials == ["a_1_office_1_1", "b_1_office_1_1"]
    np.testing.assert_array_equal(obj.face_material, [1, 0, 0, 1])


def test_stray_class_becomes_clutter_and_malformed_material_is_corrupt(tmp_path: Path) -> None:
    obj = tmp_path / "area_2" / "3d" / "semantic.obj"
    obj.parent.mkdir(parents=True)
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nusemtl stairs_1_hallway_1_2\nf 1 2 3\n")
    with pytest.warns(UserWarning, match=r"\['stairs'\].*clutter"):
        rooms = stanford.read_area(tmp_path / "area_2")
    assert list(rooms) == ["area_2/hallway_1"] and rooms["area_2/hallway_1"].face_labels.tolist() == [12]
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nusemtl chair_office_1\nf 1 2 3\n")
    with pytest.raises(CorruptFileError, match="chair_office_1"):
        stanford.read_area(tmp_path / "area_2")
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nusemtl chair_1_office_1_2\n")
    with pytest.raises(CorruptFileError, match="before the first usemtl"):
        stanford.read_area(tmp_path / "area_2")
    obj.write_text("")
    with pytest.raises(CorruptFileError, match="no faces"):
        stanford.read_area(tmp_path / "area_2")
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nusemtl chair_1_office_1_2\nf 1 2 4\n")
    with pytest.raises(CorruptFileError, match="outside 1..3"):
        stanford.read_area(tmp_path / "area_2")


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [("truncated", "face with 2 vertices"), ("garbage", "non-numeric"), ("quad", "face with 4 vertices")],
)
def test_damaged_obj_raises_corrupt_file_error(tmp_path: Path, corrupt: str, message: str) -> None:
    written = write_stanford_area(tmp_path, "area_3", corrupt=corrupt)
    with pytest.raises(CorruptFileError, match=message) as error:
        stanford.read_area(tmp_path / "area_3")
    assert error.value.path == written.obj_path


def test_list_items_and_read_item(tmp_path: Path) -> None:
    write_stanford_root(tmp_path, areas=("area_1", "area_3", "area_5a", "area_6"), rooms_per_area=2)
    assert (tmp_path / "assets" / "semantic_labels.json").is_file()
    with pytest.warns(UserWarning, match=r"2 of 4 items are missing and skipped \(area_2, area_4\)"):
        assert stanford.list_items(tmp_path, "train") == ["area_1", "area_3"]
    assert stanford.list_items(tmp_path, "val") == stanford.list_items(tmp_path, "test") == ["area_6"]
    meshes = stanford.read_item(tmp_path, "area_6")
    assert [m.name for m in meshes] == ["area_6/hallway_2", "area_6/office_1"]
    assert all(m.num_faces == 440 for m in meshes)


def test_missing_root_or_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"absent.*area_N/3d/semantic.obj"):
        stanford.list_items(tmp_path / "absent", "train")
    (tmp_path / "area_1").mkdir()
    with pytest.raises(DatasetNotFoundError, match="area_N/3d/semantic.obj"):
        stanford.list_items(tmp_path, "train")
    with pytest.raises(DatasetNotFoundError, match=r"area_1/3d/semantic.obj"):
        stanford.read_item(tmp_path, "area_1")


def test_an_area_without_a_usable_room_is_an_error(tmp_path: Path) -> None:
    obj = tmp_path / "area_3" / "3d" / "semantic.obj"
    obj.parent.mkdir(parents=True)
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nusemtl <UNK>_0_<UNK>_0_0\nf 1 2 3\nusemtl <UNK>_1_<UNK>_0_0\nf 2 4 3\n")
    with pytest.raises(CorruptFileError, match=rf"{obj}: corrupt file: no usable room: all 2 materials are <UNK>"):
        stanford.read_item(tmp_path, "area_3")
