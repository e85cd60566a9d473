"""The uncompressed fast path of the DICOM reader gives exactly what pydicom decodes, or steps aside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import FileMetaDataset
from pydicom.pixels import pixel_array
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from osteoscan.io.dicom import _raw_pixels


def _write(path: Path, values: np.ndarray, syntax: str, bits_stored: int, signed: bool, trailing_padding: bool = False) -> Path:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = values.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    big = syntax == ExplicitVRBigEndian
    ds.PixelData = values.astype(values.dtype.newbyteorder(">" if big else "<")).tobytes()
    if trailing_padding:
        ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 8)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize(
    ("syntax", "dtype", "bits_stored"),
    [
        (ExplicitVRLittleEndian, np.int16, 16),
        (ImplicitVRLittleEndian, np.int16, 16),
        (ExplicitVRLittleEndian, np.uint16, 12),  # garbage in the 4 unused high bits: masked
        (ExplicitVRLittleEndian, np.int16, 12),  # 12-bit two's complement: sign-extended
        (ImplicitVRLittleEndian, np.uint8, 8),
    ],
)
def test_raw_pixels_equal_pydicom(tmp_path: Path, syntax: str, dtype: type, bits_stored: int) -> None:
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, size=(12, 10), endpoint=True).astype(dtype)
    path = _write(tmp_path / "a.dcm", values, syntax, bits_stored, signed=info.min < 0)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    fast = _raw_pixels(path, ds)
    ref = pixel_array(str(path))
    assert fast is not None
    assert fast.dtype == ref.dtype and np.array_equal(fast, ref)
    fast[0, 0] = 1  # writable, as pydicom's


@pytest.mark.parametrize(("syntax", "padding"), [(ExplicitVRBigEndian, False), (ExplicitVRLittleEndian, True)])
def test_anything_uncertain_is_left_to_pydicom(tmp_path: Path, syntax: str, padding: bool) -> None:
    values = np.arange(120, dtype=np.int16).reshape(12, 10)
    path = _write(tmp_path / "b.dcm", values, syntax, 16, signed=True, trailing_padding=padding)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert _raw_pixels(path, ds) is None
