"""Narrow-band extraction: the coarse-to-fine search finds exactly the dense pass's candidate cells on exact UDFs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctxir.eval import extract_mesh
from ctxir.eval.extraction import candidate_cells, grid_values
from ctxir.eval.marching_cubes import CORNER_OFFSETS, Grid
from ctxir.eval.narrow_band import NodeValues, auto_levels, block_corner_nodes, narrow_band_cells

CENTRE = torch.tensor([0.013, -0.021, 0.007])
UNIT = np.array([[-0.5] * 3, [0.5] * 3])


def sphere_udf(points: torch.Tensor, radius: float = 0.3) -> torch.Tensor:
    return (torch.linalg.vector_norm(points - CENTRE, dim=1) - radius).abs()


def square_udf(points: torch.Tensor, z: float = 0.0123, half: float = 0.2) -> torch.Tensor:
    outside = torch.stack([(points[:, 0].abs() - half).clamp(min=0), (points[:, 1].abs() - half).clamp(min=0)], 1)
    return torch.linalg.vector_norm(torch.cat([outside, points[:, 2:] - z], 1), dim=1)


def planes_udf(points: torch.Tensor) -> torch.Tensor:
    return torch.minimum((points[:, 2] - 0.0113).abs(), (points[:, 2] + 0.0087).abs())


def counting(udf):
    """The UDF and a list that receives the number of points of every call."""
    calls: list[int] = []

    def wrapped(points: torch.Tensor) -> torch.Tensor:
        calls.append(len(points))
        return udf(points)

    return wrapped, calls


def dense_candidates(udf, grid: Grid, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    values = grid_values(udf, grid, 1 << 16, "cpu")
    cells = candidate_cells(values, threshold)
    return cells, values.ravel()[grid.cell_corner_nodes(cells)]


CASES = [
    (sphere_udf, UNIT, 64),
    (sphere_udf, UNIT, 50),  # 49 cells per axis: blocks clipped at the far faces
    (square_udf, UNIT, 57),
    (planes_udf, np.array([[-0.1, -0.1, -0.05], [0.1, 0.1, 0.05]]), (41, 37, 23)),  # anisotropic
]


@pytest.mark.parametrize("udf,bounds,resolution", CASES)
@pytest.mark.parametrize("levels", [None, 1, 2, 3])
def test_band_cells_equal_dense_candidates(udf, bounds, resolution, levels) -> None:
    grid = Grid.from_bounds(bounds, resolution)
    threshold = float(grid.spacing.max())
    cells, values = dense_candidates(udf, grid, threshold)
    counted, calls = counting(udf)
    band_cells, band_values, table = narrow_band_cells(counted, grid, threshold, levels=levels, lipschitz=1.0)
    np.testing.assert_array_equal(band_cells, cells)
    np.testing.assert_array_equal(band_values, values)
    assert sum(calls) == table.evaluated  # every node evaluated once


def test_band_evaluates_a_small_fraction_at_high_resolution() -> None:
    grid = Grid.from_bounds(UNIT, 160)
    udf, calls = counting(sphere_udf)
    cells, _, table = narrow_band_cells(udf, grid, float(grid.spacing.max()))
    assert sum(calls) == table.evaluated < 0.08 * grid.num_nodes  # default safety factor 2
    assert len(cells) > 0.01 * np.prod(grid.cell_shape)


def test_levels_zero_is_the_dense_pass() -> None:
    grid = Grid.from_bounds(UNIT, 20)
    cells, values = dense_candidates(sphere_udf, grid, 0.05)
    band_cells, band_values, table = narrow_band_cells(sphere_udf, grid, 0.05, levels=0)
    np.testing.assert_array_equal(band_cells, cells)
    np.testing.assert_array_equal(band_values, values)
    assert table.evaluated == grid.num_nodes


def test_auto_levels_keep_sixteen_coarse_blocks() -> None:
    assert [auto_levels(Grid.from_bounds(UNIT, r)) for r in (20, 48, 96, 128, 256, 512)] == [0, 1, 2, 2, 3, 4]
    assert auto_levels(Grid.from_bounds(UNIT, (256, 256, 40))) == 1


def test_steeper_field_needs_the_safety_factor() -> None:
    """A 3-Lipschitz field breaks the λ = 1 bound (cells are missed); λ = 3 finds every candidate again."""
    steep = lambda p: 3.0 * sphere_udf(p)  # noqa: E731
    grid = Grid.from_bounds(UNIT, 96)
    threshold = float(grid.spacing.max())
    cells, _ = dense_candidates(steep, grid, threshold)
    missed, _, _ = narrow_band_cells(steep, grid, threshold, lipschitz=1.0)
    assert set(missed) < set(cells)
    found, _, _ = narrow_band_cells(steep, grid, threshold, lipschitz=3.0)
    np.testing.assert_array_equal(found, cells)


@pytest.mark.parametrize("udf,bounds,resolution", CASES)
def test_mesh_equals_dense_mesh(udf, bounds, resolution) -> None:
    dense_vertices, dense_faces = extract_mesh(udf, bounds, resolution, narrow_band=False)
    vertices, faces = extract_mesh(udf, bounds, resolution)
    assert len(faces) > 100
    np.testing.assert_array_equal(vertices, dense_vertices)
    np.testing.assert_array_equal(faces, dense_faces)


def test_node_table_remembers_values() -> None:
    table = NodeValues(50)
    table.store(np.array([7, 2, 40]), np.array([0.7, 0.2, 4.0], dtype=np.float32))
    assert table.missing(np.array([40, 3, 2, 3, 49, 7])).tolist() == [3, 49]
    np.testing.assert_array_equal(table.lookup(np.array([[40, 3], [2, 7]])),
                                  np.array([[4.0, np.inf], [0.2, 0.7]], dtype=np.float32))
    assert table.evaluated == 3


def test_block_corners_are_clipped_at_the_far_faces() -> None:
    grid = Grid.from_bounds(UNIT, (7, 6, 5))  # 6 x 5 x 4 cells
    lower = np.array([[0, 0, 0], [4, 4, 0]])
    corners = block_corner_nodes(grid, lower, 4)
    expected = np.minimum(lower[:, None, :] + 4 * CORNER_OFFSETS[None], np.array(grid.shape) - 1)
    np.testing.assert_array_equal(corners, np.ravel_multi_index(tuple(np.moveaxis(expected, -1, 0)), grid.shape))


def test_bad_arguments_are_named() -> None:
    grid = Grid.from_bounds(UNIT, 16)
    with pytest.raises(ValueError, match="lipschitz must be positive"):
        narrow_band_cells(sphere_udf, grid, 0.1, lipschitz=0.0)
    with pytest.raises(ValueError, match="levels must be"):
        narrow_band_cells(sphere_udf, grid, 0.1, levels=-1)
