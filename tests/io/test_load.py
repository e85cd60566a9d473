"""load_ct dispatch, the intensity-based CT check for NIfTI, and the `osteoscan info` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from osteoscan.cli import main
from osteoscan.errors import InputError, UnsupportedSeriesError
from osteoscan.io import load_ct
from osteoscan.io.load import check_is_ct, ct_statistics
from osteoscan.io.nifti import write_nifti
from osteoscan.io.volume import CTVolume, affine_from_spacing

from .conftest import SeriesSpec, write_series


def _body_phantom(shape=(8, 40, 40)) -> np.ndarray:
    """Air around a water cylinder with a fat rim: the minimum any CT shows."""
    _, y, x = np.indices(shape)
    r = np.hypot(y - shape[1] / 2, x - shape[2] / 2)
    arr = np.full(shape, -1000, np.int16)
    arr[r < 15] = -100
    arr[r < 12] = 40
    return arr


def test_check_is_ct_accepts_ct_and_rejects_mr_like_intensities() -> None:
    aff = affine_from_spacing((2.0, 1.0, 1.0))
    assert check_is_ct(CTVolume(_body_phantom(), aff)).is_ct
    # an MR-like image: non-negative intensities, no air/fat in HU terms
    mr = np.random.default_rng(0).integers(0, 900, size=(8, 40, 40)).astype(np.int16)
    with pytest.raises(UnsupportedSeriesError, match="NIfTI has no modality tag") as err:
        check_is_ct(CTVolume(mr, aff), "mr.nii.gz")
    assert "\n" not in str(err.value) and "mr.nii.gz" in str(err.value)
    # a CT exported without rescale (air at 0) is rejected too, with the fix in the message
    with pytest.raises(UnsupportedSeriesError, match="without rescaling"):
        check_is_ct(CTVolume((_body_phantom() + 1000).astype(np.int16), aff))
    assert ct_statistics(_body_phantom()).low_fraction > 0.3


def test_load_ct_dispatches_and_returns_canonical(tmp_path: Path) -> None:
    arr = _body_phantom()
    aff = np.array([[0, 0, -1.0, 20.0], [0, -1.0, 0, 10.0], [-2.0, 0, 0, 5.0], [0, 0, 0, 1]])  # I, A, R
    nii = write_nifti(arr, aff, tmp_path / "ct.nii.gz")
    vol = load_ct(nii)
    assert vol.orientation == ("S", "P", "L") and vol.provenance.source_format == "nifti"
    assert np.array_equal(vol.array, arr[::-1, ::-1, ::-1])
    spec = SeriesSpec(pixels=list(arr), positions=[[0.0, 0.0, 2.0 * k] for k in range(arr.shape[0])])
    write_series(tmp_path / "dcm", spec)
    dvol = load_ct(tmp_path / "dcm")
    assert dvol.provenance.source_format == "dicom" and np.array_equal(dvol.array, arr)
    with pytest.raises(InputError, match="series UID only applies to DICOM"):
        load_ct(nii, series_uid="1.2.3")
    mr = write_nifti(
        np.random.default_rng(1).integers(0, 500, (6, 20, 20)).astype(np.int16), aff, tmp_path / "mr.nii"
    )
    with pytest.raises(UnsupportedSeriesError):
        load_ct(mr)


def test_info_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arr = _body_phantom()
    spec = SeriesSpec(
        pixels=list(arr),
        positions=[[0.0, 0.0, 2.0 * k] for k in range(arr.shape[0])],
        description="abdomen soft",
    )
    write_series(tmp_path / "dcm", spec)
    bone = SeriesSpec(
        pixels=list(arr),
        positions=[[0.0, 0.0, 2.0 * k] for k in range(arr.shape[0])],
        kernel="BONE",
        description="abdomen bone",
        series_number=3,
    )
    write_series(tmp_path / "dcm", bone)
    assert main(["info", str(tmp_path / "dcm")]) == 0
    out = capsys.readouterr().out
    assert "abdomen soft" in out and "Slices:          8" in out
    assert "0.70x0.80x2.00 mm" in out and "Explicit VR Little Endian" in out
    assert "Skipped series (1)" in out and "bone/lung (sharp) kernel (BONE)" in out
    assert main(["info", str(tmp_path / "dcm"), "--series", bone.series_uid]) == 0
    assert "abdomen bone" in capsys.readouterr().out
    mr = write_nifti(
        np.random.default_rng(1).integers(0, 500, (6, 20, 20)).astype(np.int16),
        np.eye(4),
        tmp_path / "mr.nii.gz",
    )
    assert main(["info", str(mr)]) == 2
    assert main(["info", str(tmp_path / "missing")]) == 2
