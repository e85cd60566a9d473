"""Where the coarse model looks: the body's in-plane extent, and the windows it is run in.

A window-invariant coarse model (batch norm, ``ModelSpec.window_invariant``) gets the body's
bounding box in-plane (the air around it carries nothing) and the whole z range in one call, cut
into long overlapping slabs only beyond ``MAX_WHOLE_WINDOW_Z`` slices (memory).

A model with instance normalisation (spine_coarse 0.1.0) was trained on crops of its patch size
around the centre of the reconstruction field (``osteoscan.train.datasets.coarse_samples``) and
expects a window that holds the whole body cross-section: it gets one patch-wide in-plane window
centred on the body (a plain sliding window over a 500 mm field at 3 mm would need 2 x 2 in-plane
windows, each seeing half a body) and training-patch windows along z.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from osteoscan.models.spec import ModelSpec

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


#: Longest z run (voxels) a window-invariant coarse model gets in one call: 192 slices at 4 mm is
#: 768 mm (any chest-abdomen-pelvis scan); a whole-body scan goes in overlapping slabs of this length,
#: which bounds the activations to ~1 GB.
MAX_WHOLE_WINDOW_Z = 192

#: Overlap of the coarse windows along z (fraction of a window).
COARSE_OVERLAP = 0.25


def _round_up(n: int, divisor: int) -> int:
    return -(-int(n) // divisor) * divisor


def coarse_windows(hu: np.ndarray, spec: ModelSpec) -> tuple[tuple[slice, ...], tuple[int, ...]]:
    """(the part of ``hu`` (D, H, W) on the coarse grid to give the model, the window size to slide
    over it) for the coarse model ``spec`` (see the module docstring)."""
    if not spec.window_invariant:
        return inplane_window(hu, spec.patch_size), tuple(int(p) for p in spec.patch_size)
    window = inplane_window(hu, (0, 0, 0))
    sizes = [len(range(*w.indices(n))) for w, n in zip(window, hu.shape)]
    patch = (min(_round_up(sizes[0], spec.size_divisor), MAX_WHOLE_WINDOW_Z),
             *(_round_up(n, spec.size_divisor) for n in sizes[1:]))
    return window, patch


def coarse_logits(
    infer: Callable[[np.ndarray], np.ndarray], hu: np.ndarray, spec: ModelSpec
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The coarse model's logits (K, *window shape) on ``hu`` (HU on the coarse grid) and the window
    of ``hu`` they cover; ``infer`` maps a batch (B, 1, *patch) to logits (B, K, *patch)."""
    from osteoscan.models.preprocess import normalise_hu
    from osteoscan.runtime import sliding_window_inference

    window, patch = coarse_windows(hu, spec)
    image = normalise_hu(hu[window], spec)[None]  # (C=1, D, H, W)
    logits = sliding_window_inference(
        infer, image, patch_size=patch, overlap=COARSE_OVERLAP, size_divisor=spec.size_divisor
    )
    return logits, window


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
