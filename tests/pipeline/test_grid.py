"""Crop grids and sampling: the geometry every model crop relies on."""

from __future__ import annotations

import numpy as np

from osteoscan.io import affine_from_spacing
from osteoscan.pipeline.grid import Grid, centered_grid, inside_mask, sample, union_grid


def test_centered_grid_puts_its_centre_on_the_point() -> None:
    g = centered_grid(np.array([10.0, -20.0, 30.0]), (8, 6, 4), (1.0, 1.0, 1.0), np.eye(3))
    centre = g.index_to_lps((np.asarray(g.shape) - 1) / 2)
    np.testing.assert_allclose(centre, [10.0, -20.0, 30.0])


def test_sample_recovers_a_linear_ramp_on_a_finer_offset_grid() -> None:
    src_aff = affine_from_spacing((3.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0))
    k, _j, _i = np.indices((20, 30, 30)).astype(np.float32)
    # value = LPS z (axis 0 points to +z with 3 mm slices)
    src = (k * 3.0).astype(np.float32)
    target = centered_grid(np.array([20.0, 25.0, 30.0]), (10, 10, 10), (1.0, 1.0, 1.0), np.eye(3)[:, [2, 1, 0]])
    out = sample(src, src_aff, target, order=1)
    expected_z = target.index_to_lps(np.stack(np.indices(target.shape), -1).reshape(-1, 3))[:, 2]
    np.testing.assert_allclose(out.reshape(-1), expected_z, atol=1e-3)


def test_points_outside_the_source_get_cval_and_are_not_inside() -> None:
    src_aff = affine_from_spacing((1.0, 1.0, 1.0))
    src = np.full((5, 5, 5), 7, dtype=np.int16)
    g = Grid((5, 5, 5), affine_from_spacing((1.0, 1.0, 1.0), origin=(0.0, 0.0, 3.0)))  # shifted 3 mm up
    out = sample(src, src_aff, g, order=0, cval=-1)
    assert (out[:2] == 7).all() and (out[2:] == -1).all()
    inside = inside_mask(src.shape, src_aff, g)
    assert inside[:2].all() and not inside[2:].any()


def test_union_grid_contains_every_grid() -> None:
    d = np.eye(3)[:, [2, 1, 0]]
    a = centered_grid(np.array([0.0, 0.0, 0.0]), (10, 10, 10), (1.0, 1.0, 1.0), d)
    b = centered_grid(np.array([5.0, 3.0, 40.0]), (10, 10, 10), (1.0, 1.0, 1.0), d)
    u = union_grid([a, b], (1.0, 1.0, 1.0), d)
    for g in (a, b):
        corners = g.index_to_lps(np.array([[0, 0, 0], np.asarray(g.shape) - 1]))
        idx = np.linalg.solve(u.affine[:3, :3], (corners - u.affine[:3, 3]).T).T
        assert (idx >= -1e-6).all() and (idx <= np.asarray(u.shape) - 1 + 1e-6).all()
