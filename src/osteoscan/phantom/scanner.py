"""Scanner effects on a noise-free HU map: slice profile, reconstruction blur, correlated noise,
calibration drift and the scan-circle padding. numpy/scipy only."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from osteoscan.phantom.params import ScannerParams

#: Number of correlated-noise slices drawn per case; each output slice uses one of them with a random
#: roll/flip, so noise costs O(bank) filtering instead of O(volume).
NOISE_BANK = 12
HU_MIN, HU_MAX = -1024.0, 3071.0
#: Edge enhancement of sharp (bone) kernels, as unsharp masking: sigma (mm) and gain.
SHARP_KERNEL_UNSHARP_SIGMA_MM = 1.0
SHARP_KERNEL_UNSHARP_GAIN = 0.5


def sub_slice_offsets(thickness_mm: float, spacing_z_mm: float) -> np.ndarray:
    """z offsets (mm) at which a slice of ``thickness_mm`` is sampled to model its slice profile."""
    n = int(np.clip(round(thickness_mm / 1.25), 1, 4))
    if thickness_mm <= spacing_z_mm * 0.5:
        n = 1
    return ((np.arange(n) + 0.5) / n - 0.5) * thickness_mm


def blur_inplane(hu: np.ndarray, sigma_mm: float, pixel_mm: tuple[float, float], background: float = -1000.0) -> np.ndarray:
    """Gaussian reconstruction PSF in-plane (axes 1, 2), in place; sigma at least 0.35 pixel
    (anti-aliasing). Only the rows/columns holding something other than ``background`` are filtered
    (a constant region is unchanged by a normalised blur)."""
    sig = [max(sigma_mm, 0.35 * p) / p for p in pixel_mm]
    if max(sig) < 0.1:
        return hu
    content = hu != np.float32(background)
    rows = np.flatnonzero(content.any(axis=(0, 2)))
    cols = np.flatnonzero(content.any(axis=(0, 1)))
    if rows.size == 0:
        return hu
    pad = int(np.ceil(3 * max(sig))) + 1
    r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, hu.shape[1])
    c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, hu.shape[2])
    sub = hu[:, r0:r1, c0:c1]
    for axis, sg in ((1, sig[0]), (2, sig[1])):
        if sg >= 0.1:
            ndimage.gaussian_filter1d(sub, sg, axis=axis, output=sub, mode="nearest", truncate=2.5)
    return hu


def noise_bank(rng: np.random.Generator, shape_2d: tuple[int, int], kernel: str, pixel_mm: float) -> np.ndarray:
    """Unit-SD 2-D noise with a CT-like (band-pass) spectrum: a difference of Gaussians of white noise.

    Sharper kernels put more power at high frequency (smaller inner sigma)."""
    inner_mm = {"soft": 0.9, "standard": 0.7, "sharp": 0.35}[kernel]
    s1 = max(inner_mm / pixel_mm, 0.3)
    bank = np.empty((NOISE_BANK, *shape_2d), np.float32)
    for b in range(NOISE_BANK):
        w = rng.standard_normal(shape_2d).astype(np.float32)
        n = ndimage.gaussian_filter(w, s1) - 0.6 * ndimage.gaussian_filter(w, s1 * 3.0)
        bank[b] = n / (float(n.std()) or 1.0)
    return bank


def apply_scanner(
    hu: np.ndarray,
    sc: ScannerParams,
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    noise_scale_per_slice: np.ndarray | None = None,
    circle: tuple[np.ndarray, float] | None = None,
    padding_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Blur, noise, calibration drift, padding; returns int16 HU (in place on ``hu`` where possible)."""
    if sc.kernel == "sharp":
        # bone kernels enhance edges (over/undershoot at cortices): unsharp masking before the PSF
        smooth = blur_inplane(hu.copy(), SHARP_KERNEL_UNSHARP_SIGMA_MM, (spacing[1], spacing[2]))
        smooth -= hu
        hu -= np.float32(SHARP_KERNEL_UNSHARP_GAIN) * smooth
        del smooth
    hu = blur_inplane(hu, sc.blur_sigma_mm, (spacing[1], spacing[2]))
    if sc.noise_sd_hu > 0:
        bank = noise_bank(rng, hu.shape[1:], sc.kernel, spacing[1])
        # thinner reconstructions of a thicker nominal slice would be noisier; voxel size matters too
        vox_factor = float(np.sqrt((sc.pixel_spacing_mm * sc.pixel_spacing_mm * sc.slice_thickness_mm)
                                   / max(spacing[1] * spacing[2] * max(spacing[0], sc.slice_thickness_mm), 1e-6)))
        sd = sc.noise_sd_hu * float(np.clip(vox_factor, 0.1, 3.0))
        for k in range(hu.shape[0]):
            n = bank[rng.integers(NOISE_BANK)]
            # cheap decorrelation between slices: random flips and transposition of a bank slice
            if rng.random() < 0.5:
                n = n[::-1]
            if rng.random() < 0.5:
                n = n[:, ::-1]
            if n.shape[0] == n.shape[1] and rng.random() < 0.5:
                n = n.T
            scale = sd * (1.0 if noise_scale_per_slice is None else float(noise_scale_per_slice[k]))
            hu[k] += np.float32(scale) * n
    hu *= np.float32(sc.hu_gain)
    hu += np.float32(sc.hu_offset)
    np.rint(hu, out=hu)
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    out = hu.astype(np.int16)
    if padding_mask is not None and sc.circle_padding is not None:
        out[:, padding_mask] = np.int16(sc.circle_padding)
    return out
