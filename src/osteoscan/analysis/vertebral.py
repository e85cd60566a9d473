"""Vertebral analyses: trabecular ROI and HU, phantomless calibration, BMD categories, volume.

Pure functions of numpy arrays and geometry. Arrays are canonical (axis 0 -> Superior,
axis 1 -> Posterior, axis 2 -> Left) and ``spacing`` is in array order (mm); see
:mod:`osteoscan.io.volume`. Functions return ``None`` (with a reason where there is one) for things
that cannot be measured, and raise ``ValueError`` for arguments that are a programming error
(wrong shapes, unknown names): those are bugs to fix, not inputs to report.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from osteoscan.analysis.constants import (
    ACR_LEVELS,
    ACR_NORMAL_ABOVE_MG_CM3,
    ACR_OSTEOPOROSIS_BELOW_MG_CM3,
    CALIBRATION_AIR_ACCEPT_HU,
    CALIBRATION_AIR_HU,
    CALIBRATION_AIR_MARGIN_MM,
    CALIBRATION_AIR_PLAUSIBLE_HU,
    CALIBRATION_FAT_ACCEPT_HU,
    CALIBRATION_FAT_HU,
    CALIBRATION_FAT_PLAUSIBLE_HU,
    CALIBRATION_MIN_VOXELS,
    CALIBRATION_SLOPE_PLAUSIBLE,
    CONTRAST_NATIVE,
    CONTRAST_THRESHOLD_OFFSET_HU,
    CONTRAST_UNKNOWN,
    PICKHARDT_LOW_BMD_BELOW_HU,
    PICKHARDT_OSTEOPOROSIS_MAX_HU,
    ROI_AP_SEMI_AXIS_FRACTION,
    ROI_CENTER_FROM_POSTERIOR_FRACTION,
    ROI_EROSION_VOXELS,
    ROI_EROSION_VOXELS_THICK,
    ROI_LR_SEMI_AXIS_FRACTION,
    ROI_MIN_VOXELS,
    ROI_THICK_SLICE_MM,
    ROI_Z_EXTENT_MM,
)
from osteoscan.analysis.geometry import bounding_box, check_mask
from osteoscan.result import AcrCategory

log = logging.getLogger(__name__)

_AXIS_SI, _AXIS_AP, _AXIS_LR = 0, 1, 2  # canonical array axes (S, P, L)


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or any(not (s > 0 and math.isfinite(s)) for s in sp):
        raise ValueError(f"spacing must be three positive mm values in array order (z, y, x); got {spacing!r}")
    return sp  # type: ignore[return-value]


def vertebra_volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a mask in millilitres (voxel count x voxel volume)."""
    m = check_mask(mask, "mask")
    sp = _check_spacing(spacing)
    return float(np.count_nonzero(m)) * sp[0] * sp[1] * sp[2] / 1000.0


