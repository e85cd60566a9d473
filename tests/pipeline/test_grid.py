"""Crop grids and sampling: the geometry every model crop relies on."""

from __future__ import annotations

import numpy as np

from osteoscan.io import affine_from_spacing
from osteoscan.pipeline.grid import Grid, centered_grid, inside_mask, sample, sample_box, union_grid


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


# ------------------------------------------------------------------ box-wise sampling == resample_to_grid
def _random_aligned_case(rng: np.random.Generator, flip: bool, permute: bool):
    """A source volume and an axis-aligned grid that may stick out of it, on any side."""
    src_shape = tuple(int(s) for s in rng.integers(5, 30, size=3))
    src_aff = affine_from_spacing(tuple(rng.uniform(0.6, 3.0, size=3)), origin=tuple(rng.uniform(-50, 50, size=3)))
    direction = np.eye(3)
    if permute:
        direction = direction[:, rng.permutation(3)]
    if flip:
        direction = direction * rng.choice([-1.0, 1.0], size=3)
    centre = src_aff[:3, 3] + src_aff[:3, :3] @ (np.asarray(src_shape) * rng.uniform(-0.3, 1.3, size=3))
    shape = tuple(int(s) for s in rng.integers(3, 25, size=3))
    spacing = tuple(float(s) for s in rng.choice([0.5, 1.0, 1.25, rng.uniform(0.4, 3.5)], size=3))
    return src_shape, src_aff, centered_grid(centre, shape, spacing, direction)


def test_box_sampling_is_bit_identical_to_resample_to_grid() -> None:
    """The pipeline's fast sampler must give exactly what the general resampler gives (any side cut,
    flips, axis permutations, half-voxel ties, labels and HU): a changed value would change the
    fine model's input and so its masks."""
    from osteoscan.io.resample import resample_to_grid

    rng = np.random.default_rng(7)
    n_partly_outside = 0
    for case in range(300):
        src_shape, src_aff, g = _random_aligned_case(rng, flip=case % 3 == 1, permute=case % 4 == 2)
        hu = rng.integers(-1024, 2000, size=src_shape).astype(np.int16)
        labels = rng.integers(0, 4, size=src_shape).astype(np.uint16)
        for array, order, cval in ((hu, 1, -1024.0), (labels, 0, 0), (hu.astype(np.float32), 1, 0.0), (hu, 0, -1)):
            ref = resample_to_grid(array, src_aff, g.shape, g.affine, order=order, cval=cval, threads=1)
            out = sample(array, src_aff, g, order=order, cval=cval)
            assert out.dtype == ref.dtype and out.shape == ref.shape
            np.testing.assert_array_equal(out, ref, err_msg=f"case {case}, order {order}, {array.dtype}")
        inside = inside_mask(src_shape, src_aff, g)
        n_partly_outside += bool(inside.any() and not inside.all())
        np.testing.assert_array_equal(
            inside, resample_to_grid(np.ones(src_shape, np.uint8), src_aff, g.shape, g.affine, order=0).astype(bool)
        )
    assert n_partly_outside > 50  # the cases really exercise the cut edges


def test_box_sampling_on_exact_half_voxel_ties_matches_resample_to_grid() -> None:
    """Grid points exactly halfway between source voxels (2 mm source, 1 mm grid): nearest ties go up."""
    from osteoscan.io.resample import resample_to_grid

    src_aff = affine_from_spacing((2.0, 2.0, 2.0))
    labels = np.arange(6 * 5 * 4, dtype=np.uint8).reshape(6, 5, 4)
    g = Grid((9, 7, 5), affine_from_spacing((1.0, 1.0, 1.0), origin=(-1.0, 1.0, 3.0)))
    out = sample(labels, src_aff, g, order=0)
    np.testing.assert_array_equal(out, resample_to_grid(labels, src_aff, g.shape, g.affine, order=0))
    assert len(np.unique(out)) > 10


def test_sample_box_covers_only_the_part_of_the_grid_inside_the_source() -> None:
    src_aff = affine_from_spacing((1.0, 1.0, 1.0))
    src = np.full((10, 10, 10), 5, dtype=np.int16)
    g = Grid((6, 4, 4), affine_from_spacing((1.0, 1.0, 1.0), origin=(2.0, 3.0, 7.0)))  # 3 slices outside
    box, values = sample_box(src, src_aff, g, order=1)
    assert box == (slice(0, 3), slice(0, 4), slice(0, 4))  # axis 2 of the grid runs along LPS x
    assert values.shape == (3, 4, 4) and values.dtype == np.float32 and (values == 5).all()
    missed = Grid((2, 2, 2), affine_from_spacing((1.0, 1.0, 1.0), origin=(50.0, 0.0, 0.0)))
    box, values = sample_box(src, src_aff, missed, order=0)
    assert values.size == 0 and not sample(src, src_aff, missed, order=0, cval=-3).__ne__(-3).any()


def test_oblique_grid_falls_back_to_the_general_resampler() -> None:
    from osteoscan.io.resample import resample_to_grid

    src_aff = affine_from_spacing((1.0, 1.0, 1.0))
    src = np.random.default_rng(0).normal(size=(12, 12, 12)).astype(np.float32)
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    g = centered_grid(np.array([6.0, 6.0, 6.0]), (5, 5, 5), (1.0, 1.0, 1.0), rot)
    assert sample_box(src, src_aff, g, order=1) is None
    np.testing.assert_array_equal(
        sample(src, src_aff, g, order=1), resample_to_grid(src, src_aff, g.shape, g.affine, order=1)
    )
