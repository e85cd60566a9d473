"""Shared CT physics: tissue attenuation per tube voltage, the trabecular BMD <-> HU relation, contrast.

One place for the numbers that the phantom *generates* images with and that the analyses *invert*
(phantomless calibration, HU -> BMD). Values are typical adult figures at the stated tube voltage;
sources are named next to each constant (``../shared/REFERENCE.md`` for the clinical thresholds).

Bone mineral density convention
-------------------------------
``bmd_mg_cm3`` everywhere in osteoscan is the *QCT-equivalent* volumetric trabecular BMD: the value a
phantom-calibrated quantitative CT at 120 kV would report (K2HPO4/hydroxyapatite equivalent, water
background). It is the quantity the ACR QCT categories (> 120 normal, 80-120 low, < 80 mg/cm3
osteoporosis) are defined on. Because a QCT calibration maps water to 0 mg/cm3, marrow fat makes QCT
read *below* the true mineral content (the well-known "fat error", roughly 7-12 mg/cm3 per 10 % fat
fraction). We model a trabecular voxel as mineral (density ``rho``) in marrow (fat fraction ``f``)::

    HU(kVp) = k(kVp) * rho + f * HU_fat(kVp) + (1 - f) * HU_red_marrow(kVp)
    BMD_qct := HU(120 kV) / k(120 kV)

so at 120 kV the trabecular HU is exactly ``k(120) * BMD`` whatever the marrow fat, while at other
tube voltages mineral and fat scale differently and the marrow fat lowers (80 kV) or shifts the HU.
Contrast media add a phase-dependent offset on top (REFERENCE.md: +10..20 HU).
"""

from __future__ import annotations

from enum import Enum

import numpy as np

#: Tube voltages (kV) at which the tables below are given; values in between are interpolated
#: linearly, values outside are clamped.
KVP_POINTS: tuple[float, ...] = (80.0, 100.0, 120.0, 140.0)

#: HU per mg/cm3 of QCT-equivalent mineral at 120 kV. Approximate: chosen so that the ACR QCT cut-offs
#: 80 / 120 mg/cm3 map to 104 / 156 HU, close to the Pickhardt L1 thresholds 110 / 160 HU at 120 kV
#: non-contrast (REFERENCE.md), which the literature uses as the opportunistic equivalent.
MINERAL_HU_PER_MG_120KV: float = 1.30

#: Mineral (calcium) attenuation relative to 120 kV. Calcium's photo-electric share makes its CT number
#: rise at low tube voltage: dual-energy bone ratios of about 1.4-1.5 between 80 and 140 kV.
MINERAL_KVP_FACTOR: tuple[float, ...] = (1.38, 1.15, 1.00, 0.92)

#: Iodine enhancement relative to 120 kV (iodine's K-edge at 33 keV: about +60 % at 80 kV, the basis of
#: low-kV CT angiography protocols).
IODINE_KVP_FACTOR: tuple[float, ...] = (1.60, 1.25, 1.00, 0.88)


class TissueClass(str, Enum):
    """Tissue classes with an attenuation entry in :data:`TISSUE_HU`."""

    AIR = "air"
    LUNG = "lung"
    FAT = "fat"
    MUSCLE = "muscle"
    SKIN = "skin"
    BLOOD = "blood"
    MYOCARDIUM = "myocardium"
    LIVER = "liver"
    SPLEEN = "spleen"
    KIDNEY = "kidney"
    BOWEL_WALL = "bowel_wall"
    FLUID = "fluid"  # urine, bile, bowel fluid
    FECES = "feces"
    SOFT_TISSUE = "soft_tissue"  # lymph nodes, pancreas, vessels walls, glands
    DISC = "disc"  # intervertebral disc (nucleus + annulus)
    CARTILAGE = "cartilage"  # costal cartilage
    RED_MARROW = "red_marrow"
    CORTICAL_BONE = "cortical_bone"  # compact bone as a solid (before partial-volume averaging)
    TABLE = "table"  # carbon-fibre table shell
    PAD = "pad"  # foam mattress on the table


