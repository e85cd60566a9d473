"""Fast separable resampling agrees with scipy's generic interpolation and keeps label maps exact."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from osteoscan.errors import GeometryError
from osteoscan.io.resample import grid_for_spacing, resample, resample_array, resample_to_grid
from osteoscan.io.volume import CTVolume, affine_from_spacing, reorient_array


def _reference(array: np.ndarray, affine: np.ndarray, shape, target_affine, order: int) -> np.ndarray:
    """scipy.ndimage.map_coordinates at the target voxel centres (edge-clamped like the fast path)."""
    m = np.linalg.inv(affine) @ target_affine
    grid = np.indices(shape).reshape(3, -1).astype(np.float64)
    pts = m[:3, :3] @ grid + m[:3, 3:4]
    return ndimage.map_coordinates(array.astype(np.float64), pts, order=order, mode="nearest").reshape(shape)


@pytest.mark.parametrize("threads", [1, 2])
def test_linear_matches_map_coordinates(threads: int) -> None:
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(23, 31, 27)).astype(np.float32)
    aff = affine_from_spacing((2.0, 0.7, 0.9), (5.0, 6.0, 7.0))
    shape, taff = grid_for_spacing(arr.shape, aff, (1.3, 1.1, 0.5))
    out = resample_to_grid(arr, aff, shape, taff, order=1, threads=threads)
    assert out.dtype == np.float32 and out.shape == shape == (35, 19, 48)
    assert np.abs(out - _reference(arr, aff, shape, taff, 1)).max() < 1e-5


def test_threads_split_large_volumes_identically() -> None:
    arr = np.random.default_rng(1).integers(-1000, 1000, size=(40, 160, 160)).astype(np.int16)
    aff = affine_from_spacing((1.25, 0.7, 0.7))
    one, _ = resample_array(arr, aff, 1.0, order=1, threads=1)
    two, _ = resample_array(arr, aff, 1.0, order=1, threads=2)
    assert np.array_equal(one, two)


def test_nearest_keeps_labels_and_dtype() -> None:
    lab = np.zeros((10, 12, 14), np.uint16)
    lab[2:8, 3:9, 4:10] = 119  # body of a level: any integer survives exactly
    lab[5, 5, 5] = 219
    aff = affine_from_spacing((3.0, 1.0, 1.0))
    out, new_aff = resample_array(lab, aff, (1.5, 2.0, 0.5), order=0)
    assert out.dtype == np.uint16 and set(np.unique(out)) <= {0, 119, 219}
    assert np.array_equal(out, _reference(lab, aff, out.shape, new_aff, 0).astype(np.uint16))


def test_grid_keeps_field_of_view_and_origin() -> None:
    aff = affine_from_spacing((1.25, 0.7, 0.7), (10.0, 20.0, 30.0))
    shape, new_aff = grid_for_spacing((255, 512, 512), aff, 3.0)
    assert shape == (106, 119, 119)
    # the field of view starts at the same voxel edge: centres move by half the size difference
    assert np.allclose(new_aff[:3, 3], aff[:3, 3] + [(3.0 - 0.7) / 2, (3.0 - 0.7) / 2, (3.0 - 1.25) / 2])
    assert np.allclose(np.linalg.norm(new_aff[:3, :3], axis=0), 3.0)
    with pytest.raises(GeometryError):
        grid_for_spacing((4, 4, 4), aff, (1.0, 0.0, 1.0))


def test_permuted_and_flipped_target_grid_uses_fast_path_exactly() -> None:
    arr = np.random.default_rng(2).normal(size=(8, 9, 10)).astype(np.float32)
    aff = affine_from_spacing((2.0, 1.0, 1.5))
    flipped, faff = reorient_array(arr, aff, ("L", "I", "A"))
    out = resample_to_grid(arr, aff, flipped.shape, faff, order=1)
    assert np.allclose(out, flipped, atol=1e-6)


def test_oblique_target_falls_back_to_scipy_and_outside_gets_cval() -> None:
    arr = np.random.default_rng(3).normal(size=(12, 12, 12)).astype(np.float32)
    aff = np.eye(4)
    rot = np.eye(4)
    c, s = np.cos(0.3), np.sin(0.3)
    rot[:3, :3] = [[1, 0, 0], [0, c, -s], [0, s, c]]
    rot[:3, 3] = [0.0, 3.0, -2.0]
    out = resample_to_grid(arr, aff, (12, 12, 12), rot, order=1, cval=-7.0)
    ref = _reference(arr, aff, (12, 12, 12), rot, 1)
    m = rot
    pts = (m[:3, :3] @ np.indices((12, 12, 12)).reshape(3, -1) + m[:3, 3:4]).T.reshape(12, 12, 12, 3)
    inside = np.all((pts >= -0.5) & (pts <= 11.5), axis=-1)
    assert np.allclose(out[inside], ref[inside], atol=1e-5)
    assert np.all(out[~inside] == -7.0) and (~inside).any()
    # shifting far away leaves nothing inside
    far = np.eye(4)
    far[:3, 3] = 100.0
    assert np.all(resample_to_grid(arr, aff, (3, 3, 3), far, order=1, cval=-7.0) == -7.0)


def test_resample_volume_records_a_note() -> None:
    vol = CTVolume(np.full((10, 20, 20), 40, np.int16), affine_from_spacing((2.5, 0.8, 0.8)))
    out = resample(vol, 1.0)
    assert out.shape == (25, 16, 16) and out.array.dtype == np.float32
    assert np.allclose(out.array, 40.0)
    assert np.allclose(out.spacing, (1.0, 1.0, 1.0))
    assert out.provenance.geometry_notes[-1].startswith("resampled to 1.00x1.00x1.00 mm")
    assert resample(vol, 3.0, order=0).array.dtype == np.int16


def test_rejects_bad_input() -> None:
    with pytest.raises(GeometryError):
        resample_to_grid(np.zeros((4, 4)), np.eye(4), (2, 2, 2), np.eye(4))
    with pytest.raises(GeometryError):
        resample_to_grid(np.zeros((4, 4, 4)), np.eye(4), (0, 2, 2), np.eye(4))
