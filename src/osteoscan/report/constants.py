"""Reference values and fixed wording the clinical outputs display, with their sources.

The analyses decide categories and flags (they are in ``StudyResult``); the report only *shows* the
reference ranges next to each number, so that a reader can judge it. Sources: ``../shared/REFERENCE.md``.
"""

from __future__ import annotations

from typing import Final

# --- Bone density ---------------------------------------------------------------------------------
#: ACR QCT categories of trabecular BMD (mean of L1-L2), mg/cm3 (REFERENCE.md "Bone density").
ACR_NORMAL_ABOVE_MG_CM3: Final[float] = 120.0
ACR_OSTEOPOROSIS_BELOW_MG_CM3: Final[float] = 80.0
#: Pickhardt et al., Ann Intern Med 2013: L1 attenuation at 120 kV, non-contrast, HU.
PICKHARDT_L1_SPECIFIC_HU: Final[float] = 110.0  # <= this: highly specific for osteoporosis
PICKHARDT_L1_SENSITIVE_HU: Final[float] = 160.0  # < this: sensitive threshold for low BMD

# --- Vertebral fractures (Genant semi-quantitative) ----------------------------------------------
#: Height-loss bounds (percent) of Genant grades 1, 2, 3 (REFERENCE.md "Vertebral fractures").
GENANT_GRADE_LOSS_PERCENT: Final[dict[int, str]] = {
    0: "< 20 %",
    1: "20-25 %",
    2: "25-40 %",
    3: "> 40 %",
}
GENANT_GRADE_NAMES: Final[dict[int, str]] = {0: "normal", 1: "mild", 2: "moderate", 3: "severe"}

# --- Body composition at L3 ------------------------------------------------------------------------
#: Skeletal muscle index cut-offs for sarcopenia, cm2/m2: Prado 2008 (REFERENCE.md "Body composition").
SMI_PRADO_MEN_BELOW_CM2_M2: Final[float] = 52.4
SMI_PRADO_WOMEN_BELOW_CM2_M2: Final[float] = 38.5
#: Myosteatosis (low muscle attenuation), Martin 2013, HU at 120 kV non-contrast.
MUSCLE_HU_MARTIN_BMI_LT25_BELOW: Final[float] = 41.0
MUSCLE_HU_MARTIN_BMI_GE25_BELOW: Final[float] = 33.0

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