#: Mean HU (non-contrast) at KVP_POINTS, and the between-subject SD at 120 kV.
#: Sources: typical adult values of body CT textbooks and the references used in REFERENCE.md
#: (fat -95..-100 HU and blood ~ +40 HU as phantomless-calibration anchors, muscle ~ +50 HU at
#: 120 kV). Fat becomes more negative and soft tissue slightly denser at low kV (dual-energy
#: literature); water-like tissues change little with kV.
TISSUE_HU: dict[TissueClass, tuple[tuple[float, float, float, float], float]] = {
    TissueClass.AIR: ((-1000.0, -1000.0, -1000.0, -1000.0), 0.0),
    TissueClass.LUNG: ((-860.0, -860.0, -860.0, -860.0), 30.0),
    TissueClass.FAT: ((-120.0, -108.0, -100.0, -96.0), 6.0),
    TissueClass.MUSCLE: ((54.0, 50.0, 47.0, 45.0), 7.0),
    TissueClass.SKIN: ((45.0, 42.0, 40.0, 39.0), 8.0),
    TissueClass.BLOOD: ((46.0, 43.0, 41.0, 40.0), 4.0),
    TissueClass.MYOCARDIUM: ((48.0, 46.0, 44.0, 43.0), 5.0),
    TissueClass.LIVER: ((64.0, 60.0, 57.0, 55.0), 7.0),
    TissueClass.SPLEEN: ((50.0, 48.0, 46.0, 45.0), 4.0),
    TissueClass.KIDNEY: ((35.0, 33.0, 31.0, 30.0), 4.0),
    TissueClass.BOWEL_WALL: ((42.0, 40.0, 38.0, 37.0), 5.0),
    TissueClass.FLUID: ((10.0, 8.0, 7.0, 6.0), 5.0),
    TissueClass.FECES: ((-60.0, -50.0, -45.0, -42.0), 40.0),
    TissueClass.SOFT_TISSUE: ((42.0, 40.0, 38.0, 37.0), 6.0),
    TissueClass.DISC: ((95.0, 90.0, 85.0, 82.0), 12.0),  # ts_example discs: 86 +- 23 HU (README)
    TissueClass.CARTILAGE: ((150.0, 130.0, 120.0, 115.0), 40.0),
    TissueClass.RED_MARROW: ((42.0, 41.0, 40.0, 39.0), 5.0),
    TissueClass.CORTICAL_BONE: ((1650.0, 1380.0, 1200.0, 1100.0), 120.0),
    TissueClass.TABLE: ((260.0, 240.0, 230.0, 225.0), 60.0),
    TissueClass.PAD: ((-900.0, -900.0, -900.0, -900.0), 40.0),
}

#: Contrast enhancement in HU at 120 kV above the non-contrast value, per phase, for an average
#: bolus (scaled per subject and by IODINE_KVP_FACTOR for other kV). Typical body-CT values: aorta
#: 250-350 HU arterial / 150-200 HU portal-venous absolute; liver +50-60 HU portal-venous; trabecular
#: bone +20 HU arterial / +14.75 HU portal-venous (TotalSegmentator's spine-report offsets,
#: REFERENCE.md).
CONTRAST_ENHANCEMENT_HU: dict[str, dict[TissueClass | str, float]] = {
    "arterial": {
        TissueClass.BLOOD: 260.0,  # arterial blood pool; venous systems use "venous_blood"
        "venous_blood": 40.0,
        TissueClass.MYOCARDIUM: 60.0,
        TissueClass.LIVER: 15.0,
        TissueClass.SPLEEN: 70.0,
        TissueClass.KIDNEY: 130.0,
        TissueClass.BOWEL_WALL: 35.0,
        TissueClass.MUSCLE: 5.0,
        TissueClass.SOFT_TISSUE: 20.0,
        TissueClass.SKIN: 10.0,
        TissueClass.LUNG: 10.0,
        "trabecular": 20.0,
    },
    "portal_venous": {
        TissueClass.BLOOD: 140.0,
        "venous_blood": 130.0,
        TissueClass.MYOCARDIUM: 60.0,
        TissueClass.LIVER: 55.0,
        TissueClass.SPLEEN: 75.0,
        TissueClass.KIDNEY: 140.0,
        TissueClass.BOWEL_WALL: 50.0,
        TissueClass.MUSCLE: 10.0,
        TissueClass.SOFT_TISSUE: 30.0,
        TissueClass.SKIN: 15.0,
        TissueClass.LUNG: 15.0,
        "trabecular": 14.75,
    },
}

#: Contrast phases the phantom simulates (``"none"`` = non-contrast).
CONTRAST_PHASES: tuple[str, ...] = ("none", "arterial", "portal_venous")


def _interp_kvp(values: tuple[float, ...], kvp: float) -> float:
    return float(np.interp(float(kvp), KVP_POINTS, values))


def tissue_hu(tissue: TissueClass | str, kvp: float = 120.0) -> float:
    """Mean non-contrast HU of a tissue class at a tube voltage (kV)."""
    return _interp_kvp(TISSUE_HU[TissueClass(tissue)][0], kvp)


def tissue_hu_sd(tissue: TissueClass | str) -> float:
    """Between-subject SD (HU) of a tissue's mean attenuation."""
    return TISSUE_HU[TissueClass(tissue)][1]


