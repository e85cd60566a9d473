"""Smooth random fields (textures, bowel loops, fat infiltration) on a box of a grid, numpy/scipy only."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    scale_mm: float,
) -> np.ndarray:
    """Zero-mean, unit-SD smooth noise with feature size ``scale_mm``, float32, of ``shape``.

    Drawn on a coarse lattice (one sample per ``scale_mm``) and interpolated linearly: cost is one
    pass over the output, independent of the feature size.
    """
    coarse_shape = tuple(max(2, int(np.ceil(n * s / scale_mm)) + 2) for n, s in zip(shape, spacing))
    out = rng.standard_normal(coarse_shape).astype(np.float32)
    # separable linear interpolation, smallest axes first so that the big passes come last
    for ax in np.argsort([n / c for n, c in zip(shape, coarse_shape)]):
        out = _lerp_axis(out, int(ax), shape[ax])
    # lattice noise has SD ~ 1 at lattice points and less in between: normalise on a subsample
    sub = out[tuple(slice(None, None, max(1, n // 16)) for n in out.shape)]
    sd = float(sub.std()) or 1.0
    out -= float(sub.mean())
    out *= np.float32(1.0 / sd)
    return out


def _lerp_axis(a: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Resample axis ``axis`` of ``a`` to ``n_out`` samples spanning the same extent (linear)."""
    n_in = a.shape[axis]
    pos = np.linspace(0.0, n_in - 1.0, n_out, dtype=np.float64)
    i0 = np.minimum(pos.astype(np.intp), n_in - 2)
    w = (pos - i0).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = n_out
    w = w.reshape(shape)
    lo = np.take(a, i0, axis=axis)
    hi = np.take(a, i0 + 1, axis=axis)
    lo += w * (hi - lo)
    return lo


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