def trabecular_roi(body_mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Comp2Comp-style trabecular ROI of a vertebral body (bool mask, same shape as the input).

    On each axial slice whose centre lies within +-2.5 mm (``ROI_Z_EXTENT_MM`` / 2) of the body
    centroid (at least the nearest slice), an ellipse is drawn around the slice's own body section,
    so the ROI follows a tilted body:

    * centre: AP at 58 % of the section's AP extent counted from its posterior edge (slightly
      anterior of the middle, away from the basivertebral vein that enters posteriorly), LR at the
      section's centroid;
    * semi-axes: 25 % of the AP extent (AP) and 32.5 % of the LR width (LR);

    and intersected with the body eroded by 2 voxels (1 when slices are >= 3 mm) so that no cortex
    is sampled. An empty body gives an empty ROI.
    """
    full = check_mask(body_mask, "body_mask")
    sp = _check_spacing(spacing)
    roi_full = np.zeros(full.shape, dtype=bool)
    box = bounding_box(full)
    if box is None:
        return roi_full
    n_erode = ROI_EROSION_VOXELS_THICK if sp[_AXIS_SI] >= ROI_THICK_SLICE_MM else ROI_EROSION_VOXELS
    lo, hi = box
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    # zero margin so that erosion treats the bounding-box edge as outside, like the full array would
    body = np.pad(full[crop], n_erode + 1)
    roi = np.zeros(body.shape, dtype=bool)
    eroded = ndimage.binary_erosion(body, structure=ndimage.generate_binary_structure(3, 1), iterations=n_erode)
    kc = float(np.argwhere(body)[:, 0].mean())
    half_slices = ROI_Z_EXTENT_MM / 2.0 / sp[_AXIS_SI]
    k_sel = [k for k in range(body.shape[0]) if abs(k - kc) <= half_slices + 1e-9] or [round(kc)]
    jj, ii = np.mgrid[0 : body.shape[1], 0 : body.shape[2]]
    for k in k_sel:
        section = body[k]
        if not section.any():
            continue
        js = np.flatnonzero(section.any(axis=1))
        j_ant, j_post = js[0] - 0.5, js[-1] + 0.5  # voxel faces; axis 1 points posteriorly
        ap = j_post - j_ant
        jc = j_post - ROI_CENTER_FROM_POSTERIOR_FRACTION * ap
        ics = np.flatnonzero(section.any(axis=0))
        width = ics[-1] - ics[0] + 1.0
        ic = float(np.argwhere(section)[:, 1].mean())
        a = ROI_AP_SEMI_AXIS_FRACTION * ap
        b = ROI_LR_SEMI_AXIS_FRACTION * width
        ellipse = ((jj - jc) / a) ** 2 + ((ii - ic) / b) ** 2 <= 1.0
        roi[k] = ellipse & eroded[k]
    m = n_erode + 1
    roi_full[crop] = roi[m:-m, m:-m, m:-m]
    return roi_full


class HuStats(NamedTuple):
    """Mean and SD (HU) of a ROI and its voxel count; mean/sd None when too few voxels."""

    mean: float | None
    sd: float | None
    n: int


def roi_hu_stats(ct: np.ndarray, roi: np.ndarray, min_voxels: int = ROI_MIN_VOXELS) -> HuStats:
    """Mean, SD and voxel count of CT values (HU) inside a ROI.

    With fewer than ``min_voxels`` voxels the mean is too noisy to report: mean and sd are None.
    """
    ct = np.asarray(ct)
    r = np.asarray(roi, dtype=bool)
    if ct.shape != r.shape:
        raise ValueError(f"CT {ct.shape} and ROI {r.shape} must have the same shape")
    vals = ct[r].astype(np.float64)
    n = int(vals.size)
    if n < max(min_voxels, 1):
        return HuStats(None, None, n)
    return HuStats(float(vals.mean()), float(vals.std(ddof=1)) if n > 1 else 0.0, n)


# --------------------------------------------------------------------------------------------------
# Phantomless calibration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Linear HU correction ``calibrated = slope * measured + intercept`` from internal references.

    ``air_hu`` / ``fat_hu`` are the measured reference values (medians), ``n_air`` / ``n_fat`` their
    voxel counts. ``valid`` is False (with ``reason``) when a reference is missing or implausible;
    an invalid calibration must not be applied.
    """

    slope: float
    intercept: float
    air_hu: float | None
    fat_hu: float | None
    valid: bool
    reason: str = ""
    n_air: int = 0
    n_fat: int = 0

    def apply(self, hu: float | np.ndarray) -> float | np.ndarray:
        """Calibrated HU of measured HU."""
        return self.slope * hu + self.intercept


def body_outline_mask(ct: np.ndarray, threshold_hu: float = -500.0) -> np.ndarray:
    """The patient's body: the largest connected component above ``threshold_hu``, holes filled per slice.

    Used to place the air reference in front of the body when no air ROI is given. The table is
    usually a separate component and drops out; lungs and bowel gas are filled in.
    """
    ct = np.asarray(ct)
    if ct.ndim != 3:
        raise ValueError(f"ct must be a 3-D volume; got shape {ct.shape}")
    fg = ct > threshold_hu
    lab, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    body = lab == int(np.argmax(sizes))
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return body


def anterior_air_roi(
    ct: np.ndarray, body_mask: np.ndarray, spacing: Sequence[float], slices: np.ndarray | None = None
) -> np.ndarray:
    """Air voxels in front of the body (the reference Comp2Comp's calibration uses).

    Per axial slice (all slices with body, or only ``slices``), the rows anterior to the body's
    most anterior voxel by more than ``CALIBRATION_AIR_MARGIN_MM``, within the body's left-right
    extent, whose HU are in ``CALIBRATION_AIR_ACCEPT_HU`` (which drops blankets and most padding
    values), outside the padding of the reconstruction circle (:func:`outside_reconstruction_circle`).
    """
    ct = np.asarray(ct)
    body = check_mask(body_mask, "body_mask")
    if ct.shape != body.shape:
        raise ValueError(f"CT {ct.shape} and body mask {body.shape} must have the same shape")
    sp = _check_spacing(spacing)
    margin = math.ceil(CALIBRATION_AIR_MARGIN_MM / sp[_AXIS_AP])
    roi = np.zeros(body.shape, dtype=bool)
    ks = np.flatnonzero(body.any(axis=(1, 2))) if slices is None else np.asarray(slices, dtype=int)
    lo, hi = CALIBRATION_AIR_ACCEPT_HU
    for k in ks:
        sec = body[k]
        if not sec.any():
            continue
        j_front = int(np.flatnonzero(sec.any(axis=1))[0])
        i_cols = np.flatnonzero(sec.any(axis=0))
        j_end = j_front - margin
        if j_end <= 0:
            continue
        keep = (ct[k] >= lo) & (ct[k] <= hi) & ~outside_reconstruction_circle(ct[k])
        roi[k, :j_end, i_cols[0] : i_cols[-1] + 1] = keep[:j_end, i_cols[0] : i_cols[-1] + 1]
    return roi


