"""A small synthetic screened study for the report tests: CT, labels, tissue map, StudyResult, DICOM.

40 x 64 x 64 voxels (3.0 x 1.5 x 1.5 mm, canonical S,P,L). Four box vertebrae, caudal to cranial:
L3, L2, L1 and T12 (cut by the top of the volume, so incomplete), each a body box and a posterior
box, encoded with osteoscan.labels; a tissue map on the mid-L3 slice; a StudyResult whose composition
areas are computed from that map, so that SEG pixels and SR areas can be checked against each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from osteoscan.io import CTVolume, Provenance, affine_from_spacing
from osteoscan.labels import Tissue, VertebraLevel, body_label, posterior_label
from osteoscan.result import (
    AcrCategory,
    CompositionResult,
    DiscResult,
    FractureFinding,
    FractureShape,
    Heights,
    ModelInfo,
    QualityControl,
    ResultProvenance,
    StudyResult,
    Summary,
    VertebraResult,
)

SPACING = (3.0, 1.5, 1.5)
SHAPE = (40, 64, 64)
#: level -> (first slice, last slice) along axis 0 (inferior -> superior)
LEVEL_SLICES = {
    VertebraLevel.L3: (2, 9),
    VertebraLevel.L2: (12, 19),
    VertebraLevel.L1: (22, 29),
    VertebraLevel.T12: (32, 39),
}
BODY_HU = {VertebraLevel.L3: 170, VertebraLevel.L2: 130, VertebraLevel.L1: 150, VertebraLevel.T12: 160}
L3_SLICE = 6
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-0042"


@dataclass(frozen=True)
class SyntheticStudy:
    """The study plus the facts the tests check against (tests cannot import conftest by name)."""

    ct: CTVolume
    labels: np.ndarray
    tissue: np.ndarray
    result: StudyResult
    level_slices: dict[VertebraLevel, tuple[int, int]]
    patient_name: str = PATIENT_NAME
    patient_id: str = PATIENT_ID
    study_date: str = "20260315"


def _make_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    k, j, i = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    # body outline: ellipse centred in-plane; fat rim, muscle ring, visceral fat in front of the spine
    r = np.sqrt(((j - 32) / 29.0) ** 2 + ((i - 32) / 30.0) ** 2)
    ct = np.full(SHAPE, -1000.0, dtype=np.float32)
    ct[r < 1.0] = -100.0  # subcutaneous fat
    ct[r < 0.85] = 45.0  # muscle wall
    ct[r < 0.72] = 20.0  # abdominal content
    visceral = (r < 0.72) & (j < 18) & (np.abs(i - 32) < 14)
    ct[visceral] = -95.0  # visceral fat pad
    labels = np.zeros(SHAPE, dtype=np.uint16)
    for level, (k0, k1) in LEVEL_SLICES.items():
        z = (k >= k0) & (k <= k1)
        body = z & (j >= 20) & (j <= 36) & (i >= 21) & (i <= 43)
        post = z & (j >= 38) & (j <= 50) & (i >= 28) & (i <= 36)
        labels[body] = body_label(level)
        labels[post] = posterior_label(level)
        ct[body] = BODY_HU[level]
        ct[post] = 300.0
    ct += rng.normal(0, 8, SHAPE).astype(np.float32)
    tissue = np.zeros(SHAPE[1:], dtype=np.uint8)
    r2 = r[L3_SLICE]
    tissue[(r2 < 1.0) & (r2 >= 0.85)] = Tissue.SAT
    tissue[(r2 < 0.85) & (r2 >= 0.72)] = Tissue.MUSCLE
    tissue[visceral[L3_SLICE]] = Tissue.VAT
    tissue[(r2 < 0.85) & (r2 >= 0.72) & (np.arange(64)[None, :] % 9 == 0)] = Tissue.IMAT
    # psoas-like muscle beside the vertebral body (touches nothing labelled bone)
    tissue[20:34, 12:19] = Tissue.MUSCLE
    tissue[20:34, 45:52] = Tissue.MUSCLE
    ct[L3_SLICE][tissue == Tissue.MUSCLE] = 45.0
    return ct.round().astype(np.int16), labels, tissue


def make_result(tissue: np.ndarray, with_composition: bool = True) -> StudyResult:
    px_cm2 = SPACING[1] * SPACING[2] / 100.0
    area = {t: float((tissue == t).sum()) * px_cm2 for t in Tissue}
    vertebrae = (
        VertebraResult(level="T12", complete=False, volume_ml=9.1),
        VertebraResult(
            level="L1", complete=True, centroid_lps_mm=(1.5, -8.0, -31.5), volume_ml=12.5, body_volume_ml=8.2,
            hu_trabecular=150.0, hu_trabecular_sd=21.0, bmd_mg_cm3=95.2, bmd_uncertainty_mg_cm3=8.1,
            bmd_calibrated_mg_cm3=97.9, heights_mm=Heights(24.1, 23.8, 24.3), height_ratio_min=0.98, height_loss_percent=2.0,
            genant_grade=0, fracture_shape=FractureShape.NONE,
        ),
        VertebraResult(
            level="L2", complete=True, volume_ml=12.1, body_volume_ml=8.0, hu_trabecular=130.0,
            hu_trabecular_sd=19.0, bmd_mg_cm3=76.4, bmd_uncertainty_mg_cm3=7.5, bmd_calibrated_mg_cm3=79.0,
            heights_mm=Heights(16.2, 21.0, 24.0), height_ratio_min=0.675, height_loss_percent=32.5, genant_grade=2,
            fracture_shape=FractureShape.WEDGE,
        ),
        VertebraResult(
            level="L3", complete=True, volume_ml=13.0, body_volume_ml=8.6, hu_trabecular=170.0,
            hu_trabecular_sd=18.0, bmd_mg_cm3=131.6, bmd_uncertainty_mg_cm3=9.0, bmd_calibrated_mg_cm3=128.3,
            heights_mm=Heights(24.0, 23.5, 24.2), height_ratio_min=0.97, height_loss_percent=2.9, genant_grade=0,
            fracture_shape=FractureShape.NONE,
        ),
    )
    comp = None
    if with_composition:
        comp = CompositionResult(
            level="L3", slice_index=L3_SLICE, slice_z_mm=-82.0, sma_cm2=area[Tissue.MUSCLE], sat_cm2=area[Tissue.SAT],
            vat_cm2=area[Tissue.VAT], imat_cm2=area[Tissue.IMAT], muscle_hu=44.6,
            vat_sat_ratio=area[Tissue.VAT] / area[Tissue.SAT], smi_cm2_m2=None, flags=(),
        )
    not_reported = {"vertebrae.T12.bmd_mg_cm3": "T12 is cut by the top of the scan"}
    if not with_composition:
        not_reported["composition"] = "L3 not in view"
    return StudyResult(
        vertebrae=vertebrae,
        discs=(DiscResult("T12", "L1", 5.9), DiscResult("L1", "L2", 6.1), DiscResult("L2", "L3", 6.0)),
        summary=Summary(
            bmd_l1_l2_mg_cm3=85.8, acr_category=AcrCategory.OSTEOPENIA, l1_hu=150.0,
            l1_hu_flag="low BMD likely (<160 HU)",
            fractures=(FractureFinding("L2", 2, FractureShape.WEDGE, 32.5),), lordosis_deg=38.2,
        ),
        composition=comp,
        qc=QualityControl(coverage=("T12", "L1", "L2", "L3"), lumbar_covered=True, l3_covered=with_composition,
                          warnings=("T12 incomplete (cut by the field of view)",), not_reported=not_reported),
        provenance=ResultProvenance(
            osteoscan_version="0.1.0",
            input={"source_format": "dicom", "kvp": 120.0, "manufacturer": "osteoscan"},
            geometry={"shape": list(SHAPE), "spacing_mm": list(SPACING), "orientation": "SPL"},
            models=(ModelInfo("spine_coarse", "1.0", "a" * 64), ModelInfo("vertebra_fine", "1.0", "b" * 64),
                    ModelInfo("bmd_densenet", "1.0", "c" * 64), ModelInfo("tissue_unet2d", "1.0", "d" * 64)),
            backend="openvino", device="CPU", precision="bf16",
        ),
        timings_s={"load": 0.2, "total": 2.4},
    )


@pytest.fixture(scope="session")
def study() -> SyntheticStudy:
    ct_arr, labels, tissue = _make_arrays()
    affine = affine_from_spacing(SPACING, origin=(-47.25, -48.0, -100.0))
    ct = CTVolume(array=ct_arr, affine=affine, provenance=Provenance(source_format="phantom"))
    return SyntheticStudy(ct=ct, labels=labels, tissue=tissue, result=make_result(tissue), level_slices=LEVEL_SLICES)


@pytest.fixture(scope="session")
def result_without_composition(study: SyntheticStudy) -> StudyResult:
    """The same study as if L3 had not been in view."""
    return make_result(study.tissue, with_composition=False)


@pytest.fixture(scope="session")
def dicom_series(study: SyntheticStudy, tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    """Header datasets of the synthetic CT written as a DICOM series (axis-0 order)."""
    from osteoscan.io import write_dicom_series

    paths = write_dicom_series(
        study.ct, tmp_path_factory.mktemp("src"), patient_name=PATIENT_NAME, patient_id=PATIENT_ID,
        patient_sex="F", patient_age_years=67, study_date=study.study_date, kvp=120.0,
    )
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


@pytest.fixture(scope="session")
def dicom_outputs(study: SyntheticStudy, dicom_series: list[pydicom.Dataset],
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    """write_outputs with every output on the DICOM-sourced synthetic study (run once per session)."""
    from osteoscan.report import write_outputs

    out = tmp_path_factory.mktemp("out")
    paths = write_outputs(study.result, study.ct, study.labels, study.tissue, out, source_datasets=dicom_series)
    return paths, out
