"""Every clinical and geometric constant the analyses use, each with its source.

The values come from ``../shared/REFERENCE.md`` (which cites the original papers); they live here and
nowhere else so that a reviewer can check them in one place and a change is one edit. Names carry
their unit as a suffix. Thresholds are documented with their inequality (``<``, ``<=``) because the
papers are explicit about it and tests check the boundaries.
"""

from __future__ import annotations

from typing import Final

# --------------------------------------------------------------------------------------------------
# Bone density: ACR practice parameter for QCT (trabecular BMD, mean of two lumbar vertebrae, L1-L2)
#   > 120 mg/cm3 normal; 80..120 low bone density (osteopenia); < 80 osteoporosis.
# --------------------------------------------------------------------------------------------------
ACR_NORMAL_ABOVE_MG_CM3: Final[float] = 120.0  # normal when BMD > 120
ACR_OSTEOPOROSIS_BELOW_MG_CM3: Final[float] = 80.0  # osteoporosis when BMD < 80
#: Levels whose mean BMD the ACR category is based on (ACR: "usually L1-L2").
ACR_LEVELS: Final[tuple[str, str]] = ("L1", "L2")

# --------------------------------------------------------------------------------------------------
# L1 trabecular attenuation, Pickhardt et al., Ann Intern Med 2013 (120 kV, non-contrast):
#   <= 110 HU highly specific for osteoporosis; < 160 HU sensitive threshold for low BMD.
# --------------------------------------------------------------------------------------------------
PICKHARDT_OSTEOPOROSIS_MAX_HU: Final[float] = 110.0  # flag when HU <= 110
PICKHARDT_LOW_BMD_BELOW_HU: Final[float] = 160.0  # flag when HU < 160

# Contrast raises trabecular HU (REFERENCE.md: roughly 10-20 HU). TotalSegmentator's spine report
# raises its low-density threshold by +20 HU (arterial) and +14.75 HU (portal-venous); we raise the
# Pickhardt thresholds by the same offsets.
CONTRAST_NATIVE: Final[str] = "native"
CONTRAST_ARTERIAL: Final[str] = "arterial"
CONTRAST_PORTAL_VENOUS: Final[str] = "portal_venous"
CONTRAST_UNKNOWN: Final[str] = "unknown"
CONTRAST_THRESHOLD_OFFSET_HU: Final[dict[str, float]] = {
    CONTRAST_NATIVE: 0.0,
    CONTRAST_ARTERIAL: 20.0,
    CONTRAST_PORTAL_VENOUS: 14.75,
}
#: TotalSegmentator's native low-density threshold (for reference in docs; Pickhardt's are used).
TOTALSEG_LOW_DENSITY_HU: Final[float] = 90.25

# --------------------------------------------------------------------------------------------------
# Trabecular ROI as Comp2Comp draws it (REFERENCE.md): on each axial slice of the body an ellipse
# centred at 58 % of the antero-posterior extent, AP semi-axis 25 % of that extent, left-right
# semi-axis 32.5 % of the width, intersected with the body eroded by 2 voxels (1 voxel when slices
# are >= 3 mm), over about 5 mm in z around the centroid.
# The 58 % is counted from the posterior wall, i.e. the ellipse sits slightly anterior of the
# middle, away from the basivertebral vein that enters the body posteriorly in the midline.
# --------------------------------------------------------------------------------------------------
ROI_CENTER_FROM_POSTERIOR_FRACTION: Final[float] = 0.58
ROI_AP_SEMI_AXIS_FRACTION: Final[float] = 0.25
ROI_LR_SEMI_AXIS_FRACTION: Final[float] = 0.325
ROI_EROSION_VOXELS: Final[int] = 2
ROI_EROSION_VOXELS_THICK: Final[int] = 1
ROI_THICK_SLICE_MM: Final[float] = 3.0  # slices >= this are "thick" (erode by 1 voxel)
ROI_Z_EXTENT_MM: Final[float] = 5.0
#: Fewer ROI voxels than this make a HU mean too noisy to report (about 0.05 ml at 1 mm).
ROI_MIN_VOXELS: Final[int] = 20

# --------------------------------------------------------------------------------------------------
# Phantomless calibration as the FDA-cleared Comp2Comp variant does it (REFERENCE.md): air in front
# of the body mapped to -1000 HU, visceral fat mean mapped to -95 HU, a linear map applied to bone.
# --------------------------------------------------------------------------------------------------
CALIBRATION_AIR_HU: Final[float] = -1000.0
CALIBRATION_FAT_HU: Final[float] = -95.0
#: Voxels accepted as air / fat references (outside these they are padding, table, bowel, ...).
CALIBRATION_AIR_ACCEPT_HU: Final[tuple[float, float]] = (-1150.0, -700.0)
CALIBRATION_FAT_ACCEPT_HU: Final[tuple[float, float]] = (-250.0, 0.0)
#: A measured reference outside these ranges means a wrong mask or a broken scanner calibration;
#: the calibration is then reported invalid instead of silently applied.
CALIBRATION_AIR_PLAUSIBLE_HU: Final[tuple[float, float]] = (-1100.0, -850.0)
CALIBRATION_FAT_PLAUSIBLE_HU: Final[tuple[float, float]] = (-180.0, -30.0)
CALIBRATION_SLOPE_PLAUSIBLE: Final[tuple[float, float]] = (0.8, 1.25)
CALIBRATION_MIN_VOXELS: Final[int] = 50
#: Margin kept between the body outline and the air ROI (skin blur, clothes, blankets).
CALIBRATION_AIR_MARGIN_MM: Final[float] = 10.0
#: Other internal references from the literature (REFERENCE.md), documented for reports.
REFERENCE_BLOOD_NATIVE_HU: Final[float] = 40.0
REFERENCE_MUSCLE_HU: Final[float] = 50.0

