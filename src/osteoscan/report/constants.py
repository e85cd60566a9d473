"""Reference values and fixed wording the clinical outputs display, with their sources.

The analyses decide categories and flags (they are in ``StudyResult``); the report only *shows* the
reference ranges next to each number, so that a reader can judge it. The thresholds are re-exported
from :mod:`osteoscan.analysis.constants` (sources there and in ``../shared/REFERENCE.md``), so the
report can never disagree with the analysis it displays.
"""

from __future__ import annotations

from typing import Final

# --- Clinical thresholds: one source, osteoscan.analysis.constants (with their references) --------
from osteoscan.analysis import constants as _A

#: ACR QCT categories of trabecular BMD (mean of L1-L2), mg/cm3.
ACR_NORMAL_ABOVE_MG_CM3: Final[float] = _A.ACR_NORMAL_ABOVE_MG_CM3
ACR_OSTEOPOROSIS_BELOW_MG_CM3: Final[float] = _A.ACR_OSTEOPOROSIS_BELOW_MG_CM3
#: Pickhardt et al., Ann Intern Med 2013: L1 attenuation at 120 kV, non-contrast, HU.
PICKHARDT_L1_SPECIFIC_HU: Final[float] = _A.PICKHARDT_OSTEOPOROSIS_MAX_HU  # <= this: osteoporosis likely
PICKHARDT_L1_SENSITIVE_HU: Final[float] = _A.PICKHARDT_LOW_BMD_BELOW_HU  # < this: low BMD likely
#: Genant semi-quantitative grades (height loss bounds follow analysis.constants.GENANT_*).
GENANT_GRADE_NAMES: Final[dict[int, str]] = {0: "normal", 1: "mild", 2: "moderate", 3: "severe"}
#: Sarcopenia by SMI (Prado 2008), cm2/m2, and myosteatosis by muscle HU (Martin 2013).
SMI_PRADO_MEN_BELOW_CM2_M2: Final[float] = _A.PRADO_SMI_MALE_BELOW
SMI_PRADO_WOMEN_BELOW_CM2_M2: Final[float] = _A.PRADO_SMI_FEMALE_BELOW
MUSCLE_HU_MARTIN_BMI_LT25_BELOW: Final[float] = _A.MYOSTEATOSIS_HU_BMI_LT25_BELOW
MUSCLE_HU_MARTIN_BMI_GE25_BELOW: Final[float] = _A.MYOSTEATOSIS_HU_BMI_GE25_BELOW

# --- Display ---------------------------------------------------------------------------------------
#: Colours of the ACR categories (also used for BMD-coloured vertebrae and the chart bands).
COLOR_NORMAL: Final[str] = "#2e9d4f"
COLOR_OSTEOPENIA: Final[str] = "#e8a317"
COLOR_OSTEOPOROSIS: Final[str] = "#d0312d"
COLOR_NOT_MEASURED: Final[str] = "#9a9a9a"
#: Tissue overlay colours (muscle, SAT, VAT, IMAT), the usual body-composition palette.
TISSUE_COLORS: Final[dict[str, str]] = {
    "MUSCLE": "#e03c31",
    "SAT": "#2bb5d8",
    "VAT": "#f2c230",
    "IMAT": "#3fbf3f",
}
TISSUE_NAMES: Final[dict[str, str]] = {
    "MUSCLE": "Skeletal muscle",
    "SAT": "Subcutaneous fat (SAT)",
    "VAT": "Visceral fat (VAT)",
    "IMAT": "Intermuscular fat (IMAT)",
}
#: CT display windows (level, width) in HU.
WINDOW_BONE: Final[tuple[float, float]] = (300.0, 1500.0)
WINDOW_SOFT_TISSUE: Final[tuple[float, float]] = (40.0, 400.0)

PRODUCT_NAME: Final[str] = "osteoscan"
MANUFACTURER: Final[str] = "osteoscan project"

#: Shown on every report and written into every DICOM object's description.
INTENDED_USE: Final[str] = (
    "Intended use: research and opportunistic screening aid. Automated measurements on a CT acquired "
    "for another purpose; not a diagnosis and not a substitute for DXA or QCT with a calibration "
    "phantom. Results must be reviewed by a qualified physician before any clinical decision."
)
INTENDED_USE_SHORT: Final[str] = "Research / screening aid - not for diagnosis"
#: Fits DICOM LO (64 characters), for descriptions and titles of the DICOM objects.
INTENDED_USE_LO: Final[str] = "osteoscan: research/screening aid, not for diagnosis"
assert len(INTENDED_USE_LO) <= 64
