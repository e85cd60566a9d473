"""``generate_case``: one phantom CT with its label map and ground truth, on any grid.

The default grid is the scan the subject's scanner parameters describe (matrix 512, pixel spacing
0.6..1.0 mm, the preset's z coverage at the slice spacing). Training code asks for other grids:
``spacing_mm=3`` (whole body, coarse), ``crop_center_lps_mm`` + ``crop_size_mm`` (a 1 mm patch around
one vertebra), or the ``l3_slice`` preset (one axial slice). Because the anatomy is analytic, every
grid is rasterised directly, with no resampling, and costs in proportion to its voxels.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from osteoscan.io.volume import CTVolume, Provenance, affine_from_spacing
from osteoscan.phantom.params import SubjectParams, sample_subject
from osteoscan.phantom.raster import Grid
from osteoscan.phantom.render import Renderer
from osteoscan.phantom.scanner import apply_scanner, sub_slice_offsets
from osteoscan.phantom.truth import build_truth

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhantomCase:
    """A generated case: the CT (canonical S,P,L, int16 HU), the label map on the same grid
    (uint16, :mod:`osteoscan.labels` encoding), the JSON-serialisable ground truth and the subject."""

    volume: CTVolume
    labels: np.ndarray
    truth: dict[str, Any]
    subject: SubjectParams = field(repr=False)
    seconds: float = 0.0  # generation time (kept out of the truth so that truth.json is reproducible)


def _as3(v: float | tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    if np.ndim(v) == 0:
        return (float(v),) * 3  # type: ignore[arg-type]
    t = tuple(float(x) for x in v)  # type: ignore[union-attr]
    if len(t) != 3:
        raise ValueError(f"expected a number or 3 numbers (z, y, x) in mm, got {v!r}")
    return t  # type: ignore[return-value]


def default_grid(s: SubjectParams, spacing_mm=None, shape=None, crop_center_lps_mm=None, crop_size_mm=None) -> Grid:
    """The scan grid of a subject, or the requested spacing / shape / crop (see generate_case)."""
    sc = s.scanner
    from osteoscan.phantom.anatomy import build_spine, build_torso

    spine = build_spine(s)
    torso = build_torso(s, spine)
    z_lo, z_hi = s.z_range_mm
    zmid = 0.5 * (z_lo + z_hi)
    p = torso.at(np.array([zmid]))
    y_center = float(p["yc"][0] + 0.5 * (p["b_post"][0] - p["b_ant"][0])) + sc.fov_center_offset_mm[1]
    x_center = sc.fov_center_offset_mm[0]
    if spacing_mm is not None:
        sp = _as3(spacing_mm)
    else:
        sp = (sc.slice_spacing_mm, sc.pixel_spacing_mm, sc.pixel_spacing_mm)
    if crop_center_lps_mm is not None:
        if crop_size_mm is None:
            raise ValueError("crop_center_lps_mm needs crop_size_mm (z, y, x) in mm")
        size = _as3(crop_size_mm)
        c = np.asarray(crop_center_lps_mm, dtype=float)
        shp = tuple(max(1, int(round(size[a] / sp[a]))) for a in range(3))
        center_scan = (c[0], c[1], c[2] - sc.z_offset_mm)
        origin = tuple(center_scan[ax] - 0.5 * (shp[2 - ax] - 1) * sp[2 - ax] for ax in range(3))
        return Grid(shp, sp, origin, sc.roll_deg, pivot_y=y_center)
    if s.preset == "l3_slice" and shape is None:
        n_xy = int(round(sc.matrix * sc.pixel_spacing_mm / sp[1]))
        shp = (1, n_xy, n_xy)
    elif shape is not None:
        shp = tuple(int(n) for n in shape)
    else:
        nz = int(np.floor((z_hi - z_lo) / sp[0] + 1e-6)) + 1
        n_xy = int(round(sc.matrix * sc.pixel_spacing_mm / sp[1]))
        shp = (nz, n_xy, n_xy)
    origin = (
        x_center - 0.5 * (shp[2] - 1) * sp[2],
        y_center - 0.5 * (shp[1] - 1) * sp[1],
        zmid - 0.5 * (shp[0] - 1) * sp[0],
    )
    return Grid(shp, sp, origin, sc.roll_deg, pivot_y=y_center)  # type: ignore[arg-type]


def generate_case(
    seed: int,
    preset: str = "cap",
    *,
    spacing_mm: float | tuple[float, float, float] | None = None,
    shape: tuple[int, int, int] | None = None,
    crop_center_lps_mm: tuple[float, float, float] | None = None,
    crop_size_mm: float | tuple[float, float, float] | None = None,
    subject: SubjectParams | None = None,
    noise: bool = True,
) -> PhantomCase:
    """Generate one phantom case (deterministic in ``seed``, ``preset`` and the grid arguments).

    Args:
        seed: case seed.
        preset: "cap", "chest", "abdomen", "lumbar" or "l3_slice".
        spacing_mm: voxel size (z, y, x) or one number; default: the subject's scanner geometry.
        shape: grid shape (z, y, x), centred on the default field of view.
        crop_center_lps_mm: centre (LPS mm) of a crop; with ``crop_size_mm`` (z, y, x mm).
        subject: pre-drawn parameters (from :func:`sample_subject`, possibly with overrides).
        noise: add scanner noise (False gives the noise-free blurred image, useful in tests).

    Returns:
        PhantomCase with ``volume`` (canonical S,P,L int16), ``labels`` (uint16) and ``truth``.
    """
    t0 = time.perf_counter()
    s = subject if subject is not None else sample_subject(seed, preset)
    grid = default_grid(s, spacing_mm, shape, crop_center_lps_mm, crop_size_mm)
    sc = s.scanner
    # Slice profile: a grid at least as coarse as the slice thickness stands for a resampled scan (its
    # profile is one voxel thick, no z aliasing on coarse training grids). Where the grid is much finer
    # than the slice (crops at 1 mm of a 5 mm scan), render once and filter along z; otherwise render
    # sub-slices across the slice thickness and average them.
    thk = max(sc.slice_thickness_mm, grid.spacing[0])
    z_filter_sigma = 0.0
    if grid.spacing[0] <= 0.6 * thk:
        offsets = np.zeros(1)
        z_filter_sigma = float(np.sqrt(thk**2 - grid.spacing[0] ** 2) / 2.355 / grid.spacing[0])
    else:
        offsets = sub_slice_offsets(thk, grid.spacing[0])
    hu_sum = None
    labels = None
    centre_idx = len(offsets) // 2
    renderer = None
    for i, off in enumerate(offsets):
        g = Grid(grid.shape, grid.spacing, (grid.origin[0], grid.origin[1], grid.origin[2] + float(off)),
                 grid.roll_deg, grid.pivot_y)
        r = Renderer(s, g, seed_stream=i)
        canvas = r.render()
        if i == centre_idx:
            labels = canvas.labels
            renderer = r
        if hu_sum is None:
            hu_sum = canvas.hu
        else:
            hu_sum += canvas.hu
    assert hu_sum is not None and labels is not None and renderer is not None
    hu = hu_sum / np.float32(len(offsets)) if len(offsets) > 1 else hu_sum
    if z_filter_sigma > 0.1 and hu.shape[0] > 1:
        ndimage.gaussian_filter1d(hu, z_filter_sigma, axis=0, output=hu, mode="nearest", truncate=2.5)
    rng = np.random.default_rng([int(s.seed), 0x5CA7])
    _add_tissue_texture(hu, labels, grid, rng, float(rng.uniform(0.6, 1.4)))
    # noise grows with the patient's cross-section (attenuation): scale by the torso size per slice
    zs = grid.z
    prof = renderer.torso.at(zs)
    size = (prof["a"] + prof["b_ant"] * 0.5 + prof["b_post"] * 0.5 + prof["sat"] * 2) / 230.0
    noise_scale = np.clip(size, 0.6, 2.0) ** 1.5
    pad_mask = None
    if sc.circle_padding is not None:
        yy = (np.arange(grid.shape[1]) - 0.5 * (grid.shape[1] - 1)) * grid.spacing[1]
        xx = (np.arange(grid.shape[2]) - 0.5 * (grid.shape[2] - 1)) * grid.spacing[2]
        radius = min(250.0, 0.5 * sc.matrix * sc.pixel_spacing_mm)
        if crop_center_lps_mm is None:
            pad_mask = (yy[:, None] ** 2 + xx[None, :] ** 2) > radius**2
            if not pad_mask.any():
                pad_mask = None
    sc_eff = sc if noise else _noise_free(sc)
    vol = apply_scanner(hu, sc_eff, grid.spacing, rng, noise_scale, padding_mask=pad_mask)
    if pad_mask is not None:
        labels[:, pad_mask] = 0
    origin_lps = (grid.origin[0], grid.origin[1], grid.origin[2] + sc.z_offset_mm)
    affine = affine_from_spacing(grid.spacing, origin_lps)
    prov = Provenance(
        source_format="phantom",
        modality="CT",
        manufacturer=f"osteoscan phantom ({sc.manufacturer} style)",
        kvp=sc.kvp,
        convolution_kernel=sc.kernel_name,
        slice_thickness_mm=round(float(thk), 4),  # effective: at least the grid's z spacing
        contrast_agent=None if sc.contrast_phase == "none" else "IOHEXOL",
        series_description=f"phantom {s.preset} seed {s.seed}",
        patient_id=f"PHANTOM{s.seed:06d}",
        patient_name=f"Phantom^{s.seed}",
        patient_age_years=round(s.age_years),
        patient_sex=s.sex,
        patient_height_m=round(s.height_m, 2),
        patient_weight_kg=round(s.weight_kg, 1),
    )
    volume = CTVolume(vol, affine, prov)
    truth = build_truth(s, renderer.spine, grid, volume, labels)
    seconds = time.perf_counter() - t0
    log.debug("phantom seed %d (%s): %s in %.2f s", seed, s.preset, volume.summary(), seconds)
    return PhantomCase(volume=volume, labels=labels, truth=truth, subject=s, seconds=seconds)


def _add_tissue_texture(hu: np.ndarray, labels: np.ndarray, grid: Grid, rng: np.random.Generator, scale: float) -> None:
    """Add a smooth per-tissue texture (amplitude by label, :data:`render.TEXTURE_SD_HU`) in place.

    A small bank of 2-D smooth noise images (feature size ~2.5 mm) is drawn once; each slice takes
    one with random flips, so the cost is one multiply-add per voxel."""
    from osteoscan.phantom.render import texture_lut

    lut = texture_lut(scale)
    sig = [max(2.5 / grid.spacing[1], 0.5), max(2.5 / grid.spacing[2], 0.5)]
    bank = []
    for _ in range(6):
        w = rng.standard_normal(hu.shape[1:]).astype(np.float32)
        t = ndimage.gaussian_filter(w, sig)
        bank.append(t / (float(t.std()) or 1.0))
    for k in range(hu.shape[0]):
        t = bank[int(rng.integers(len(bank)))]
        if rng.random() < 0.5:
            t = t[::-1]
        if rng.random() < 0.5:
            t = t[:, ::-1]
        hu[k] += lut[labels[k]] * t


def _noise_free(sc):
    import dataclasses

    return dataclasses.replace(sc, noise_sd_hu=0.0)
