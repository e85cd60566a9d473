"""DICOM outputs on real scanner headers: ../shared/realct/ts_example/dicom (Siemens, JPEG 2000, 20 slices).

The label map is a crude bone threshold (the writers are under test, not a segmentation); what matters
is that highdicom accepts real headers, the SEG frames reference the real source instances one to one,
and an anonymised source gives an "anonymous" report, never an invented name.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pypdf import PdfReader
from scipy import ndimage

from osteoscan.labels import VertebraLevel, body_label
from osteoscan.report import write_outputs
from osteoscan.result import QualityControl, ResultProvenance, StudyResult, Summary, VertebraResult

pytestmark = pytest.mark.realct


def _bone_label(ct_array: np.ndarray) -> np.ndarray:
    bone = ct_array > 200
    lab, n = ndimage.label(bone)
    assert n > 0
    sizes = ndimage.sum(bone, lab, index=np.arange(1, n + 1))
    return np.where(lab == int(np.argmax(sizes)) + 1, body_label(VertebraLevel.T6), 0).astype(np.uint16)


def _result() -> StudyResult:
    return StudyResult(
        vertebrae=(VertebraResult(level="T6", complete=False, volume_ml=12.0),),
        discs=(),
        summary=Summary(),
        composition=None,
        qc=QualityControl(coverage=("T6",), not_reported={"composition": "L3 not in view"}),
        provenance=ResultProvenance(osteoscan_version="0.1.0", input={}, geometry={}),
        timings_s={},
    )


def test_dicom_outputs_on_real_headers(realct: Path, tmp_path: Path) -> None:
    """chest_jpegll (JPEG Lossless, pseudonymised MIDRC headers): 24 slices of it as the source series."""
    from osteoscan.io.dicom import load_dicom_series

    files = sorted((realct / "chest_jpegll").glob("*.dcm"))[100:124]
    series = load_dicom_series(files, workers=1)
    ct = series.volume
    labels = _bone_label(ct.array)
    paths = write_outputs(_result(), ct, labels, None, tmp_path, outputs=("pdf", "seg", "sr", "sc"),
                          source_datasets=series.datasets)
    assert set(paths.skipped) == {"tissue_nifti"}  # no composition on a chest slab
    seg = hd.seg.segread(paths["seg"])
    src = series.datasets[0]
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert seg.PatientID == src.PatientID and seg.PatientName == src.PatientName
    uids = [ds.SOPInstanceUID for ds in series.datasets]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1])
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), labels > 0)
    text = " ".join(page.extract_text() for page in PdfReader(str(paths["pdf"])).pages)
    assert str(src.PatientID) in text
    if shutil.which("dciodvfy"):
        for key in ("seg", "sr", "pdf_dicom", "sc_sagittal"):
            out = subprocess.run(["dciodvfy", str(paths[key])], check=False, capture_output=True, text=True, timeout=60)
            errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
            assert not errors, f"{key}: {errors}"


def test_anonymised_source_without_uids(realct: Path, tmp_path: Path) -> None:
    """ts_example/dicom was stripped of Study/Series UIDs: nothing can reference it, so no DICOM outputs
    (with the reason), the report still comes, and the empty patient name reads "anonymous"."""
    from osteoscan.io.dicom import load_dicom_series

    series = load_dicom_series(realct / "ts_example" / "dicom", workers=1)
    labels = _bone_label(series.volume.array)
    paths = write_outputs(_result(), series.volume, labels, None, tmp_path, outputs=("pdf", "seg", "sr"),
                          source_datasets=series.datasets)
    assert "pdf" in paths and "seg" not in paths
    assert "lack StudyInstanceUID" in paths.skipped["seg"]
    assert set(paths.skipped) == {"seg", "sr", "pdf_dicom", "tissue_nifti"}
    text = " ".join(page.extract_text() for page in PdfReader(str(paths["pdf"])).pages)
    assert "anonymous" in text
