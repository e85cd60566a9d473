"""Where the coarse model looks in-plane: a training-patch-wide window centred on the body.

The coarse spine model was trained on crops of its patch size taken around the centre of the
reconstruction field (``osteoscan.train.datasets.coarse_samples``), so its instance normalisation
expects a window that holds the whole body cross-section. A 500 mm field of view at 3 mm is 167
voxels, a little wider than the 160-voxel patch: a plain sliding window then needs 2 x 2 in-plane
windows (four times the work) of which each sees a body cut in half. Centring one patch-wide window on
the body (air around it carries nothing) is both closer to training and 4x cheaper on such scans.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Voxels above this are "body" for the in-plane extent (fat is about -100 HU, air -1000 HU; the
#: patient table is included, which is harmless: it lies inside any field that holds the body).
BODY_THRESHOLD_HU = -500.0

#: A column/row counts as body when at least this fraction of its projection is body (ignores
#: isolated noise voxels and thin lines at the edge of the field).
MIN_BODY_FRACTION = 0.002


def body_extent(hu: np.ndarray, axis: int, threshold_hu: float = BODY_THRESHOLD_HU) -> tuple[int, int] | None:
    """First and last index along spatial ``axis`` of ``hu`` (D, H, W) that holds body, or None."""
    body = hu > threshold_hu
    other = tuple(a for a in range(hu.ndim) if a != axis)
    profile = body.mean(axis=other)
    idx = np.nonzero(profile >= MIN_BODY_FRACTION)[0]
    if idx.size == 0:
        return None
    return int(idx[0]), int(idx[-1])


def inplane_window(hu: np.ndarray, patch: Sequence[int], threshold_hu: float = BODY_THRESHOLD_HU) -> tuple[slice, ...]:
    """Slices of ``hu`` (D, H, W) to give the coarse model: full length along z, and along each
    in-plane axis longer than the patch a window of the patch length centred on the body (or the
    body's whole extent when it is wider than the patch, so nothing of it is cut off)."""
    slices: list[slice] = [slice(0, hu.shape[0])]
    for axis in (1, 2):
        n, p = hu.shape[axis], int(patch[axis])
        extent = body_extent(hu, axis, threshold_hu) if n > p else None
        if extent is None:
            slices.append(slice(0, n))
            continue
        lo, hi = extent
        width = max(p, hi - lo + 1)
        start = round((lo + hi + 1) / 2 - width / 2)
        start = min(max(start, 0), n - width)
        slices.append(slice(start, start + width))
    return tuple(slices)


def window_affine(affine: np.ndarray, window: tuple[slice, ...]) -> np.ndarray:
    """The index-to-LPS affine of ``array[window]`` given that of ``array``."""
    out = np.array(affine, dtype=np.float64, copy=True)
    start = np.array([w.start or 0 for w in window], dtype=np.float64)
    out[:3, 3] = out[:3, :3] @ start + out[:3, 3]
    return out


def embed(labels: np.ndarray, window: tuple[slice, ...], shape: Sequence[int]) -> np.ndarray:
    """``labels`` (a map of ``array[window]``) placed into a zero (background) map of ``shape``:
    the voxels the model did not see are air."""
    full = np.zeros(tuple(shape), dtype=labels.dtype)
    full[window] = labels
    return full
