"""Surface extraction on analytic UDFs: the generated table, CAP-UDF's rule vectorised, and NDF dense points."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from ctxir.eval import extract_mesh, extract_points
from ctxir.eval.extraction import grid_values
from ctxir.eval.marching_cubes import EDGE_CORNERS, TRIANGLE_TABLE, Grid, polygonise
from ctxir.eval.udf_queries import query_values_and_gradients

CENTRE = torch.tensor([0.013, -0.021, 0.007])
UNIT = np.array([[-0.5] * 3, [0.5] * 3])


def sphere_udf(points: torch.Tensor, radius: float = 0.3) -> torch.Tensor:
    return (torch.linalg.vector_norm(points - CENTRE, dim=1) - radius).abs()


def square_udf(points: torch.Tensor, z: float = 0.0, half: float = 0.2) -> torch.Tensor:
    """Open square patch |x|, |y| ≤ half at height z."""
    outside = torch.stack([(points[:, 0].abs() - half).clamp(min=0), (points[:, 1].abs() - half).clamp(min=0)], 1)
    return torch.linalg.vector_norm(torch.cat([outside, (points[:, 2:] - z)], 1), dim=1)


def sample_mesh(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Area-uniform points on a triangle mesh."""
    rng = np.random.default_rng(seed)
    a, b, c = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    area = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    tri = rng.choice(len(faces), count, p=area / area.sum())
    u, v = rng.random((2, count))
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    return a[tri] + u[:, None] * (b - a)[tri] + v[:, None] * (c - a)[tri]


def chamfer_l1(pred: np.ndarray, true: np.ndarray) -> float:
    return 0.5 * (cKDTree(true).query(pred)[0].mean() + cKDTree(pred).query(true)[0].mean())