# --------------------------------------------------------------------------------------------------
# Vertebral fractures, Genant semi-quantitative method (REFERENCE.md):
#   grade 0 < 20 % height loss; 1 (mild) 20-25 %; 2 (moderate) 25-40 %; 3 (severe) > 40 %.
# Boundaries: loss < 20 -> 0; 20 <= loss < 25 -> 1; 25 <= loss <= 40 -> 2; loss > 40 -> 3.
# --------------------------------------------------------------------------------------------------
GENANT_MILD_LOSS: Final[float] = 0.20
GENANT_MODERATE_LOSS: Final[float] = 0.25
GENANT_SEVERE_LOSS: Final[float] = 0.40
#: The levels the semi-quantitative method grades: T4 to L4 (Genant et al., J Bone Miner Res 1993).
#: L5 is wedge-shaped in health (posterior height below anterior), and C7-T3 are hidden by the
#: shoulders on lateral films; height ratios there say little about fracture. (The phantom puts its
#: fractures on T5-L4 for the same reason.) Values are ``osteoscan.labels.VertebraLevel`` names.
GENANT_GRADED_LEVELS: Final[tuple[str, ...]] = tuple(f"T{i}" for i in range(4, 13)) + ("L1", "L2", "L3", "L4")
#: TotalSegmentator measures heights at these fractions of the AP extent (posterior, middle,
#: anterior), counted from the posterior wall.
HEIGHT_POSITIONS_FROM_POSTERIOR: Final[tuple[float, float, float]] = (0.15, 0.50, 0.85)
#: TotalSegmentator flags a level when 1 - min/max of the three heights exceeds this.
TOTALSEG_HEIGHT_DIFFERENCE_FLAG: Final[float] = 0.20

# --------------------------------------------------------------------------------------------------
# Body composition at mid-L3 (REFERENCE.md).
# --------------------------------------------------------------------------------------------------
MUSCLE_HU_RANGE: Final[tuple[float, float]] = (-29.0, 150.0)  # inclusive
FAT_HU_RANGE: Final[tuple[float, float]] = (-190.0, -30.0)  # inclusive
# Sarcopenia by skeletal muscle index SMI = SMA / height^2 (cm2/m2), "below" = strictly less.
PRADO_SMI_MALE_BELOW: Final[float] = 52.4  # Prado 2008, obese cancer patients
PRADO_SMI_FEMALE_BELOW: Final[float] = 38.5
MARTIN_SMI_MALE_BMI_LT25_BELOW: Final[float] = 43.0  # Martin 2013
MARTIN_SMI_MALE_BMI_GE25_BELOW: Final[float] = 53.0
MARTIN_SMI_FEMALE_BELOW: Final[float] = 41.0
MARTIN_BMI_CUTOFF: Final[float] = 25.0  # kg/m2; "BMI < 25" vs "BMI >= 25"
# Myosteatosis (low muscle attenuation), Martin 2013, 120 kV non-contrast.
MYOSTEATOSIS_HU_BMI_LT25_BELOW: Final[float] = 41.0
MYOSTEATOSIS_HU_BMI_GE25_BELOW: Final[float] = 33.0
#: The HU cut-offs above were defined at this tube voltage.
REFERENCE_KVP: Final[float] = 120.0

# --------------------------------------------------------------------------------------------------
# Segmentation-quality gate before Genant grading (osteoscan.analysis.segmentation_qc). Not clinical
# thresholds: plausibility limits for a fine vertebra mask, set wide enough that a real fracture
# passes (a Genant grade 3 loses > 40 % of body height, the whole vertebra incl. its arch keeps
# roughly 0.6 of its volume) and a mask of the wrong structure does not.
# --------------------------------------------------------------------------------------------------
#: A vertebra more than this many times the median volume of its plausible neighbours holds more
#: than one vertebra. No lower limit: a crushed vertebra (phantom grade 3 down to ~0.35x) is small.
QC_MAX_VOLUME_RATIO: Final[float] = 2.5
#: At most this fraction of a fine mask may lie on another level's (or the sacrum's) coarse region
#: AND exceed the fraction on its own level, when that other level has no fine mask of its own:
#: beyond it the crop segmented a neighbour.
QC_MAX_FOREIGN_COARSE_FRACTION: Final[float] = 0.30
#: At most this fraction of a fine mask may overlap a neighbouring level's fine mask (the same bone
#: segmented twice: adjacent vertebrae only touch at their facet joints and end-plate rims).
QC_MAX_OVERLAP_FRACTION: Final[float] = 0.25
#: The largest connected piece must hold at least this fraction of the fine prediction (a vertebra is
#: one bone; a prediction in several large pieces is not a usable shape).
QC_MIN_LARGEST_COMPONENT_FRACTION: Final[float] = 0.70
