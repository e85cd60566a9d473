"""Tiny DICOM series written on the fly with pydicom (independently of osteoscan's own writer)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass
class SeriesSpec:
    """One series to write: pixels per slice (HU) and geometry per slice."""

    pixels: list[np.ndarray]
    positions: list[Sequence[float]]
    iop: Sequence[float] = AXIAL_IOP
    pixel_spacing: tuple[float, float] = (0.8, 0.7)
    thickness: float = 2.0
    modality: str = "CT"
    sop_class: str = CT_STORAGE
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL")
    kernel: str | None = "STANDARD"
    description: str = "test series"
    series_number: int = 2
    series_uid: str = field(default_factory=generate_uid)
    study_uid: str = "1.2.826.0.1.3680043.8.498.1"
    instance_numbers: list[int] | None = None
    intercept: float = -1024.0
    slope: float = 1.0
    extra: dict = field(default_factory=dict)


def hu_slices(n: int, rows: int = 32, cols: int = 32, seed: int = 0) -> list[np.ndarray]:
    """Slices whose value encodes their index (slice k has mean 100*k) plus a fixed texture."""
    rng = np.random.default_rng(seed)
    tex = rng.integers(-50, 50, size=(rows, cols))
    return [(tex + 100 * k - 1000).astype(np.int16) for k in range(n)]


def axial_positions(
    n: int, step: float = 2.0, origin: Sequence[float] = (-10.0, -20.0, 50.0)
) -> list[list[float]]:
    return [[origin[0], origin[1], origin[2] + k * step] for k in range(n)]


def write_series(folder: Path, spec: SeriesSpec, names: Sequence[str] | None = None) -> list[Path]:
    """Write ``spec`` as one file per slice; returns paths in slice (spec) order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (px, pos) in enumerate(zip(spec.pixels, spec.positions)):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(spec.sop_class)
        meta.MediaStorageSOPInstanceUID = UID(sop)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = spec.sop_class
        ds.SOPInstanceUID = sop
        ds.Modality = spec.modality
        ds.ImageType = list(spec.image_type)
        ds.StudyInstanceUID = spec.study_uid
        ds.SeriesInstanceUID = spec.series_uid
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
        ds.SeriesNumber = spec.series_number
        ds.SeriesDescription = spec.description
        ds.InstanceNumber = spec.instance_numbers[k] if spec.instance_numbers else k + 1
        ds.PatientID = "TEST-1"
        ds.PatientName = "Test^Patient"
        ds.PatientAge = "063Y"
        ds.PatientSex = "F"
        ds.PatientSize = "1.65"
        ds.PatientWeight = "58"
        ds.KVP = "120"
        ds.Manufacturer = "TESTVENDOR"
        if spec.kernel is not None:
            ds.ConvolutionKernel = spec.kernel
        ds.SliceThickness = spec.thickness
        ds.ImagePositionPatient = [float(x) for x in pos]
        ds.ImageOrientationPatient = [float(x) for x in spec.iop]
        ds.PixelSpacing = list(spec.pixel_spacing)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = px.shape
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = spec.slope
        ds.RescaleIntercept = spec.intercept
        for key, value in spec.extra.items():
            setattr(ds, key, value)
        stored = np.round((px.astype(np.float64) - spec.intercept) / spec.slope).astype(np.int16)
        ds.PixelData = stored.tobytes()
        name = names[k] if names else f"{spec.series_number}_{k:04d}.dcm"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(autouse=True)
def _restore_logging():
    """``osteoscan.cli.main`` reconfigures the root logger onto pytest's captured stderr; undo it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def ct_spec() -> SeriesSpec:
    """A 12-slice axial CT series, 2 mm apart, 32x32 pixels."""
    return SeriesSpec(pixels=hu_slices(12), positions=axial_positions(12))
