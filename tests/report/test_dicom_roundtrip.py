"""Read every DICOM output back and check references, geometry and values against result.json."""

from __future__ import annotations

import copy
import logging
import shutil
import subprocess
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from osteoscan.labels import Tissue, VertebraLevel, body_label, posterior_label
from osteoscan.report import dicom_codes as K
from osteoscan.report import write_outputs
from osteoscan.result import StudyResult

PATIENT_NAME = "Doe^Jane"  # as written by the dicom_series fixture
PATIENT_ID = "PID-0042"


def _source_refs(dicom_series: list[pydicom.Dataset]) -> dict[str, str]:
    ds = dicom_series[0]
    return {
        "StudyInstanceUID": ds.StudyInstanceUID,
        "FrameOfReferenceUID": ds.FrameOfReferenceUID,
        "PatientID": ds.PatientID,
        "PatientName": str(ds.PatientName),
    }


def test_seg_references_and_segments(dicom_outputs, dicom_series) -> None:
    paths, _ = dicom_outputs
    seg = hd.seg.segread(paths["seg"])
    src = _source_refs(dicom_series)
    assert seg.StudyInstanceUID == src["StudyInstanceUID"]
    assert seg.FrameOfReferenceUID == src["FrameOfReferenceUID"]
    assert seg.PatientID == PATIENT_ID and str(seg.PatientName) == PATIENT_NAME
    assert seg.SeriesInstanceUID != dicom_series[0].SeriesInstanceUID
    ref_series = {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence}
    assert ref_series == {dicom_series[0].SeriesInstanceUID}
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels[:4] == ["T12 vertebra", "L1 vertebra", "L2 vertebra", "L3 vertebra"]
    assert len(labels) == 8  # four levels + muscle, SAT, VAT, IMAT
    l1 = seg.SegmentSequence[1]
    assert l1.SegmentedPropertyTypeCodeSequence[0].CodeValue == "66794005"  # SNOMED CT "L1 vertebra"
    assert l1.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    muscle = seg.SegmentSequence[4]
    assert muscle.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "85756007"  # Tissue
    assert muscle.SegmentedPropertyTypeCodeSequence[0].CodeValue == "127954009"  # Skeletal muscle


def test_seg_geometry_matches_source_frames(dicom_outputs, dicom_series, study) -> None:
    """Each segment's pixels, mapped back onto the source slices, equal the label map exactly."""
    paths, _ = dicom_outputs
    seg = hd.seg.segread(paths["seg"])
    uids = [ds.SOPInstanceUID for ds in dicom_series]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=list(range(1, 9)))
    assert pixels.shape == study.labels.shape + (8,)
    for n, level in enumerate((VertebraLevel.T12, VertebraLevel.L1, VertebraLevel.L2, VertebraLevel.L3)):
        expected = np.isin(study.labels, [body_label(level), posterior_label(level)])
        np.testing.assert_array_equal(pixels[..., n].astype(bool), expected, err_msg=level.name)
        k0, k1 = study.level_slices[level]
        frames = np.flatnonzero(pixels[..., n].any(axis=(1, 2)))
        assert (frames.min(), frames.max()) == (k0, k1)
    k = study.result.composition.slice_index
    for n, t in enumerate((Tissue.MUSCLE, Tissue.SAT, Tissue.VAT, Tissue.IMAT), start=4):
        assert np.flatnonzero(pixels[..., n].any(axis=(1, 2))).tolist() == [k]
        np.testing.assert_array_equal(pixels[k, ..., n].astype(bool), study.tissue == t, err_msg=t.name)
    # SR areas come from the same pixels: area of the SEG muscle segment == SMA in result.json
    px_cm2 = float(np.prod(dicom_series[0].PixelSpacing)) / 100.0
    assert pixels[..., 4].sum() * px_cm2 == pytest.approx(study.result.composition.sma_cm2, rel=1e-6)


def _measurements(group) -> dict[str, tuple[float, str]]:
    return {m.name.meaning: (float(m.value), m.unit.value) for m in group.get_measurements()}


