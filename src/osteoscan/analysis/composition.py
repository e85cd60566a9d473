"""Body composition on one axial slice (usually mid-L3): areas, muscle attenuation, indices, flags.

The tissue map (``osteoscan.labels.Tissue``) says which compartment a pixel belongs to and the areas
are the compartments' pixel areas; the HU windows of REFERENCE.md define the muscle attenuation
(mean of muscle pixels within -29..+150 HU) and, when the map has no IMAT class, the IMAT (fat-range
pixels, -190..-30 HU, inside the muscle compartment). Classic threshold-based areas are available
with ``hu_windows=True``. Flags say what was found and, for anything not assessable, why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from osteoscan.analysis.constants import (
    CONTRAST_NATIVE,
    CONTRAST_UNKNOWN,
    FAT_HU_RANGE,
    MARTIN_BMI_CUTOFF,
    MARTIN_SMI_FEMALE_BELOW,
    MARTIN_SMI_MALE_BMI_GE25_BELOW,
    MARTIN_SMI_MALE_BMI_LT25_BELOW,
    MUSCLE_HU_RANGE,
    MYOSTEATOSIS_HU_BMI_GE25_BELOW,
    MYOSTEATOSIS_HU_BMI_LT25_BELOW,
    PRADO_SMI_FEMALE_BELOW,
    PRADO_SMI_MALE_BELOW,
    REFERENCE_KVP,
)
from osteoscan.analysis.geometry import check_mask
from osteoscan.analysis.vertebral import normalise_contrast_phase
from osteoscan.errors import GeometryError
from osteoscan.io.volume import orientation_codes
from osteoscan.labels import BODY_OFFSET, Tissue, VertebraLevel
from osteoscan.result import CompositionResult

log = logging.getLogger(__name__)

_MM2_PER_CM2 = 100.0
#: kVp differing from the reference by more than this makes HU cut-offs unreliable.
_KVP_TOLERANCE = 5.0


def normalise_sex(sex: str | None) -> str | None:
    """'M' / 'F' from DICOM-style or free-text sex; None for unknown or other."""
    if sex is None:
        return None
    s = sex.strip().upper()
    if s in ("M", "MALE", "MAN"):
        return "M"
    if s in ("F", "FEMALE", "WOMAN", "W"):
        return "F"
    return None


def bmi_kg_m2(weight_kg: float | None, height_m: float | None) -> float | None:
    """Body-mass index, or None when weight or height is unknown or not positive."""
    if weight_kg is None or height_m is None or weight_kg <= 0 or height_m <= 0:
        return None
    return weight_kg / height_m**2


def _in_range(hu: np.ndarray, rng: tuple[float, float]) -> np.ndarray:
    return (hu >= rng[0]) & (hu <= rng[1])


def composition_at_slice(
    ct_slice_hu: np.ndarray,
    tissue_map: np.ndarray,
    pixel_spacing_mm: Sequence[float],
    height_m: float | None = None,
    sex: str | None = None,
    bmi: float | None = None,
    *,
    level: str = "L3",
    slice_index: int | None = None,
    slice_z_mm: float | None = None,
    kvp: float | None = None,
    contrast_phase: str | None = None,
    imat_from_hu: bool | None = None,
    hu_windows: bool = False,
) -> CompositionResult:
    """Areas (cm2), muscle HU, VAT/SAT ratio, SMI and sarcopenia / myosteatosis flags of one slice.

    Args:
        ct_slice_hu: 2-D HU slice.
        tissue_map: 2-D ``Tissue`` labels of the same shape (model output or ground truth).
        pixel_spacing_mm: (row, column) pixel size in mm.
        height_m: patient height; SMI = SMA / height^2 (cm2/m2) only when known.
        sex: "M"/"F" (DICOM style or words); sarcopenia cut-offs need it.
        bmi: kg/m2; Martin 2013's male SMI cut-off and the myosteatosis cut-offs depend on it.
        level, slice_index, slice_z_mm: copied into the result (where the slice was taken).
        kvp, contrast_phase: the HU cut-offs of myosteatosis hold at 120 kV without contrast; other
            settings are flagged.
        imat_from_hu: True: IMAT = fat-range (-190..-30 HU) pixels inside the muscle compartment
            (muscle + IMAT labels), removed from the muscle area; False: IMAT = the IMAT label;
            None (default): True when the map has no IMAT pixel.
        hu_windows: also restrict the areas to the HU windows (muscle -29..150, fat -190..-30), as
            threshold-based (Mourtzakis-style) measurements do. Off by default: on noisy scans the
            windows drop real tissue (fat at -100 HU with 35 HU noise loses ~3 % of its pixels), and the
            segmentation already says which compartment a pixel belongs to.

    Flags (strings) report sarcopenia per Prado 2008 and Martin 2013, myosteatosis per Martin 2013,
    and the reason for each index that could not be assessed.
    """
    hu = np.asarray(ct_slice_hu)
    tissue = np.asarray(tissue_map)
    if hu.ndim != 2 or tissue.shape != hu.shape:
        raise ValueError(f"need a 2-D HU slice and a tissue map of the same shape; got {hu.shape} and {tissue.shape}")
    ps = tuple(float(p) for p in pixel_spacing_mm)
    if len(ps) != 2 or any(not (p > 0 and math.isfinite(p)) for p in ps):
        raise ValueError(f"pixel_spacing_mm must be two positive mm values (row, column); got {pixel_spacing_mm!r}")
    px_cm2 = ps[0] * ps[1] / _MM2_PER_CM2
    hu = hu.astype(np.float64)

    labelled_muscle = tissue == Tissue.MUSCLE
    labelled_imat = tissue == Tissue.IMAT
    fat_hu = _in_range(hu, FAT_HU_RANGE)
    if imat_from_hu is None:
        imat_from_hu = not labelled_imat.any()
    if imat_from_hu:  # the map has no IMAT class: IMAT = fat-range pixels in the muscle compartment
        imat = (labelled_muscle | labelled_imat) & fat_hu
        muscle = labelled_muscle & ~fat_hu
    else:
        imat = labelled_imat
        muscle = labelled_muscle
    sat, vat = tissue == Tissue.SAT, tissue == Tissue.VAT
    if hu_windows:  # classic threshold-based areas (Mourtzakis-style), for threshold literature
        muscle = muscle & _in_range(hu, MUSCLE_HU_RANGE)
        imat, sat, vat = imat & fat_hu, sat & fat_hu, vat & fat_hu
    sma = float(muscle.sum()) * px_cm2
    sat_cm2 = float(sat.sum()) * px_cm2
    vat_cm2 = float(vat.sum()) * px_cm2
    imat_cm2 = float(imat.sum()) * px_cm2
    muscle_in_window = muscle & _in_range(hu, MUSCLE_HU_RANGE)

    flags: list[str] = []
    muscle_hu = float(hu[muscle_in_window].mean()) if muscle_in_window.any() else None
    if muscle_hu is None:
        flags.append("muscle HU not assessable: no muscle pixels within -29..150 HU")
    vat_sat = vat_cm2 / sat_cm2 if sat_cm2 > 0 else None
    if vat_sat is None:
        flags.append("VAT/SAT ratio not assessable: no subcutaneous fat on the slice")

    smi = None
    if height_m is None or not (height_m > 0):
        flags.append("SMI not assessable: patient height unknown")
    elif sma <= 0:
        flags.append("SMI not assessable: no skeletal muscle on the slice")
    else:
        smi = sma / height_m**2

    sx = normalise_sex(sex)
    if bmi is not None and not (bmi > 0 and math.isfinite(bmi)):
        raise ValueError(f"BMI must be a positive number of kg/m2 or None; got {bmi!r}")
    flags.extend(_sarcopenia_flags(smi, sx, bmi, sex))
    flags.extend(_myosteatosis_flags(muscle_hu, bmi, kvp, contrast_phase))
    return CompositionResult(
        level=level,
        slice_index=slice_index,
        slice_z_mm=slice_z_mm,
        sma_cm2=sma,
        sat_cm2=sat_cm2,
        vat_cm2=vat_cm2,
        imat_cm2=imat_cm2,
        muscle_hu=muscle_hu,
        vat_sat_ratio=vat_sat,
        smi_cm2_m2=smi,
        flags=tuple(flags),
    )


def prado_smi_cutoff(sex: str) -> float:
    """Prado 2008 SMI cut-off (cm2/m2; sarcopenia when SMI is below it)."""
    return PRADO_SMI_MALE_BELOW if normalise_sex(sex) == "M" else PRADO_SMI_FEMALE_BELOW


def martin_smi_cutoff(sex: str, bmi: float | None) -> float | None:
    """Martin 2013 SMI cut-off (cm2/m2); None for men of unknown BMI (the cut-off depends on it)."""
    if normalise_sex(sex) == "F":
        return MARTIN_SMI_FEMALE_BELOW
    if bmi is None:
        return None
    return MARTIN_SMI_MALE_BMI_LT25_BELOW if bmi < MARTIN_BMI_CUTOFF else MARTIN_SMI_MALE_BMI_GE25_BELOW


def _sarcopenia_flags(smi: float | None, sex: str | None, bmi: float | None, raw_sex: str | None) -> list[str]:
    if smi is None:
        return ["sarcopenia not assessable: SMI unknown"]
    if sex is None:
        why = "patient sex unknown" if raw_sex is None else f"no cut-off for sex {raw_sex!r}"
        return [f"sarcopenia not assessable: {why}"]
    out = []
    cut = prado_smi_cutoff(sex)
    verdict = "sarcopenia" if smi < cut else "no sarcopenia"
    out.append(f"{verdict} (Prado 2008): SMI {smi:.1f} {'<' if smi < cut else '>='} {cut:g} cm2/m2 ({sex})")
    mcut = martin_smi_cutoff(sex, bmi)
    if mcut is None:
        out.append("sarcopenia (Martin 2013) not assessable: BMI unknown")
    else:
        verdict = "sarcopenia" if smi < mcut else "no sarcopenia"
        out.append(f"{verdict} (Martin 2013): SMI {smi:.1f} {'<' if smi < mcut else '>='} {mcut:g} cm2/m2 ({sex})")
    return out


def myosteatosis_cutoff(bmi: float) -> float:
    """Martin 2013 muscle-attenuation cut-off (HU; myosteatosis below it)."""
    return MYOSTEATOSIS_HU_BMI_LT25_BELOW if bmi < MARTIN_BMI_CUTOFF else MYOSTEATOSIS_HU_BMI_GE25_BELOW


def _myosteatosis_flags(
    muscle_hu: float | None, bmi: float | None, kvp: float | None, contrast_phase: str | None
) -> list[str]:
    if muscle_hu is None:
        return ["myosteatosis not assessable: muscle HU unknown"]
    if bmi is None:
        return ["myosteatosis not assessable: BMI unknown"]
    cut = myosteatosis_cutoff(bmi)
    verdict = "myosteatosis" if muscle_hu < cut else "no myosteatosis"
    out = [f"{verdict} (Martin 2013): muscle {muscle_hu:.1f} HU {'<' if muscle_hu < cut else '>='} {cut:g} HU"]
    if kvp is not None and abs(kvp - REFERENCE_KVP) > _KVP_TOLERANCE:
        out.append(f"myosteatosis cut-off defined at {REFERENCE_KVP:g} kV; this scan is {kvp:g} kV")
    phase = normalise_contrast_phase(contrast_phase)
    if phase not in (CONTRAST_NATIVE, CONTRAST_UNKNOWN):
        out.append(f"myosteatosis cut-off defined without contrast; contrast phase is {phase}")
    return out


def find_mid_l3_slice(
    labels_or_mask: np.ndarray, affine: np.ndarray | None = None, level: VertebraLevel = VertebraLevel.L3
) -> int | None:
    """Index along axis 0 of the axial slice through the middle of a vertebral body (default L3).

    ``labels_or_mask`` is either a bool mask of that vertebra (body, or whole vertebra), or an
    integer label map: the coarse level map (voxels == level), or the fine map with sub-regions
    (``BODY_OFFSET + level``; posterior elements are ignored: the middle of a vertebra is the
    middle of its body). The middle is halfway between the body's most
    inferior and most superior slices (robust to the posterior elements' different extent).
    ``affine``, when given, must be canonical-like (axis 0 along S/I), otherwise axial slices are
    not along axis 0. Returns None when the level is absent.

    Raises:
        GeometryError: when axis 0 of ``affine`` is not the superior-inferior axis.
    """
    arr = np.asarray(labels_or_mask)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3-D mask or label map; got shape {arr.shape}")
    if affine is not None:
        codes = orientation_codes(np.asarray(affine))
        if codes[0] not in ("S", "I"):
            raise GeometryError(
                f"axis 0 of the volume points {codes[0]} (orientation {''.join(codes)}); reorient with "
                "osteoscan.io.to_canonical before looking for the mid-L3 axial slice"
            )
    if arr.dtype == bool:
        sel = check_mask(arr, "labels_or_mask")
    else:
        body = arr == BODY_OFFSET + int(level)
        sel = body if body.any() else (arr == int(level))
    ks = np.flatnonzero(sel.any(axis=(1, 2)))
    if ks.size == 0:
        return None
    return math.floor((int(ks[0]) + int(ks[-1])) / 2.0 + 0.5)
