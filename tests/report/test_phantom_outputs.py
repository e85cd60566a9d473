"""The outputs on a procedural phantom (realistic anatomy, exact truth), read back against the truth.

A 3 mm 'lumbar' phantom (under a second to generate) is written as a DICOM series and read back with
osteoscan.io as the pipeline does; the StudyResult carries the phantom's true BMD, heights and grades and
the L3 composition measured by osteoscan.analysis on the true tissue map. Every DICOM object must then
agree with that truth: segments per level and tissue, tissue areas, SR values.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
from pypdf import PdfReader

from osteoscan.labels import MUSCLE_LABELS, Anatomy, Tissue, VertebraLevel
from osteoscan.report import dicom_codes as K
from osteoscan.report import write_outputs
from osteoscan.report.levels import level_map
from osteoscan.result import (
    FractureShape,
    Heights,
    QualityControl,
    ResultProvenance,
    StudyResult,
    Summary,
    VertebraResult,
)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory):
    from osteoscan.analysis.composition import composition_at_slice
    from osteoscan.io import write_dicom_series
    from osteoscan.io.dicom import load_dicom_series
    from osteoscan.phantom.generate import generate_case

    case = generate_case(5, "lumbar", spacing_mm=3.0)
    src = tmp_path_factory.mktemp("phantom_src")
    write_dicom_series(case.volume, src, patient_name="Phantom^Five", patient_id="PH-5")
    series = load_dicom_series(src, workers=1)
    assert np.array_equal(series.volume.array, case.volume.array)
    k = case.truth["l3"]["slice_index"]
    anatomy = case.labels[k]
    tissue = np.zeros(anatomy.shape, dtype=np.uint8)
    tissue[np.isin(anatomy, [int(m) for m in MUSCLE_LABELS])] = Tissue.MUSCLE
    tissue[anatomy == Anatomy.SAT] = Tissue.SAT
    tissue[anatomy == Anatomy.VAT] = Tissue.VAT
    tissue[anatomy == Anatomy.IMAT] = Tissue.IMAT
    comp = composition_at_slice(case.volume.array[k], tissue, case.volume.spacing[1:], slice_index=k)
    verts = tuple(
        VertebraResult(
            level=v["level"], complete=v["complete"],
            bmd_mg_cm3=v["bmd_mg_cm3"] if v["complete"] else None,
            heights_mm=Heights(**v["heights_mm"]) if v["complete"] else Heights(),
            genant_grade=v["fracture_grade"] if v["complete"] else None,
            fracture_shape=FractureShape(v["fracture_shape"] or "none") if v["complete"] else None,
        )
        for v in case.truth["vertebrae"]
        if v["in_view"]
    )
    result = StudyResult(
        vertebrae=verts, discs=(), summary=Summary(), composition=comp,
        qc=QualityControl(coverage=tuple(v.level for v in verts), l3_covered=True),
        provenance=ResultProvenance(osteoscan_version="0.1.0", input={"source_format": "dicom"}, geometry={}),
        timings_s={},
    )
    labels = np.where(case.labels >= 100, case.labels, 0).astype(np.uint16)
    out = tmp_path_factory.mktemp("phantom_out")
    paths = write_outputs(result, series.volume, labels, tissue, out, source_datasets=series.datasets)
    return case, series, labels, tissue, result, paths


def test_seg_matches_phantom_truth(phantom) -> None:
    case, series, labels, _tissue, _result, paths = phantom
    seg = hd.seg.segread(paths["seg"])
    lvl = level_map(labels)
    levels = [VertebraLevel(int(v)) for v in np.unique(lvl) if v]
    names = [s.SegmentLabel for s in seg.SegmentSequence]
    assert names[: len(levels)] == [f"{lv.name} vertebra" if lv is not VertebraLevel.SACRUM else "Sacrum"
                                    for lv in levels]
    uids = [ds.SOPInstanceUID for ds in series.datasets]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=list(range(1, len(names) + 1)))
    for n, lv in enumerate(levels):
        np.testing.assert_array_equal(pixels[..., n].astype(bool), lvl == lv, err_msg=lv.name)
    # tissue segments: areas equal the phantom's true L3 areas
    px_cm2 = case.truth["l3"]["pixel_area_cm2"]
    l3 = case.truth["l3"]
    k = l3["slice_index"]
    for offset, key in enumerate(("muscle_area_cm2", "sat_area_cm2", "vat_area_cm2", "imat_area_cm2")):
        area = float(pixels[k, ..., len(levels) + offset].sum()) * px_cm2
        assert area == pytest.approx(l3[key], abs=2 * px_cm2), key


def test_sr_matches_phantom_truth(phantom) -> None:
    case, _, _, _, _result, paths = phantom
    sr = hd.sr.srread(paths["sr"])
    groups = {g.tracking_identifier: g for g in sr.content.get_volumetric_roi_measurement_groups()}
    truth = {v["level"]: v for v in case.truth["vertebrae"] if v["in_view"] and v["complete"]}
    assert truth
    for level, v in truth.items():
        m = {x.name.meaning: float(x.value) for x in groups[f"vertebra {level}"].get_measurements()}
        assert m[K.BMD.meaning] == pytest.approx(v["bmd_mg_cm3"], abs=1e-3)
        assert m[K.HEIGHT_ANTERIOR.meaning] == pytest.approx(v["heights_mm"]["anterior"], abs=1e-3)
        assert m[K.GENANT_GRADE.meaning] == v["fracture_grade"]
    muscle = {x.name.meaning: float(x.value) for x in groups["L3 Skeletal muscle"].get_measurements()}
    assert muscle[K.AREA.meaning] == pytest.approx(case.truth["l3"]["muscle_area_cm2"], abs=0.2)


def test_report_on_phantom(phantom) -> None:
    _, _, _, _, result, paths = phantom
    reader = PdfReader(str(paths["pdf"]))
    assert len(reader.pages) == 2
    text = " ".join(" ".join(p.extract_text() for p in reader.pages).split())
    assert "Phantom, Five" in text and f"{result.composition.sma_cm2:.1f} cm²" in text
    for key in ("glb", "stl", "render_png", "sc_sagittal", "sc_axial_L3", "pdf_dicom", "labels_nifti"):
        assert paths[key].stat().st_size > 0
