"""Synthetic rooms: determinism, classes, open meshes, valid labels, and the designed context relations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from ctxir.data.preprocess import closest_points_on_mesh
from ctxir.data.synthetic import SYNTHETIC_CLASSES, generate_room, read_synthetic_room, subdivide

ROOMS = {seed: generate_room(seed) for seed in range(6)}
CLASS = {name: index for index, name in enumerate(SYNTHETIC_CLASSES)}


def test_same_seed_same_room_other_seed_other_room() -> None:
    again = generate_room(4)
    for key in ("vertices", "faces", "face_labels", "face_instances"):
        np.testing.assert_array_equal(getattr(again, key), getattr(ROOMS[4], key))
    assert ROOMS[4].num_faces != ROOMS[5].num_faces or not np.allclose(ROOMS[4].vertices, ROOMS[5].vertices)


def test_classes_labels_and_instances_are_valid() -> None:
    assert len(SYNTHETIC_CLASSES) >= 12 and len(set(SYNTHETIC_CLASSES)) == len(SYNTHETIC_CLASSES)
    present = set()
    for mesh in ROOMS.values():
        assert 1000 <= mesh.num_faces <= 10000  # "a few thousand faces"
        assert mesh.face_labels.min() >= 0 and mesh.face_labels.max() < len(SYNTHETIC_CLASSES)
        assert mesh.face_instances.min() >= 0
        # one label per instance, and every object has its own instance
        pairs = np.unique(np.stack([mesh.face_instances, mesh.face_labels], 1), axis=0)
        assert len(pairs) == len(np.unique(mesh.face_instances))
        assert (np.bincount(mesh.face_labels[np.unique(mesh.face_instances, return_index=True)[1]]) >= 1).sum() >= 5
        present |= set(mesh.face_labels.tolist())
    assert len(present) >= 12


def test_rooms_are_open_meshes_without_degenerate_faces() -> None:
    for mesh in ROOMS.values():
        edges = np.sort(mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        assert (counts == 1).sum() > 0  # boundary edges: not watertight
        corners = mesh.vertices[mesh.faces]
        areas = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
        assert areas.min() > 1e-6


def test_orientation_and_size_vary() -> None:
    yaws, extents = [], []
    for mesh in ROOMS.values():
        walls = mesh.faces[mesh.face_labels == CLASS["wall"]]
        corners = mesh.vertices[walls]
        normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        yaws.append(np.arctan2(normal[:, 1], normal[:, 0]).min() % (np.pi / 2))
        extents.append(np.ptp(mesh.vertices[:, :2], axis=0).max())
    assert np.ptp(yaws) > 0.3 and np.ptp(extents) > 1.0


def _distance_to_class(mesh, points: np.ndarray, label: int) -> np.ndarray:
    faces = mesh.faces[mesh.face_labels == label]
    return closest_points_on_mesh(mesh.vertices, faces, points)[0]


def test_desks_touch_walls_tables_stand_free_with_same_geometry() -> None:
    desk_gaps, table_gaps, desk_tops, table_tops = [], [], [], []
    for mesh in ROOMS.values():
        for name, gaps, tops in (("desk", desk_gaps, desk_tops), ("table", table_gaps, table_tops)):
            for instance in np.unique(mesh.face_instances[mesh.face_labels == CLASS[name]]):
                vertices = mesh.vertices[np.unique(mesh.faces[mesh.face_instances == instance])]
                gaps.append(_distance_to_class(mesh, vertices, CLASS["wall"]).min())
                tops.append(vertices[:, 2].max())
    assert desk_gaps and table_gaps
    assert max(desk_gaps) < 0.1 and min(table_gaps) > 0.5
    assert min(desk_tops) >= 0.72 and max(desk_tops) <= 0.76 and min(table_tops) >= 0.72 and max(table_tops) <= 0.76


def test_chair_and_sofa_differ_by_extent_bookshelves_beside_desks() -> None:
    for mesh in ROOMS.values():
        for name, low, high in (("chair", 0.6, 0.82), ("sofa", 1.5, 2.4)):
            for instance in np.unique(mesh.face_instances[mesh.face_labels == CLASS[name]]):
                vertices = mesh.vertices[np.unique(mesh.faces[mesh.face_instances == instance])]
                diameter = pdist(vertices[:, :2]).max()  # widest horizontal extent
                assert low < diameter < high, (name, diameter)
                seat = np.sort(vertices[:, 2])
                assert 0.38 <= seat[len(seat) // 2] <= 0.95  # same seat construction and height range
        for name, partner in (("bookshelf", "desk"), ("cabinet", "bed")):
            for instance in np.unique(mesh.face_instances[mesh.face_labels == CLASS[name]]):
                vertices = mesh.vertices[np.unique(mesh.faces[mesh.face_instances == instance])]
                assert _distance_to_class(mesh, vertices, CLASS[partner]).min() < 0.5


def test_subdivide_keeps_surface_and_labels() -> None:
    mesh = ROOMS[0]
    fine = subdivide(mesh, 2)
    assert fine.num_faces == 16 * mesh.num_faces

    def area(m) -> np.ndarray:
        c = m.vertices[m.faces]
        a = 0.5 * np.linalg.norm(np.cross(c[:, 1] - c[:, 0], c[:, 2] - c[:, 0]), axis=1)
        return np.bincount(m.face_labels, weights=a, minlength=len(SYNTHETIC_CLASSES))

    np.testing.assert_allclose(area(fine), area(mesh), rtol=1e-9)
    edges = np.sort(fine.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    coarse_edges = np.sort(mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    boundary = lambda e: (np.unique(e, axis=0, return_counts=True)[1] == 1).sum()  # noqa: E731
    assert boundary(edges) == 4 * boundary(coarse_edges)  # shared edges stay shared
    assert generate_room(0, subdivisions=1).num_faces == 4 * mesh.num_faces


def test_synthetic_reader_names_and_seeds() -> None:
    (a,) = read_synthetic_room(0, 0.25, "train_0001")
    (b,) = read_synthetic_room(0, 0.25, "val_0001")
    (c,) = read_synthetic_room(1, 0.25, "train_0001")
    assert a.name == "train_0001" and b.name == "val_0001"
    assert not np.array_equal(a.face_labels, b.face_labels) or not np.allclose(a.vertices, b.vertices)
    assert a.num_faces != c.num_faces or not np.allclose(a.vertices, c.vertices)
    with pytest.raises(ValueError, match="train_0003"):
        read_synthetic_room(0, 0.25, "room7")
