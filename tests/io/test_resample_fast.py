"""The fast linear resampling path (row preselection, fused int16 gathers, cache-sized slabs) gives
bit for bit what plain separable interpolation of the whole volume gives."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from osteoscan.io.volume import affine_from_spacing

rs = importlib.import_module("osteoscan.io.resample")  # the module (osteoscan.io.resample is also a function)


def _plain_separable(array: np.ndarray, affine: np.ndarray, spacing, cval: float) -> np.ndarray:
    """Reference: whole-volume passes of ``a + (b - a) * w`` in float32, the axis shrinking most
    first, identity axes skipped, points beyond half a voxel outside set to ``cval``."""
    shape, taff = rs.grid_for_spacing(array.shape, affine, spacing)
    perm, coords = rs._source_coords(affine, shape, taff)
    src = np.transpose(array, perm)
    plans = [rs._axis_plan(coords[t], src.shape[t]) for t in range(3)]
    ratios = [len(p[0]) / src.shape[a] for a, p in enumerate(plans)]
    out = src
    for axis in np.argsort(ratios, kind="stable"):
        i0, i1, w, _ = plans[axis]
        if len(i0) == out.shape[axis] and np.array_equal(i0, np.arange(len(i0))) and not w.any():
            continue
        wb = w.reshape([-1 if a == axis else 1 for a in range(3)])
        a = np.take(out, i0, axis=axis).astype(np.float32)
        b = np.take(out, i1, axis=axis).astype(np.float32)
        b -= a
        b *= wb
        a += b
        out = a
    out = np.array(out, dtype=np.float32)
    for axis, p in enumerate(plans):
        sl = [slice(None)] * 3
        sl[axis] = ~p[3]
        out[tuple(sl)] = cval
    return out


CASES = [
    ((61, 64, 64), (1.25, 0.8, 0.8), 4.0),  # CT to the coarse grid: every axis shrinks, rows skipped
    ((40, 48, 52), (2.0, 0.9, 0.7), (3.0, 2.5, 4.0)),
    ((30, 40, 44), (5.0, 0.9, 0.9), 4.0),  # thick slices: axis 0 grows
    ((20, 24, 26), (1.0, 1.0, 1.0), (1.0, 0.5, 2.0)),  # identity, upsampling and downsampling axes
    ((33, 35, 37), (0.7, 0.7, 0.7), (2.1, 1.4, 3.5)),  # whole-number steps: weights 0
]


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
@pytest.mark.parametrize("shape,spacing,target", CASES)
@pytest.mark.parametrize("threads,slab_voxels", [(1, 65_536), (1, 300), (2, 700)])
def test_fast_linear_path_is_bit_identical_to_plain_passes(
    dtype, shape, spacing, target, threads, slab_voxels, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rs, "_SLAB_OUT_VOXELS", slab_voxels)
    monkeypatch.setattr(rs, "_MIN_VOXELS_FOR_THREADS", 1_000)
    rng = np.random.default_rng(sum(shape))
    arr = (rng.integers(-1024, 3000, size=shape) if dtype is np.int16 else rng.normal(0, 500, size=shape)).astype(dtype)
    aff = affine_from_spacing(spacing, (3.0, -20.0, 7.5))
    out, _ = rs.resample_array(arr, aff, target, order=1, cval=-1024.0, threads=threads)
    np.testing.assert_array_equal(out, _plain_separable(arr, aff, target, -1024.0))


def test_flipped_source_is_bit_identical() -> None:
    """A source whose axes run the other way (a permuted, flipped target) takes the same passes."""
    arr = np.random.default_rng(7).integers(-1000, 2000, size=(45, 50, 40)).astype(np.int16)
    aff = affine_from_spacing((1.5, 0.8, 0.9))
    flip = aff @ np.diag([1.0, -1.0, 1.0, 1.0])
    flip[:3, 3] = aff[:3, :3] @ [0, arr.shape[1] - 1, 0] + aff[:3, 3]
    out, _ = rs.resample_array(arr[:, ::-1], flip, 3.7, order=1, cval=-1024.0)
    np.testing.assert_array_equal(out, _plain_separable(arr[:, ::-1], flip, 3.7, -1024.0))