def outside_reconstruction_circle(slice_hu: np.ndarray) -> np.ndarray:
    """Pixels of the padding outside the scanner's reconstruction circle (bool, same shape).

    Scanners fill the corners outside the circular field of view with one constant (-1024, -2000,
    -3024 HU...). At -1024 it passes for air but carries none of the scanner's HU offset, so it
    must not enter the air reference. Detected as the connected region of exactly the corners'
    value that touches the corners, when all four corners share that value; empty otherwise.
    """
    sl = np.asarray(slice_hu)
    corners = [sl[0, 0], sl[0, -1], sl[-1, 0], sl[-1, -1]]
    out = np.zeros(sl.shape, dtype=bool)
    if any(c != corners[0] for c in corners):
        return out
    lab, _ = ndimage.label(sl == corners[0])
    ids = {int(lab[0, 0]), int(lab[0, -1]), int(lab[-1, 0]), int(lab[-1, -1])} - {0}
    return np.isin(lab, list(ids)) if ids else out


def phantomless_calibration(
    ct: np.ndarray,
    fat_mask: np.ndarray,
    air_mask: np.ndarray | None = None,
    body_mask: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    *,
    fat_reference_hu: float = CALIBRATION_FAT_HU,
    air_reference_hu: float = CALIBRATION_AIR_HU,
) -> Calibration:
    """Linear HU calibration from internal references: air -> -1000 HU, visceral fat -> -95 HU.

    As the FDA-cleared Comp2Comp variant does (REFERENCE.md). ``fat_mask`` is visceral adipose tissue
    (VAT); the air reference is ``air_mask`` or, when absent, :func:`anterior_air_roi` of
    ``body_mask`` (default :func:`body_outline_mask` of the CT) over the slices of the fat mask.
    Medians are used (robust to partial volume at the ROI borders); only voxels within
    ``CALIBRATION_*_ACCEPT_HU`` count. The map is

        slope = (-95 - -1000) / (fat_measured - air_measured),  intercept = -1000 - slope * air_measured.

    ``fat_reference_hu`` (default -95, Comp2Comp's choice) is what visceral fat is assumed to read
    on a calibrated scanner. Fat attenuation depends on the tube voltage (about -120 HU at 80 kV,
    -100 at 120 kV, :func:`osteoscan.physics.tissue_hu`) and VAT medians are raised by partial
    volume with thicker slices, so the fixed -95 leaves a kVp-dependent bias of a few HU in the
    calibrated bone HU; pass a kVp-specific value to remove the first part.

    The result is ``valid=False`` with a reason when a reference has fewer than
    ``CALIBRATION_MIN_VOXELS`` voxels or a measured value / the slope is outside its plausible
    range (a wrong mask or a broken scanner calibration, not something to correct silently).
    """
    ct = np.asarray(ct)
    fat = check_mask(fat_mask, "fat_mask", ndim=ct.ndim)
    if fat.shape != ct.shape:
        raise ValueError(f"CT {ct.shape} and fat mask {fat.shape} must have the same shape")
    if air_mask is None:
        if spacing is None or ct.ndim != 3:
            raise ValueError("without air_mask, pass a 3-D ct and its spacing so the air ROI can be placed")
        body = body_outline_mask(ct) if body_mask is None else check_mask(body_mask, "body_mask")
        fat_slices = np.flatnonzero(fat.any(axis=(1, 2)))
        air = anterior_air_roi(ct, body, spacing, fat_slices if fat_slices.size else None)
    else:
        air = check_mask(air_mask, "air_mask", ndim=ct.ndim)
        if air.shape != ct.shape:
            raise ValueError(f"CT {ct.shape} and air mask {air.shape} must have the same shape")
    air_vals = ct[air].astype(np.float64)
    air_vals = air_vals[(air_vals >= CALIBRATION_AIR_ACCEPT_HU[0]) & (air_vals <= CALIBRATION_AIR_ACCEPT_HU[1])]
    fat_vals = ct[fat].astype(np.float64)
    fat_vals = fat_vals[(fat_vals >= CALIBRATION_FAT_ACCEPT_HU[0]) & (fat_vals <= CALIBRATION_FAT_ACCEPT_HU[1])]
    n_air, n_fat = int(air_vals.size), int(fat_vals.size)
    air_hu = float(np.median(air_vals)) if n_air else None
    fat_hu = float(np.median(fat_vals)) if n_fat else None

    def invalid(reason: str) -> Calibration:
        log.info("phantomless calibration not applied: %s", reason)
        return Calibration(1.0, 0.0, air_hu, fat_hu, False, reason, n_air, n_fat)

    if n_air < CALIBRATION_MIN_VOXELS:
        return invalid(f"too few air reference voxels ({n_air} < {CALIBRATION_MIN_VOXELS}; air in front of the body not in view?)")
    if n_fat < CALIBRATION_MIN_VOXELS or fat_hu is None or air_hu is None:
        return invalid(f"too few visceral fat voxels ({n_fat} < {CALIBRATION_MIN_VOXELS})")
    if not CALIBRATION_AIR_PLAUSIBLE_HU[0] <= air_hu <= CALIBRATION_AIR_PLAUSIBLE_HU[1]:
        return invalid(f"measured air {air_hu:.0f} HU outside the plausible {CALIBRATION_AIR_PLAUSIBLE_HU} HU")
    if not CALIBRATION_FAT_PLAUSIBLE_HU[0] <= fat_hu <= CALIBRATION_FAT_PLAUSIBLE_HU[1]:
        return invalid(f"measured visceral fat {fat_hu:.0f} HU outside the plausible {CALIBRATION_FAT_PLAUSIBLE_HU} HU")
    slope = (fat_reference_hu - air_reference_hu) / (fat_hu - air_hu)
    intercept = air_reference_hu - slope * air_hu
    if not CALIBRATION_SLOPE_PLAUSIBLE[0] <= slope <= CALIBRATION_SLOPE_PLAUSIBLE[1]:
        return invalid(f"calibration slope {slope:.3f} outside the plausible {CALIBRATION_SLOPE_PLAUSIBLE}")
    return Calibration(slope, intercept, air_hu, fat_hu, True, "", n_air, n_fat)


