"""Random fields (trabecular texture, bowel loops, fat infiltration), numpy/scipy only."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def white_texture(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Gaussian-filtered white noise, unit SD, float32 (fine textures such as trabecular bone)."""
    w = rng.standard_normal(shape).astype(np.float32)
    if sigma_vox > 0.05:
        w = ndimage.gaussian_filter(w, sigma_vox, mode="reflect", truncate=2.5)
    sd = float(w.std()) or 1.0
    return w / sd


def wave_field(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    scale_mm: float,
    n_waves: int = 12,
) -> np.ndarray:
    """A smooth, roughly Gaussian random field evaluated only at the given points (1-D arrays, mm).

    Sum of ``n_waves`` plane waves with random directions, wavelengths around ``2 * scale_mm`` and
    phases (central-limit approximation of band-limited noise). Cost is proportional to the number of
    points, so a field restricted to a few tissue voxels stays cheap on large grids.
    """
    out = np.zeros(x.shape, np.float32)
    for _ in range(n_waves):
        d = rng.standard_normal(3)
        d /= np.linalg.norm(d)
        k = 2.0 * np.pi / (2.0 * scale_mm * rng.uniform(0.7, 1.4))
        kx, ky, kz = (np.float32(c * k) for c in d)
        out += np.cos(kx * x + ky * y + kz * z + np.float32(rng.uniform(0, 2 * np.pi)))
    out *= np.float32(np.sqrt(2.0 / n_waves))
    return out


def mask_points(grid_coords: tuple[np.ndarray, np.ndarray, np.ndarray], mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Coordinates (x, y, z) of the True voxels of ``mask`` from broadcastable box coordinates."""
    x, y, z = grid_coords
    k, j, i = np.nonzero(mask)
    return x[0, j, i], y[0, j, i], z[k, 0, 0]