def edge_use(faces: np.ndarray) -> Counter:
    """How many faces use each undirected edge."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return Counter(Counter(map(tuple, edges)).values())


def test_table_uses_exactly_the_crossed_edges() -> None:
    for case in range(256):
        inside = np.array([(case >> i) & 1 for i in range(8)], dtype=bool)
        crossed = {e for e, (a, b) in enumerate(EDGE_CORNERS) if inside[a] != inside[b]}
        tris = TRIANGLE_TABLE[case][TRIANGLE_TABLE[case, :, 0] >= 0]
        assert set(tris.ravel().tolist()) == crossed
    assert TRIANGLE_TABLE.shape == (256, 5, 3)
    assert (TRIANGLE_TABLE[[0, 255]] == -1).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_sign_grid_gives_closed_oriented_surface(seed: int) -> None:
    """Neighbouring cells agree on every shared face: each edge is used by two faces, once in each direction."""
    grid = Grid.from_bounds(np.array([[0.0] * 3, [1.0] * 3]), 10)
    values = np.random.default_rng(seed).normal(size=grid.shape)
    values[[0, -1]] = values[:, [0, -1]] = values[:, :, [0, -1]] = 1.0  # positive border: closed output
    corners = grid.cell_corner_nodes(np.arange(np.prod(grid.cell_shape)))
    corner_values = values.ravel()[corners]
    _, faces = polygonise(grid, corners, corner_values, corner_values < 0)
    assert len(faces) > 100
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    assert set(Counter(map(tuple, directed)).values()) == {1}
    assert set(edge_use(faces)) == {2}


def test_sphere_sdf_volume_and_outward_normals() -> None:
    grid = Grid.from_bounds(UNIT * 2, 40)
    corners = grid.cell_corner_nodes(np.arange(np.prod(grid.cell_shape)))
    sdf = np.linalg.norm(grid.node_positions(corners.ravel()), axis=1).reshape(-1, 8) - 0.7
    vertices, faces = polygonise(grid, corners, sdf, sdf < 0)
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
    assert volume == pytest.approx(4 / 3 * np.pi * 0.7**3, rel=0.01)  # positive: normals point outside


def test_sphere_udf_mesh() -> None:
    resolution = 48
    voxel = 1 / (resolution - 1)
    vertices, faces = extract_mesh(sphere_udf, UNIT, resolution)
    assert vertices.dtype == np.float32 and faces.dtype == np.int64
    assert sphere_udf(torch.from_numpy(vertices)).max() < 0.05 * voxel  # no stray vertex
    assert set(edge_use(faces)) == {2}  # merged vertices, closed surface
    rng = np.random.default_rng(1)
    true = rng.normal(size=(20000, 3))
    true = 0.3 * true / np.linalg.norm(true, axis=1, keepdims=True) + CENTRE.numpy()
    assert chamfer_l1(sample_mesh(vertices, faces, 20000), true) < 0.5 * voxel


def test_matches_per_cell_marching_cubes_loop() -> None:
    """Same rule, same vertices as the published pattern: a Python loop calling skimage on each 2×2×2 block."""
    marching_cubes = pytest.importorskip("skimage.measure").marching_cubes
    resolution = 20
    grid = Grid.from_bounds(UNIT, resolution)
    voxel = grid.spacing[0]
    values = grid_values(sphere_udf, grid, 4096, "cpu")
    _, grads = query_values_and_gradients(sphere_udf, grid.node_positions(np.arange(grid.num_nodes)), 4096, "cpu")
    grads = grads.numpy().reshape(*grid.shape, 3)
    reference = []
    for i, j, k in np.ndindex(*grid.cell_shape):
        block = values[i : i + 2, j : j + 2, k : k + 2]
        if block.min() >= voxel:
            continue
        g = grads[i : i + 2, j : j + 2, k : k + 2].reshape(8, 3)
        signed = np.where(g @ g[block.ravel().argmax()] < 0, -block.ravel(), block.ravel()).reshape(2, 2, 2)
        if signed.min() < 0 < signed.max():
            reference.append(marching_cubes(signed, 0.0)[0] + [i, j, k])
    reference = np.concatenate(reference) * voxel + UNIT[0]
    vertices, _ = extract_mesh(sphere_udf, UNIT, resolution)
    assert cKDTree(vertices).query(reference)[0].max() < 1e-5
    assert cKDTree(reference).query(vertices)[0].max() < 1e-5


def test_open_patch_mesh_and_rim() -> None:
    resolution = 48
    voxel = 1 / (resolution - 1)
    udf = lambda p: square_udf(p, z=0.0123)  # noqa: E731
    vertices, faces = extract_mesh(udf, UNIT, resolution)
    xy = np.linspace(-0.2, 0.2, 150)
    true = np.stack(np.meshgrid(xy, xy, [0.0123], indexing="ij"), -1).reshape(-1, 3)
    assert chamfer_l1(sample_mesh(vertices, faces, 20000), true) < 0.5 * voxel
    distance = udf(torch.from_numpy(vertices)).numpy()
    interior = np.abs(vertices[:, :2]).max(axis=1) < 0.2
    assert distance[interior].max() < 1e-6  # one sheet, exactly on the patch
    assert distance.max() < 0.75 * voxel  # rim overshoot of the rule stays within a voxel
    assert distance.max() > 0.1 * voxel
    trimmed_vertices, _ = extract_mesh(udf, UNIT, resolution, max_vertex_udf=0.1 * voxel)
    assert udf(torch.from_numpy(trimmed_vertices)).max() <= 0.1 * voxel
    assert len(trimmed_vertices) < len(vertices)


def test_patch_between_grid_layers_is_found() -> None:
    """CAP-UDF's absolute 0.005 threshold misses a patch 0.0051 off a layer at 128³ on [-1, 1]; ours does not."""
    bounds = np.array([[-1.0] * 3, [1.0] * 3])
    voxel = 2 / 127
    z = -1 + 70 * voxel + 0.0051  # every node is ≥ 0.0051 from the patch
    udf = lambda p: square_udf(p, z=z, half=0.3)  # noqa: E731
    _, faces = extract_mesh(udf, bounds, 128, threshold=0.005)
    assert len(faces) == 0
    vertices, faces = extract_mesh(udf, bounds, 128)
    xy = np.linspace(-0.3, 0.3, 120)
    true = np.stack(np.meshgrid(xy, xy, [z], indexing="ij"), -1).reshape(-1, 3)
    assert chamfer_l1(sample_mesh(vertices, faces, 20000), true) < 0.5 * voxel


def test_patch_exactly_on_a_grid_layer_is_found_once() -> None:
    voxel = 1 / 47
    z = -0.5 + 20 * voxel
    vertices, faces = extract_mesh(lambda p: square_udf(p, z=z), UNIT, 48)
    assert len(faces) > 100
    np.testing.assert_allclose(vertices[:, 2], z, atol=1e-6)
    assert max(edge_use(faces)) == 2  # the cells above and below emitted one sheet, not two


def test_two_close_planes_stay_two_sheets() -> None:
    """Planes 0.02 apart on a grid coarse enough that the ridge between them is within the threshold."""
    shift = 0.0013

    def planes(p: torch.Tensor) -> torch.Tensor:
        return torch.minimum((p[:, 2] - shift - 0.01).abs(), (p[:, 2] - shift + 0.01).abs())

    bounds = np.array([[-0.1, -0.1, -0.05], [0.1, 0.1, 0.05]])
    vertices, faces = extract_mesh(planes, bounds, (31, 31, 15))
    np.testing.assert_allclose(np.unique(np.round(vertices[:, 2], 6)), [shift - 0.01, shift + 0.01], atol=1e-6)
    xy = np.linspace(-0.1, 0.1, 60)
    for z in (shift - 0.01, shift + 0.01):  # both sheets complete
        true = np.stack(np.meshgrid(xy, xy, [z], indexing="ij"), -1).reshape(-1, 3)
        assert cKDTree(vertices).query(true)[0].max() < 0.01
    ridge_vertices, _ = extract_mesh(planes, bounds, (31, 31, 15), reject_ridges=False)
    assert len(np.unique(np.round(ridge_vertices[:, 2], 6))) == 3  # without the ridge test: a spurious sheet