# --------------------------------------------------------------------------------------------------
# Categories and flags
# --------------------------------------------------------------------------------------------------


def acr_category(bmd_l1_l2: float) -> AcrCategory:
    """ACR QCT category of a mean L1-L2 trabecular BMD (mg/cm3).

    > 120 normal; 80..120 (both inclusive) osteopenia; < 80 osteoporosis.
    """
    if not math.isfinite(bmd_l1_l2):
        raise ValueError(f"BMD must be a finite number of mg/cm3; got {bmd_l1_l2!r}")
    if bmd_l1_l2 > ACR_NORMAL_ABOVE_MG_CM3:
        return AcrCategory.NORMAL
    if bmd_l1_l2 < ACR_OSTEOPOROSIS_BELOW_MG_CM3:
        return AcrCategory.OSTEOPOROSIS
    return AcrCategory.OSTEOPENIA


def mean_bmd_for_acr(bmd_by_level: Mapping[str, float | None]) -> float | None:
    """Mean BMD of L1 and L2 (the ACR levels) when both are available, else None."""
    vals = [bmd_by_level.get(level) for level in ACR_LEVELS]
    if any(v is None or not math.isfinite(v) for v in vals):
        return None
    return float(np.mean(vals))


def normalise_contrast_phase(phase: str | None) -> str:
    """Map free-text phase names to one of native / arterial / portal_venous / unknown."""
    if phase is None:
        return CONTRAST_UNKNOWN
    p = phase.strip().lower().replace("-", "_").replace(" ", "_")
    aliases = {
        "native": CONTRAST_NATIVE, "non_contrast": CONTRAST_NATIVE, "noncontrast": CONTRAST_NATIVE,
        "none": CONTRAST_NATIVE, "unenhanced": CONTRAST_NATIVE, "plain": CONTRAST_NATIVE,
        "arterial": "arterial", "portal_venous": "portal_venous", "portal": "portal_venous",
        "venous": "portal_venous", "pv": "portal_venous", "unknown": CONTRAST_UNKNOWN, "": CONTRAST_UNKNOWN,
    }
    if p not in aliases:
        raise ValueError(
            f"unknown contrast phase {phase!r}; expected native, arterial, portal_venous or unknown"
        )
    return aliases[p]