def test_sr_values_match_result_json(dicom_outputs, dicom_series) -> None:
    paths, _ = dicom_outputs
    result = StudyResult.from_json(paths["json"])
    sr = hd.sr.srread(paths["sr"])
    src = _source_refs(dicom_series)
    assert sr.StudyInstanceUID == src["StudyInstanceUID"] and sr.PatientID == PATIENT_ID
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    seg = pydicom.dcmread(paths["seg"], stop_before_pixels=True)
    evidence = {
        inst.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for inst in series.ReferencedSOPSequence
    }
    assert seg.SOPInstanceUID in evidence
    assert {ds.SOPInstanceUID for ds in dicom_series} <= evidence

    groups = sr.content.get_volumetric_roi_measurement_groups()
    by_id = {g.tracking_identifier: g for g in groups}
    for v in result.vertebrae:
        if v.bmd_mg_cm3 is None and v.hu_trabecular is None:
            continue
        g = by_id[f"vertebra {v.level}"]
        assert g.referenced_segment.referenced_segment_numbers == [["T12", "L1", "L2", "L3"].index(v.level) + 1]
        assert g.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        m = _measurements(g)
        assert m[K.BMD.meaning] == (pytest.approx(v.bmd_mg_cm3, abs=1e-3), "mg/cm3")
        assert m[K.BMD_UNCERTAINTY.meaning][0] == pytest.approx(v.bmd_uncertainty_mg_cm3, abs=1e-3)
        assert m[K.BMD_CALIBRATED.meaning][0] == pytest.approx(v.bmd_calibrated_mg_cm3, abs=1e-3)
        assert m[K.MEAN_ATTENUATION.meaning] == (pytest.approx(v.hu_trabecular, abs=1e-3), "[hnsf'U]")
        assert m[K.HEIGHT_ANTERIOR.meaning] == (pytest.approx(v.heights_mm.anterior, abs=1e-3), "mm")
        assert m[K.HEIGHT_MIDDLE.meaning][0] == pytest.approx(v.heights_mm.middle, abs=1e-3)
        assert m[K.HEIGHT_POSTERIOR.meaning][0] == pytest.approx(v.heights_mm.posterior, abs=1e-3)
        assert m[K.GENANT_GRADE.meaning][0] == v.genant_grade
        assert m[K.HEIGHT_LOSS.meaning] == (pytest.approx(v.height_loss_percent, abs=1e-3), "%")
        assert m[K.HEIGHT_RATIO.meaning] == (pytest.approx(v.height_ratio_min, abs=1e-3), "1")
        assert m[K.VOLUME.meaning] == (pytest.approx(v.volume_ml, abs=1e-3), "mL")
        shapes = {q.name.meaning: q.value.meaning for q in g.get_qualitative_evaluations()}
        assert shapes[K.FRACTURE_SHAPE.meaning] == K.SHAPE_VALUES[v.fracture_shape.value].meaning
    t12 = by_id["vertebra T12"]  # incomplete: volume only, no invented BMD
    assert K.BMD.meaning not in _measurements(t12)

    comp = result.composition
    muscle = _measurements(by_id["L3 Skeletal muscle"])
    assert muscle[K.AREA.meaning] == (pytest.approx(comp.sma_cm2, abs=1e-3), "cm2")
    assert muscle[K.MEAN_ATTENUATION.meaning][0] == pytest.approx(comp.muscle_hu, abs=1e-3)
    assert _measurements(by_id["L3 Visceral adipose tissue"])[K.AREA.meaning][0] == pytest.approx(comp.vat_cm2, abs=1e-3)
    assert _measurements(by_id["L3 Subcutaneous adipose tissue"])[K.AREA.meaning][0] == pytest.approx(comp.sat_cm2, abs=1e-3)

    summary = [g for g in sr.content.get_image_measurement_groups() if g.tracking_identifier == "study summary"]
    assert len(summary) == 1
    assert _measurements(summary[0])[K.BMD_L1_L2.meaning][0] == pytest.approx(result.summary.bmd_l1_l2_mg_cm3, abs=1e-3)
    acr = {q.name.meaning: q.value.meaning for q in summary[0].get_qualitative_evaluations()}
    assert acr[K.ACR_CATEGORY.meaning] == K.ACR_VALUES["osteopenia"].meaning
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == K.PRIVATE_SCHEME


def test_encapsulated_pdf_and_secondary_captures(dicom_outputs, dicom_series) -> None:
    paths, _ = dicom_outputs
    src = _source_refs(dicom_series)
    doc = pydicom.dcmread(paths["pdf_dicom"])
    assert doc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert doc.StudyInstanceUID == src["StudyInstanceUID"] and str(doc.PatientName) == PATIENT_NAME
    assert doc.MIMETypeOfEncapsulatedDocument == "application/pdf"
    pdf = paths["pdf"].read_bytes()
    assert doc.EncapsulatedDocumentLength == len(pdf)
    assert bytes(doc.EncapsulatedDocument[: len(pdf)]) == pdf
    assert len(doc.SourceInstanceSequence) == len(dicom_series)
    sc_paths = [paths["sc_sagittal"], paths["sc_axial_L3"]]
    sc_series = set()
    for p in sc_paths:
        sc = pydicom.dcmread(p)
        assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
        assert sc.StudyInstanceUID == src["StudyInstanceUID"] and sc.PatientID == PATIENT_ID
        assert sc.SamplesPerPixel == 3 and sc.pixel_array.shape[2] == 3
        assert sc.pixel_array.std() > 10  # a real picture, not a blank frame
        sc_series.add(sc.SeriesInstanceUID)
    assert len(sc_series) == 1


