"""write_dicom_series: headers a PACS expects and pixels/geometry that read back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from osteoscan.errors import InputError
from osteoscan.io.dicom_writer import CT_IMAGE_STORAGE, write_dicom_series
from osteoscan.io.volume import CTVolume, Provenance, affine_from_spacing


def _volume(dtype: type = np.int16) -> CTVolume:
    arr = np.random.default_rng(0).integers(-1024, 2500, size=(4, 40, 36)).astype(dtype)
    prov = Provenance(kvp=100.0, convolution_kernel="B30f", patient_sex="M", patient_age_years=71)
    return CTVolume(arr, affine_from_spacing((2.5, 0.8, 0.7), (-50.0, -60.0, 100.0)), prov)


@pytest.mark.parametrize("compression", [None, "rle", "j2k", "jpegls"])
def test_pixels_and_geometry_read_back_exactly(tmp_path: Path, compression: str | None) -> None:
    vol = _volume()
    paths = write_dicom_series(
        vol,
        tmp_path,
        compression=compression,
        contrast_agent="IOPAMIDOL",
        patient_height_m=1.72,
        patient_weight_kg=80.5,
    )
    assert len(paths) == 4
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.array_equal(hu, vol.array[k])
        assert np.allclose(
            [float(x) for x in ds.ImagePositionPatient], vol.affine[:3, :3] @ [k, 0, 0] + vol.origin
        )
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert ds.SOPClassUID == CT_IMAGE_STORAGE and ds.Modality == "CT"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert [float(x) for x in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert [float(x) for x in ds.PixelSpacing] == [0.8, 0.7]
    assert float(ds.SliceThickness) == 2.5 and float(ds.KVP) == 100.0
    assert ds.ConvolutionKernel == "B30f" and ds.PatientSex == "M" and ds.PatientAge == "071Y"
    assert float(ds.PatientSize) == 1.72 and float(ds.PatientWeight) == 80.5
    assert ds.ContrastBolusAgent == "IOPAMIDOL"
    # one series: the same study/series/frame of reference, distinct SOP instances
    all_ds = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    assert len({d.SeriesInstanceUID for d in all_ds}) == 1
    assert len({d.SOPInstanceUID for d in all_ds}) == 4


def test_float_volumes_are_rounded_and_wide_ranges_use_zero_intercept(tmp_path: Path) -> None:
    arr = np.full((1, 4, 4), -2000.4, np.float32)
    arr[0, 0, 0] = 32000.0
    vol = CTVolume(arr, np.diag([1.0, 1.0, 1.0, 1.0]))
    (p,) = write_dicom_series(vol, tmp_path)
    ds = pydicom.dcmread(p)
    assert float(ds.RescaleIntercept) == 0.0
    assert ds.pixel_array[0, 1] == -2000 and ds.pixel_array[0, 0] == 32000


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="compression"):
        write_dicom_series(_volume(), tmp_path, compression="zip")
    with pytest.raises(InputError, match="sex"):
        write_dicom_series(_volume(), tmp_path, patient_sex="male")
    tiny = CTVolume(np.zeros((2, 8, 8), np.int16), np.eye(4))
    with pytest.raises(InputError, match="JPEG 2000"):
        write_dicom_series(tiny, tmp_path, compression="j2k")
