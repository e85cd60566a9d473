"""Analyses on top of the cascade's outputs: pure functions of arrays + geometry, no I/O, no models.

* :mod:`~osteoscan.analysis.vertebral`: trabecular ROI and HU, phantomless calibration, calibrated
  BMD, ACR category, Pickhardt L1 flag, volume.
* :mod:`~osteoscan.analysis.intervertebral`: the vertebra's own axes, heights, Genant grade, disc
  heights, lumbar lordosis.
* :mod:`~osteoscan.analysis.composition`: areas, muscle HU, SMI and flags at one slice; mid-L3 slice.
* :mod:`~osteoscan.analysis.constants`: every clinical constant with its source.

Definitions, formulas and sign conventions: ``docs/analysis.md``.
"""

from osteoscan.analysis.composition import bmi_kg_m2, composition_at_slice, find_mid_l3_slice
from osteoscan.analysis.geometry import mask_centroid_mm
from osteoscan.analysis.intervertebral import (
    GenantAssessment,
    HeightMeasurement,
    VertebralAxes,
    disc_height,
    endplate_plane,
    genant_grade,
    height_ratio_min,
    lumbar_lordosis_deg,
    measure_heights,
    vertebral_axis,
    vertebral_heights,
)
from osteoscan.analysis.vertebral import (
    Calibration,
    HuStats,
    acr_category,
    anterior_air_roi,
    body_outline_mask,
    calibrated_bmd,
    mean_bmd_for_acr,
    phantomless_calibration,
    pickhardt_l1_flag,
    roi_hu_stats,
    trabecular_roi,
    vertebra_volume_ml,
)

__all__ = [
    "Calibration",
    "GenantAssessment",
    "HeightMeasurement",
    "HuStats",
    "VertebralAxes",
    "acr_category",
    "anterior_air_roi",
    "bmi_kg_m2",
    "body_outline_mask",
    "calibrated_bmd",
    "composition_at_slice",
    "disc_height",
    "endplate_plane",
    "find_mid_l3_slice",
    "genant_grade",
    "height_ratio_min",
    "lumbar_lordosis_deg",
    "mask_centroid_mm",
    "mean_bmd_for_acr",
    "measure_heights",
    "phantomless_calibration",
    "pickhardt_l1_flag",
    "roi_hu_stats",
    "trabecular_roi",
    "vertebra_volume_ml",
    "vertebral_axis",
    "vertebral_heights",
]
