"""report.pdf and report.html: pages, key numbers with units, identity, intended use, inline images."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
from pypdf import PdfReader

from osteoscan.errors import GeometryError, InputError
from osteoscan.report import write_outputs
from osteoscan.report.outputs import NOT_DICOM


def _pdf_text(path: Path) -> tuple[int, str]:
    reader = PdfReader(str(path))
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)


def test_pdf_pages_and_key_numbers(dicom_outputs, study) -> None:
    paths, _ = dicom_outputs
    n_pages, text = _pdf_text(paths["pdf"])
    assert n_pages == 2
    flat = " ".join(text.split())
    r = study.result
    assert "osteopenia" in flat and f"{r.summary.bmd_l1_l2_mg_cm3:.1f} mg/cm³" in flat
    assert "150 HU" in flat  # L1 attenuation
    assert "L2 grade 2 (moderate, wedge, 32 % height loss)" in flat
    for v in r.vertebrae:
        if v.bmd_mg_cm3 is not None:
            assert f"{v.bmd_mg_cm3:.1f} ± {v.bmd_uncertainty_mg_cm3:.1f}" in flat
    assert f"{r.composition.sma_cm2:.1f} cm²" in flat
    assert f"{r.composition.vat_cm2:.1f} cm²" in flat
    assert "Doe, Jane" in flat and study.patient_id in flat and "2026-03-15" in flat
    assert "not a diagnosis" in flat
    assert "backend openvino, device CPU, precision bf16" in flat
    assert "T12 is cut by the top of the scan" in flat  # QC reason shown, not a blank


def test_html_is_self_contained(dicom_outputs, study) -> None:
    paths, _ = dicom_outputs
    html = paths["html"].read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 4  # sagittal, 3-D, L3 axial, chart
    srcs = re.findall(r'src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in html and "http://" not in html and "https://" not in html
    assert "Doe, Jane" in html and "not a diagnosis" in html
    assert f"{study.result.summary.bmd_l1_l2_mg_cm3:.1f} mg/cm³" in html


def test_nifti_input_writes_what_makes_sense(study, tmp_path: Path) -> None:
    """No source series: report, maps and meshes; DICOM objects skipped with the reason; anonymous header."""
    paths = write_outputs(study.result, study.ct, study.labels, study.tissue, tmp_path)
    for key in ("json", "html", "pdf", "labels_nifti", "tissue_nifti", "glb", "stl", "render_png"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    assert not list(tmp_path.glob("*.dcm")) and not (tmp_path / "sc").exists()
    assert paths.skipped == {name: NOT_DICOM for name in ("pdf_dicom", "seg", "sc", "sr")}
    _, text = _pdf_text(paths["pdf"])
    assert "anonymous" in text and "Doe" not in text


def test_nifti_maps_round_trip(study, tmp_path: Path) -> None:
    from osteoscan.io.nifti import read_nifti_array

    paths = write_outputs(study.result, study.ct, study.labels, study.tissue, tmp_path, outputs=("nifti",))
    assert set(paths) == {"labels_nifti", "tissue_nifti"}
    labels, affine = read_nifti_array(paths["labels_nifti"])
    np.testing.assert_array_equal(labels, study.labels)
    np.testing.assert_allclose(affine, study.ct.affine, atol=1e-4)
    tissue, taff = read_nifti_array(paths["tissue_nifti"])
    k = study.result.composition.slice_index
    np.testing.assert_array_equal(tissue[0], study.tissue)
    np.testing.assert_allclose(taff[:3, 3], study.ct.index_to_lps(np.array([k, 0, 0])), atol=1e-4)


def test_no_composition(study, result_without_composition, dicom_series, tmp_path: Path) -> None:
    paths = write_outputs(result_without_composition, study.ct, study.labels, None, tmp_path,
                          outputs=("pdf", "seg", "sc"), source_datasets=dicom_series)
    assert "tissue_nifti" in paths.skipped and "sc_axial_L3" not in paths and "sc_sagittal" in paths
    _, text = _pdf_text(paths["pdf"])
    assert "not reported: L3 not in view" in " ".join(text.split())


def test_bad_inputs_are_rejected(study, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown output"):
        write_outputs(study.result, study.ct, study.labels, None, tmp_path, outputs=("pdf", "docx"))
    with pytest.raises(GeometryError, match="label map shape"):
        write_outputs(study.result, study.ct, study.labels[1:], None, tmp_path)
    with pytest.raises(GeometryError, match="tissue map shape"):
        write_outputs(study.result, study.ct, study.labels, study.tissue[1:], tmp_path)
    import dataclasses

    bad = dataclasses.replace(study.result, composition=dataclasses.replace(study.result.composition, slice_index=40))
    with pytest.raises(GeometryError, match="slice_index 40 is outside"):
        write_outputs(bad, study.ct, study.labels, study.tissue, tmp_path)


def test_mixed_source_series_skips_dicom(study, dicom_series, tmp_path: Path) -> None:
    """Datasets from two series cannot be one reference: DICOM outputs skipped, with the reason."""
    other = [copy.deepcopy(ds) for ds in dicom_series[:3]]
    for ds in other:
        ds.SeriesInstanceUID = "1.2.3.4"
    paths = write_outputs(study.result, study.ct, study.labels, study.tissue, tmp_path,
                          outputs=("html", "seg", "sr"), source_datasets=other + list(dicom_series[3:]))
    assert "html" in paths and "seg" not in paths and "sr" not in paths
    assert "2 different SeriesInstanceUID" in paths.skipped["seg"] and "sr" in paths.skipped


def test_imat_from_hu_is_made_explicit(study, tmp_path: Path, caplog) -> None:
    """A tissue model without an IMAT class: the written map gets the analysis' IMAT (fat-range HU inside
    muscle), so tissue_L3.nii.gz areas equal result.json's SMA and IMAT."""
    import dataclasses

    from osteoscan.analysis.composition import composition_at_slice
    from osteoscan.io.nifti import read_nifti_array
    from osteoscan.labels import Tissue

    k = study.result.composition.slice_index
    no_imat = np.where(study.tissue == Tissue.IMAT, Tissue.MUSCLE, study.tissue).astype(np.uint8)
    ct = study.ct.array.copy()
    ct[k][(no_imat == Tissue.MUSCLE) & (np.arange(64)[None, :] % 7 == 0)] = -80  # fatty streaks in muscle
    vol = study.ct.with_array(ct)
    comp = composition_at_slice(ct[k], no_imat, vol.spacing[1:], slice_index=k)
    assert comp.imat_cm2 > 0
    result = dataclasses.replace(study.result, composition=comp)
    paths = write_outputs(result, vol, study.labels, no_imat, tmp_path, outputs=("nifti",))
    written, _ = read_nifti_array(paths["tissue_nifti"])
    px_cm2 = vol.spacing[1] * vol.spacing[2] / 100.0
    assert float((written[0] == Tissue.IMAT).sum()) * px_cm2 == pytest.approx(comp.imat_cm2)
    assert float((written[0] == Tissue.MUSCLE).sum()) * px_cm2 == pytest.approx(comp.sma_cm2)
    assert "differs from the result" not in caplog.text


def test_nothing_segmented(study, result_without_composition, dicom_series, tmp_path: Path) -> None:
    """An empty label map (no spine found) still gives a report and an SR; SEG and meshes say why not."""
    empty = np.zeros_like(study.labels)
    paths = write_outputs(result_without_composition, study.ct, empty, None, tmp_path, source_datasets=dicom_series)
    assert {"pdf", "html", "sr", "pdf_dicom", "sc_sagittal"} <= set(paths)
    assert "nothing segmented" in paths.skipped["seg"] and "no vertebra" in paths.skipped["mesh"]