def test_every_dicom_object_carries_the_intended_use(dicom_outputs) -> None:
    paths, _ = dicom_outputs
    for key in ("seg", "sr", "pdf_dicom", "sc_sagittal", "sc_axial_L3"):
        ds = pydicom.dcmread(paths[key], stop_before_pixels=True)
        assert "research/screening aid" in ds.SeriesDescription, key
        assert ds.SeriesNumber >= 9000 and ds.Manufacturer == "osteoscan project", key


def test_no_phi_in_logs(study, dicom_series, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        write_outputs(study.result, study.ct, study.labels, study.tissue, tmp_path, outputs=("pdf", "seg", "sr", "sc"),
                      source_datasets=dicom_series)
    assert caplog.records  # the writers do log
    for phi in (study.patient_name, "Doe", "Jane", study.patient_id, study.study_date):
        assert phi not in caplog.text


def test_no_phi_in_warnings(study, dicom_series, tmp_path: Path) -> None:
    """highdicom warns about one-component person names and quotes them; none of that may escape."""
    odd = [copy.deepcopy(ds) for ds in dicom_series]
    for ds in odd:
        ds.PatientName = "SINGLECOMPONENTNAME"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_outputs(study.result, study.ct, study.labels, study.tissue, tmp_path, outputs=("seg", "sr", "sc"),
                      source_datasets=odd)
    assert not [w for w in caught if "SINGLECOMPONENTNAME" in str(w.message)]
    assert str(hd.seg.segread(tmp_path / "seg.dcm").PatientName) == "SINGLECOMPONENTNAME"  # copied verbatim


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed")
def test_dciodvfy_reports_no_errors(dicom_outputs) -> None:
    """dicom3tools' IOD validator: no errors; warnings only for the declared private coding scheme."""
    paths, _ = dicom_outputs
    for key in ("seg", "sr", "pdf_dicom", "sc_sagittal", "sc_axial_L3"):
        out = subprocess.run(["dciodvfy", str(paths[key])], check=False, capture_output=True, text=True, timeout=60)
        lines = (out.stdout + out.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, f"{key}: {errors}"
        warnings = [line for line in lines if line.startswith("Warning") and K.PRIVATE_SCHEME not in line]
        assert not warnings, f"{key}: {warnings}"


def test_seg_geometry_does_not_depend_on_dataset_order(study, dicom_series, tmp_path: Path) -> None:
    """highdicom places frames by patient position: datasets in any order give the same segment frames."""
    paths = write_outputs(study.result, study.ct, study.labels, study.tissue, tmp_path, outputs=("seg",),
                          source_datasets=dicom_series[::-1])
    seg = hd.seg.segread(paths["seg"])
    pixels = seg.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in dicom_series], segment_numbers=[2])
    l1 = np.isin(study.labels, [body_label(VertebraLevel.L1), posterior_label(VertebraLevel.L1)])
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), l1)


def test_seg_on_a_series_stored_in_another_orientation(study, tmp_path: Path) -> None:
    """Source stored head-first with columns running right (not canonical): read with osteoscan.io as the
    pipeline does, the SEG frames must still match the stored source pixels one to one."""
    from osteoscan.io import reorient, reorient_array, write_dicom_series
    from osteoscan.io.dicom import load_dicom_series

    stored_codes = ("I", "P", "R")
    stored = reorient(study.ct, stored_codes)
    write_dicom_series(stored, tmp_path / "src", patient_name="Roe^Richard", patient_id="PID-7")
    series = load_dicom_series(tmp_path / "src", workers=1)
    np.testing.assert_array_equal(series.volume.array, study.ct.array)  # the reader made it canonical again
    paths = write_outputs(study.result, series.volume, study.labels, study.tissue, tmp_path / "out",
                          outputs=("seg",), source_datasets=series.datasets)
    seg = hd.seg.segread(paths["seg"])
    stored_uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                   for p in sorted((tmp_path / "src").iterdir())]  # file order = stored axis-0 order
    pixels = seg.get_pixels_by_source_instance(stored_uids, segment_numbers=[3])  # L2
    l2 = np.isin(study.labels, [body_label(VertebraLevel.L2), posterior_label(VertebraLevel.L2)])
    expected, _ = reorient_array(l2, study.ct.affine, stored_codes)
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), expected)
    assert str(seg.PatientName) == "Roe^Richard"
