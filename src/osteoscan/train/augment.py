"""Augmentations for training on the phantom (numpy only: they run in DataLoader workers).

The phantom already randomises the scanner (kVp, noise, kernel, slice thickness, contrast phase) and
the anatomy; these add what a crop-level view needs: imperfect guidance masks like the coarse model
gives (``degrade_mask``), mild intensity perturbations that keep HU meaning, and flips.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def degrade_mask(
    mask: np.ndarray,
    rng: np.random.Generator,
    spacing_mm: float,
    coarse_mm: float = 3.0,
    neighbour: np.ndarray | None = None,
) -> np.ndarray:
    """Make a ground-truth vertebra mask look like a coarse-model mask resampled to the crop.

    Steps: nearest-neighbour down/up-sampling to ``coarse_mm`` (blocky 3 mm edges), random
    dilation or erosion by up to one coarse voxel, a random shift of up to one coarse voxel, with
    probability 0.2 a slab of the ``neighbour`` vertebra leaking in, and with probability 0.1 a
    missing slab (cut vertebra or under-segmentation).
    """
    m = mask.astype(bool)
    factor = coarse_mm / spacing_mm
    if factor > 1.2:
        offset = rng.uniform(0, factor, size=3)
        # sample the coarse grid at random phase, then back (nearest): 3 mm blocks
        idx = [np.clip(np.floor((np.arange(n) + o) / factor) * factor + factor / 2 - o, 0, n - 1).astype(int)
               for n, o in zip(m.shape, offset)]
        m = m[np.ix_(*idx)]
    step = max(1, int(round(factor)))
    r = rng.random()
    if r < 0.3:
        m = ndimage.binary_dilation(m, iterations=int(rng.integers(1, step + 1)))
    elif r < 0.55:
        eroded = ndimage.binary_erosion(m, iterations=int(rng.integers(1, step + 1)))
        if eroded.sum() > 0.3 * m.sum():
            m = eroded
    shift = rng.integers(-step, step + 1, size=3)
    m = np.roll(m, tuple(int(s) for s in shift), axis=(0, 1, 2))
    if neighbour is not None and neighbour.any() and rng.random() < 0.2:
        z = np.nonzero(neighbour.any(axis=(1, 2)))[0]
        # the part of the neighbour nearest to the target (its end facing the target)
        centre_z = np.nonzero(m.any(axis=(1, 2)))[0]
        if centre_z.size:
            depth = int(rng.integers(1, max(2, (z.max() - z.min() + 1) // 2)))
            slab = np.zeros_like(neighbour, dtype=bool)
            if z.mean() > centre_z.mean():
                slab[z.min(): z.min() + depth] = True
            else:
                slab[z.max() - depth + 1: z.max() + 1] = True
            m = m | (neighbour.astype(bool) & slab)
    if rng.random() < 0.1:
        z = np.nonzero(m.any(axis=(1, 2)))[0]
        if z.size > 4:
            cut = int(rng.integers(z.min() + 1, z.max()))
            if rng.random() < 0.5:
                m[cut:] = False
            else:
                m[:cut] = False
    return m


def jitter_intensity(hu: np.ndarray, rng: np.random.Generator, offset_hu: float = 15.0,
                     scale: float = 0.03, noise_hu: float = 15.0, blur_prob: float = 0.2) -> np.ndarray:
    """Small global HU offset/scale, extra Gaussian noise and an occasional blur (softer kernel)."""
    x = hu.astype(np.float32, copy=True)
    if blur_prob and rng.random() < blur_prob:
        x = ndimage.gaussian_filter(x, sigma=float(rng.uniform(0.3, 0.9)))
    x = x * np.float32(1.0 + rng.uniform(-scale, scale)) + np.float32(rng.uniform(-offset_hu, offset_hu))
    if noise_hu:
        x += rng.normal(0.0, rng.uniform(0, noise_hu), size=x.shape).astype(np.float32)
    return x


def random_flip_lr(rng: np.random.Generator, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flip every array along its last axis (patient left-right) with probability 0.5."""
    if rng.random() < 0.5:
        return tuple(np.ascontiguousarray(a[..., ::-1]) for a in arrays)
    return arrays
