"""The real CT cases in ../shared/realct (skipped when absent): codecs, series, NIfTI, MR rejection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from osteoscan.cli import main
from osteoscan.errors import UnsupportedSeriesError
from osteoscan.io import load_ct
from osteoscan.io.dicom import load_dicom_series

pytestmark = pytest.mark.realct

LOSSLESS = ["JPLL", "JLSL", "J2KR", "RLE"]
#: Lossy codecs and the largest |HU| error allowed against CT1_UNC (README: J2KI up to ~400 at edges).
LOSSY = {"JLSN": 10, "J2KI": 400}


@pytest.fixture(scope="module")
def ct1_reference(realct: Path) -> np.ndarray:
    return load_dicom_series(realct / "codecs" / "CT1_UNC").volume.array


@pytest.mark.parametrize("codec", LOSSLESS)
def test_lossless_codecs_are_bit_exact(realct: Path, ct1_reference: np.ndarray, codec: str) -> None:
    vol = load_dicom_series(realct / "codecs" / f"CT1_{codec}").volume
    assert vol.array.dtype == ct1_reference.dtype
    assert np.array_equal(vol.array, ct1_reference)


@pytest.mark.parametrize("codec", sorted(LOSSY))
def test_lossy_codecs_within_tolerance(realct: Path, ct1_reference: np.ndarray, codec: str) -> None:
    vol = load_dicom_series(realct / "codecs" / f"CT1_{codec}").volume
    err = np.abs(vol.array.astype(np.int32) - ct1_reference)
    assert err.max() <= LOSSY[codec]
    assert err.mean() < 30


def test_ct1_geometry_and_provenance(realct: Path, ct1_reference: np.ndarray) -> None:
    vol = load_dicom_series(realct / "codecs" / "CT1_UNC").volume
    assert vol.shape == (1, 512, 512)
    assert np.allclose(vol.spacing, (5.0, 0.661468, 0.661468))
    p = vol.provenance
    assert p.manufacturer == "GE MEDICAL SYSTEMS" and p.kvp == 120.0 and p.contrast_agent == "ISOVUE300/100"
    # values are HU, not stored values: air around the body (about -1000) and soft tissue (0..100)
    air = np.mean((ct1_reference > -1100) & (ct1_reference < -900))
    soft = np.mean((ct1_reference > -20) & (ct1_reference < 100))
    assert air > 0.03 and soft > 0.1


def test_ts_example_dicom(realct: Path) -> None:
    series = load_dicom_series(realct / "ts_example" / "dicom")
    vol = series.volume
    assert vol.shape == (20, 512, 512) and vol.orientation == ("S", "P", "L")
    assert np.allclose(vol.spacing, (2.0, 0.9765625, 0.9765625))  # 3 mm slices every 2 mm
    p = vol.provenance
    assert p.manufacturer == "SIEMENS" and p.convolution_kernel == "Br38f" and p.slice_thickness_mm == 3.0
    assert "JPEG 2000" in p.transfer_syntax and not p.geometry_notes
    assert vol.array.min() >= -1024 and vol.array.max() > 1000


def test_chest_jpegll_geometry(realct: Path) -> None:
    series = load_dicom_series(realct / "chest_jpegll")
    vol = series.volume
    assert vol.shape == (255, 512, 512)
    assert np.allclose(vol.spacing, (1.25, 0.703125, 0.703125))
    assert vol.orientation == ("S", "P", "L") and not series.resampled
    assert vol.provenance.kvp == 120.0 and vol.provenance.patient_sex == "F"
    assert "JPEG Lossless" in vol.provenance.transfer_syntax
    assert len(series.datasets) == 255 and series.skipped == ()
    z = [float(ds.ImagePositionPatient[2]) for ds in series.datasets]
    assert np.allclose(np.diff(z), 1.25)


@pytest.mark.parametrize(
    "name", ["ts_example/ct.nii.gz", "ts_example/ct_small.nii.gz", "tptbox_l3/sub-ct_label-22_ct.nii.gz"]
)
def test_real_nifti_ct_loads(realct: Path, name: str) -> None:
    vol = load_ct(realct / name)
    assert vol.orientation == ("S", "P", "L")
    assert vol.array.dtype == np.int16


def test_mr_nifti_is_rejected(realct: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnsupportedSeriesError, match="not a CT"):
        load_ct(realct / "mr_not_ct" / "mr_small.nii.gz")
    assert main(["info", str(realct / "mr_not_ct" / "mr_small.nii.gz")]) == 2


@pytest.mark.slow  # decodes the 255 slices a second time (a few seconds); the geometry test covers the reader
def test_info_chest_jpegll(realct: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(realct / "chest_jpegll")]) == 0
    out = capsys.readouterr().out
    assert "Slices:          255" in out and "0.70x0.70x1.25 mm" in out
    assert "Modality:        CT" in out and "JPEG Lossless" in out
