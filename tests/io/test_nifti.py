"""NIfTI <-> CTVolume: geometry conversion against nibabel, exact round trips, label maps, errors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from osteoscan.errors import InputError
from osteoscan.io.nifti import (
    lps_affine_to_nifti,
    nifti_affine_to_lps,
    read_nifti,
    read_nifti_array,
    write_nifti,
)
from osteoscan.io.volume import CTVolume, affine_from_spacing, to_canonical


def _oblique_affine() -> np.ndarray:
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    aff = np.eye(4)
    aff[:3, :3] = q * np.array([2.5, 0.7, 0.8])
    aff[:3, 3] = [-12.0, 40.5, 300.25]
    return aff


def test_affine_conversion_is_an_involution_and_matches_nibabel(tmp_path: Path) -> None:
    aff = _oblique_affine()
    assert np.allclose(nifti_affine_to_lps(lps_affine_to_nifti(aff)), aff)
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    p = write_nifti(arr, aff, tmp_path / "a.nii.gz")
    img = nib.load(str(p))
    data = np.asanyarray(img.dataobj)
    assert data.shape == (6, 5, 4)  # x-fastest on disk
    # voxel (k, j, i) of ours is voxel (i, j, k) of nibabel, and RAS = LPS with x, y negated
    k, j, i = 3, 2, 5
    assert data[i, j, k] == arr[k, j, i]
    lps = aff @ [k, j, i, 1]
    ras = img.affine @ [i, j, k, 1]
    assert np.allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-3)


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8, np.uint16, np.int32, np.bool_])
def test_round_trip_any_dtype_is_exact(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 200, size=(7, 9, 11)) - (0 if dtype in (np.uint8, np.uint16, np.bool_) else 100)
    arr = arr.astype(dtype)
    aff = _oblique_affine()
    p = write_nifti(arr, aff, tmp_path / "lab.nii")
    back, back_aff = read_nifti_array(p)
    expect_dtype = np.uint8 if dtype == np.bool_ else dtype
    assert back.dtype == expect_dtype
    assert np.array_equal(back, arr.astype(expect_dtype))
    assert np.allclose(back_aff, aff, atol=1e-4)  # NIfTI stores the sform as float32


def test_volume_round_trip_keeps_int16_and_affine(tmp_path: Path) -> None:
    arr = np.random.default_rng(1).integers(-1024, 3000, size=(6, 8, 10)).astype(np.int16)
    vol = CTVolume(arr, affine_from_spacing((3.0, 0.75, 0.75), (1.0, -2.0, 3.0)))
    p = write_nifti(vol, path=tmp_path / "ct.nii.gz")
    back = read_nifti(p)
    assert back.array.dtype == np.int16
    assert np.array_equal(back.array, arr)
    assert np.array_equal(back.affine, vol.affine)
    assert back.orientation == ("S", "P", "L")
    assert back.provenance.source_format == "nifti"


def test_int32_and_integer_float_files_become_int16(tmp_path: Path) -> None:
    aff = affine_from_spacing((1.0, 1.0, 1.0))
    arr = np.array([[[-1000, 0], [40, 1500]]], dtype=np.int32)
    assert read_nifti(write_nifti(arr, aff, tmp_path / "i32.nii")).array.dtype == np.int16
    assert read_nifti(write_nifti(arr.astype(np.float64), aff, tmp_path / "f64.nii")).array.dtype == np.int16
    frac = read_nifti(write_nifti(arr.astype(np.float32) + 0.5, aff, tmp_path / "f32.nii"))
    assert frac.array.dtype == np.float32 and frac.array[0, 0, 0] == -999.5


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_nifti(tmp_path / "missing.nii.gz")
    good = write_nifti(np.zeros((4, 4, 4), np.int16), np.eye(4), tmp_path / "t.nii.gz")
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(good.read_bytes()[:60])
    with pytest.raises(InputError, match="trunc.nii.gz"):
        read_nifti(trunc)
    with pytest.raises(InputError, match="3-D"):
        write_nifti(np.zeros((4, 4)), np.eye(4), tmp_path / "x.nii")
    with pytest.raises(InputError, match="suffix"):
        write_nifti(np.zeros((4, 4, 4)), np.eye(4), tmp_path / "x.img")


def test_realct_nifti_geometry(realct: Path) -> None:
    vol = to_canonical(read_nifti(realct / "ts_example" / "ct.nii.gz"))
    assert vol.shape == (112, 101, 122)
    assert np.allclose(vol.spacing, (3.0, 3.0, 3.0))
    assert vol.orientation == ("S", "P", "L")
    assert vol.array.dtype == np.int16
    assert vol.array.min() < -1000 < 3000 < vol.array.max()