def pickhardt_thresholds(contrast_phase: str | None = None) -> tuple[float, float]:
    """(osteoporosis <= threshold, low-BMD < threshold) in HU for a contrast phase.

    Native: 110 / 160 HU (Pickhardt 2013). Arterial / portal-venous: raised by +20 / +14.75 HU
    (TotalSegmentator's offsets). Unknown phase: the native thresholds (the flag says so).
    """
    phase = normalise_contrast_phase(contrast_phase)
    off = CONTRAST_THRESHOLD_OFFSET_HU.get(phase, 0.0)
    return PICKHARDT_OSTEOPOROSIS_MAX_HU + off, PICKHARDT_LOW_BMD_BELOW_HU + off


def pickhardt_l1_flag(l1_hu: float, contrast_phase: str | None = None) -> str:
    """Pickhardt L1 trabecular-attenuation flag, contrast-aware.

    Returns "likely osteoporosis (<=110 HU)", "low BMD likely (<160 HU)" or "normal" for native
    scans; with contrast the thresholds are raised (see :func:`pickhardt_thresholds`) and named with
    the phase, e.g. "low BMD likely (<174.75 HU, portal_venous)"; an unknown phase uses the native
    thresholds and says "phase unknown".
    """
    if not math.isfinite(l1_hu):
        raise ValueError(f"L1 HU must be finite; got {l1_hu!r}")
    phase = normalise_contrast_phase(contrast_phase)
    osteo, low = pickhardt_thresholds(phase)
    suffix = "" if phase == CONTRAST_NATIVE else (", phase unknown" if phase == CONTRAST_UNKNOWN else f", {phase}")
    if l1_hu <= osteo:
        return f"likely osteoporosis (<={osteo:g} HU{suffix})"
    if l1_hu < low:
        return f"low BMD likely (<{low:g} HU{suffix})"
    return "normal" if not suffix else f"normal ({suffix[2:]})"


# --------------------------------------------------------------------------------------------------
# Calibrated BMD
# --------------------------------------------------------------------------------------------------

#: Marrow fat fraction assumed when inverting HU -> BMD away from 120 kV (physics.trabecular_hu's
#: default; at 120 kV the result does not depend on it).
DEFAULT_MARROW_FAT_FRACTION: float = 0.5


def calibrated_bmd(
    hu_trabecular: float,
    calibration: Calibration,
    kvp: float | None = None,
    contrast_phase: str | None = None,
    marrow_fat_fraction: float = DEFAULT_MARROW_FAT_FRACTION,
) -> float | None:
    """QCT-equivalent trabecular BMD (mg/cm3) from trabecular HU and a phantomless calibration.

    The measured HU is first corrected with ``calibration`` (air -> -1000, fat -> -95 HU), then the
    shared physics model (:func:`osteoscan.physics.trabecular_hu`, linear in BMD) is inverted at the
    scan's tube voltage and contrast phase. At 120 kV this is ``physics.bmd_from_hu_120kv``; at other
    voltages the result depends on the assumed marrow fat fraction. An unknown ``kvp`` is taken as
    120 kV (the usual abdominal protocol) and an unknown phase as non-contrast.

    Returns None when the calibration is invalid (its ``reason`` says why) or the HU is missing.
    """
    from osteoscan import physics  # the shared HU <-> BMD model (phantom and analyses agree on it)

    if not calibration.valid:
        return None
    if hu_trabecular is None or not math.isfinite(hu_trabecular):
        return None
    phase = normalise_contrast_phase(contrast_phase)
    physics_phase = phase if phase in ("arterial", "portal_venous") else "none"
    kv = 120.0 if kvp is None else float(kvp)
    if not kv > 0:
        raise ValueError(f"kvp must be a positive tube voltage in kV; got {kvp!r}")
    hu_cal = float(calibration.apply(float(hu_trabecular)))
    if abs(kv - 120.0) < 1e-6:
        return float(physics.bmd_from_hu_120kv(hu_cal, physics_phase))
    b = float(physics.trabecular_hu(0.0, kv, marrow_fat_fraction, physics_phase))
    m = float(physics.trabecular_hu(1.0, kv, marrow_fat_fraction, physics_phase)) - b
    return (hu_cal - b) / m