def test_finite_difference_fallback_and_inference_mode() -> None:
    detached = lambda p: sphere_udf(p).detach()  # noqa: E731
    auto_vertices, auto_faces = extract_mesh(sphere_udf, UNIT, 32)
    fd_vertices, fd_faces = extract_mesh(detached, UNIT, 32)  # auto falls back to finite differences
    assert len(fd_faces) == len(auto_faces)
    gap = cKDTree(auto_vertices).query(fd_vertices)[0]
    assert np.mean(gap < 1e-6) > 0.99 and gap.max() < 0.05 / 31  # a few borderline corner signs may differ
    with pytest.raises(RuntimeError, match="not differentiable"):
        extract_mesh(detached, UNIT, 16, gradient="autograd")
    with torch.inference_mode():  # as inside a Lightning test step
        vertices, faces = extract_mesh(sphere_udf, UNIT, 32, gradient="autograd")
    assert len(faces) == len(auto_faces)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="bounds must be"):
        extract_mesh(sphere_udf, [[0, 0, 0], [1, 1, 0]], 16)
    with pytest.raises(ValueError, match="resolution must be at least 2"):
        extract_mesh(sphere_udf, UNIT, 1)
    with pytest.raises(ValueError, match=r"returned shape \(16, 3\)"):
        extract_mesh(lambda p: p, UNIT, 16, chunk_size=16)


def test_dense_points_on_sphere() -> None:
    points = extract_points(sphere_udf, UNIT, 5000, num_seeds=8000, seed=0)
    assert points.shape == (5000, 3) and points.dtype == np.float32
    assert sphere_udf(torch.from_numpy(points)).max() < 0.009
    rng = np.random.default_rng(2)
    true = rng.normal(size=(5000, 3))
    true = 0.3 * true / np.linalg.norm(true, axis=1, keepdims=True) + CENTRE.numpy()
    assert cKDTree(points).query(true)[0].mean() < 0.01  # covers the whole sphere
    again = extract_points(sphere_udf, UNIT, 5000, num_seeds=8000, seed=0)
    np.testing.assert_array_equal(points, again)
    fd = extract_points(lambda p: sphere_udf(p).detach(), UNIT, 2000, num_seeds=4000, seed=0)
    assert sphere_udf(torch.from_numpy(fd)).max() < 0.009


def test_dense_points_fail_clearly() -> None:
    with pytest.raises(RuntimeError, match="no point came within resample_below"):
        extract_points(lambda p: torch.ones(len(p)) + 0 * p[:, 0], UNIT, 100, num_seeds=100, seed=0, seeding="uniform")
    with pytest.raises(RuntimeError, match="after 2 rounds"):
        extract_points(sphere_udf, UNIT, 10**6, num_seeds=500, max_rounds=2, seed=0)


def test_band_seeding_keeps_the_first_round() -> None:
    """Band seeds start near the surface, so their first round is kept: one round of 8000 × 7 gradient
    queries replaces NDF's two, for a 64³ seeding grid's value queries on a fifth of its nodes."""
    gradient_queries: dict[str, int] = {}
    value_queries: dict[str, int] = {}
    points = {}
    for seeding in ("band", "uniform"):
        calls: list[tuple[int, bool]] = []

        def udf(p: torch.Tensor) -> torch.Tensor:
            calls.append((len(p), p.requires_grad))
            return sphere_udf(p)

        points[seeding] = extract_points(udf, UNIT, 6000, num_seeds=8000, seed=0, seeding=seeding)
        gradient_queries[seeding] = sum(n for n, grad in calls if grad)
        value_queries[seeding] = sum(n for n, grad in calls if not grad)
    assert gradient_queries == {"band": 8000 * 7, "uniform": 2 * 8000 * 7}
    assert value_queries["uniform"] == 0 and 0 < value_queries["band"] < 0.25 * 64**3
    assert sphere_udf(torch.from_numpy(points["band"])).max() < 0.009
    rng = np.random.default_rng(3)
    true = rng.normal(size=(5000, 3))
    true = 0.3 * true / np.linalg.norm(true, axis=1, keepdims=True) + CENTRE.numpy()
    for seeded in points.values():  # both cover the whole sphere
        assert cKDTree(seeded).query(true)[0].mean() < 0.01
    with pytest.raises(ValueError, match="seeding must be"):
        extract_points(sphere_udf, UNIT, 10, seeding="grid")
    with pytest.raises(RuntimeError, match="seeding grid"):
        extract_points(lambda p: torch.ones(len(p)) + 0 * p[:, 0], UNIT, 10, num_seeds=10)