def mineral_hu_per_mg(kvp: float = 120.0) -> float:
    """HU added per mg/cm3 of mineral at a tube voltage."""
    return MINERAL_HU_PER_MG_120KV * _interp_kvp(MINERAL_KVP_FACTOR, kvp)


def iodine_factor(kvp: float) -> float:
    """Contrast enhancement at ``kvp`` relative to 120 kV."""
    return _interp_kvp(IODINE_KVP_FACTOR, kvp)


def contrast_enhancement_hu(tissue: TissueClass | str, phase: str, kvp: float = 120.0) -> float:
    """Mean HU added by iodinated contrast to a tissue in a phase ("none", "arterial", "portal_venous")."""
    if phase == "none":
        return 0.0
    if phase not in CONTRAST_ENHANCEMENT_HU:
        raise ValueError(f"unknown contrast phase {phase!r}; expected one of {CONTRAST_PHASES}")
    key: TissueClass | str = tissue if tissue in ("venous_blood", "trabecular") else TissueClass(tissue)
    return CONTRAST_ENHANCEMENT_HU[phase].get(key, 0.0) * iodine_factor(kvp)


def marrow_hu(marrow_fat_fraction: float | np.ndarray, kvp: float = 120.0) -> float | np.ndarray:
    """HU of mineral-free marrow with a fat fraction (0..1) at a tube voltage."""
    f = np.clip(marrow_fat_fraction, 0.0, 1.0)
    return f * tissue_hu(TissueClass.FAT, kvp) + (1.0 - f) * tissue_hu(TissueClass.RED_MARROW, kvp)


def trabecular_hu(
    bmd_mg_cm3: float | np.ndarray,
    kvp: float = 120.0,
    marrow_fat_fraction: float | np.ndarray = 0.5,
    contrast_phase: str = "none",
) -> float | np.ndarray:
    """Mean trabecular-bone HU for a QCT-equivalent BMD (see the module docstring).

    At 120 kV, non-contrast, this is ``MINERAL_HU_PER_MG_120KV * bmd`` regardless of marrow fat; at
    other tube voltages the marrow fat fraction matters: at equal QCT-equivalent BMD a fattier marrow
    hides more mineral, which weighs more at 80 kV (higher HU there), while at equal *mineral* content
    fat lowers the HU at every tube voltage (see :func:`mineral_density`).

    Args:
        bmd_mg_cm3: QCT-equivalent trabecular BMD, mg/cm3.
        kvp: tube voltage, kV (80..140).
        marrow_fat_fraction: fat fraction of the marrow, 0..1 (age-related: about 0.3 at 25 years,
            0.6 at 75 years).
        contrast_phase: "none", "arterial" or "portal_venous".
    """
    k120 = mineral_hu_per_mg(120.0)
    # true mineral density implied by the QCT-equivalent value and the marrow composition
    rho = np.asarray(bmd_mg_cm3, dtype=np.float64) - marrow_hu(marrow_fat_fraction, 120.0) / k120
    hu = mineral_hu_per_mg(kvp) * rho + marrow_hu(marrow_fat_fraction, kvp)
    hu = hu + contrast_enhancement_hu("trabecular", contrast_phase, kvp)
    return float(hu) if np.ndim(hu) == 0 else hu


def mineral_density(bmd_mg_cm3: float | np.ndarray, marrow_fat_fraction: float | np.ndarray = 0.5) -> float | np.ndarray:
    """True mineral density (mg/cm3) behind a QCT-equivalent BMD: QCT reads low by the marrow's HU."""
    rho = np.asarray(bmd_mg_cm3, dtype=np.float64) - marrow_hu(marrow_fat_fraction, 120.0) / mineral_hu_per_mg(120.0)
    return float(rho) if np.ndim(rho) == 0 else rho


def bmd_from_hu_120kv(hu: float | np.ndarray, contrast_phase: str = "none") -> float | np.ndarray:
    """QCT-equivalent BMD (mg/cm3) from a trabecular HU measured at 120 kV (inverse of trabecular_hu).

    ``contrast_phase`` other than "none" first removes the mean contrast offset of that phase. The
    input HU must already be calibrated (air -1000, water 0): apply a phantomless calibration to
    scanner HU first.
    """
    h = np.asarray(hu, dtype=np.float64) - contrast_enhancement_hu("trabecular", contrast_phase, 120.0)
    bmd = h / mineral_hu_per_mg(120.0)
    return float(bmd) if np.ndim(bmd) == 0 else bmd


#: ACR QCT categories (REFERENCE.md), mg/cm3.
ACR_NORMAL_ABOVE_MG_CM3: float = 120.0
ACR_OSTEOPOROSIS_BELOW_MG_CM3: float = 80.0
