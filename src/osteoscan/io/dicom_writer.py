"""Write a :class:`CTVolume` as a DICOM CT Image Storage series (one file per slice).

Used by the phantom (synthetic cases that look like a scanner's export, for tests, demos and the
benchmark cohort) and by anything that needs to hand a volume to a PACS. Each array slice
``array[k]`` becomes one image: rows run along array axis 1, columns along array axis 2, and
ImagePositionPatient / ImageOrientationPatient / PixelSpacing come from the affine, so
:func:`osteoscan.io.dicom.load_dicom_series` reads back the same array and affine.

Identifiers are synthetic (``pydicom.uid.generate_uid``) and names de-identified unless the caller
passes its own. Metadata not given explicitly is taken from ``volume.provenance``.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from osteoscan.errors import InputError
from osteoscan.io.volume import CTVolume

log = logging.getLogger(__name__)

#: DICOM PS3.4 SOP class "CT Image Storage".
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Stored value = HU - intercept; -1024 is the common scanner convention (air ~ 0..24 stored).
DEFAULT_RESCALE_INTERCEPT = -1024.0
#: Transfer syntaxes the writer can produce (name -> UID); encoders: pydicom/pylibjpeg/pyjpegls.
COMPRESSION_SYNTAXES = {
    "rle": "1.2.840.10008.1.2.5",  # RLE Lossless
    "j2k": "1.2.840.10008.1.2.4.90",  # JPEG 2000 Image Compression (Lossless Only)
    "jpegls": "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
}
#: openjpeg (pylibjpeg-openjpeg) encodes with 6 DWT resolutions: each side needs >= 2**5 pixels.
J2K_MIN_SIDE = 32
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
#: A soft-tissue abdomen window for viewers (centre, width) in HU.
DEFAULT_WINDOW = (40.0, 400.0)


def _age_string(years: float | None) -> str:
    """DICOM AS value ("065Y"); empty when unknown."""
    if years is None:
        return ""
    y = round(years)
    if not 0 <= y <= 999:
        raise InputError(f"patient age {years} years is out of range 0..999")
    return f"{y:03d}Y"


def _ds_number(x: float) -> str:
    """Format a float for a DS element (max 16 characters)."""
    for digits in range(12, 4, -1):
        s = f"{x:.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{x:.4e}"


def _stored_pixels(array: np.ndarray, intercept: float) -> tuple[np.ndarray, float]:
    """HU -> stored int16 values with ``intercept`` (falls back to 0 when the range needs it)."""
    if array.dtype == np.float32:
        hu = np.rint(array)
    else:
        hu = array.astype(np.int32)
    lo, hi = float(hu.min()), float(hu.max())
    i16 = np.iinfo(np.int16)
    if not (lo - intercept >= i16.min and hi - intercept <= i16.max):
        intercept = 0.0
    if not (lo >= i16.min and hi <= i16.max):
        raise InputError(f"HU range [{lo}, {hi}] does not fit 16-bit DICOM pixels; clip the volume first")
    return (hu - intercept).astype(np.int16), intercept


def write_dicom_series(
    volume: CTVolume,
    outdir: str | Path,
    *,
    patient_id: str | None = None,
    patient_name: str | None = None,
    patient_age_years: float | None = None,
    patient_sex: str | None = None,
    patient_height_m: float | None = None,
    patient_weight_kg: float | None = None,
    study_date: str | None = None,
    study_description: str = "CT osteoscan synthetic",
    series_description: str | None = None,
    series_number: int = 1,
    kvp: float | None = None,
    kernel: str | None = None,
    contrast_agent: str | None = None,
    slice_thickness_mm: float | None = None,
    manufacturer: str | None = None,
    manufacturer_model: str | None = None,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    rescale_intercept: float = DEFAULT_RESCALE_INTERCEPT,
    compression: str | None = None,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    file_prefix: str = "CT",
) -> list[Path]:
    """Write ``volume`` as one CT Image Storage file per slice ``array[k]`` into ``outdir``.

    Arguments not given fall back to ``volume.provenance`` (then to neutral defaults). Float
    volumes are rounded to integer HU. ``compression``: None (Explicit VR Little Endian),
    ``"rle"``, ``"j2k"`` (JPEG 2000 lossless) or ``"jpegls"`` (JPEG-LS lossless); all lossless, so
    reading back gives the same integers.

    Returns:
        The written file paths in slice order (``array[0]`` first).

    Raises:
        InputError: bad metadata values, an unknown compression, or an unwritable ``outdir``.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    prov = volume.provenance
    if compression is not None and compression not in COMPRESSION_SYNTAXES:
        raise InputError(
            f"unknown compression {compression!r}; use one of {sorted(COMPRESSION_SYNTAXES)} or None"
        )
    if compression == "j2k" and min(volume.shape[1:]) < J2K_MIN_SIDE:
        raise InputError(
            f"JPEG 2000 needs images of at least {J2K_MIN_SIDE} pixels per side (openjpeg uses 6 wavelet "
            f"levels); this volume's slices are {volume.shape[1]}x{volume.shape[2]}. Use 'rle' or 'jpegls'."
        )
    sex = patient_sex if patient_sex is not None else prov.patient_sex
    if sex is not None and sex not in ("M", "F", "O"):
        raise InputError(f"patient sex must be 'M', 'F' or 'O'; got {sex!r}")
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise InputError(
            f"{outdir}: cannot create the output folder ({exc.strerror}); choose a writable path"
        ) from exc

    study_uid = study_instance_uid or prov.study_instance_uid or generate_uid()
    series_uid = series_instance_uid or generate_uid()
    for_uid = frame_of_reference_uid or prov.frame_of_reference_uid or generate_uid()
    date = study_date or prov.study_date or _dt.date.today().strftime("%Y%m%d")
    now = _dt.datetime.now().strftime("%H%M%S")
    kvp_v = kvp if kvp is not None else prov.kvp
    kernel_v = kernel if kernel is not None else prov.convolution_kernel
    contrast_v = contrast_agent if contrast_agent is not None else prov.contrast_agent
    age_v = patient_age_years if patient_age_years is not None else prov.patient_age_years
    height_v = patient_height_m if patient_height_m is not None else prov.patient_height_m
    weight_v = patient_weight_kg if patient_weight_kg is not None else prov.patient_weight_kg

    aff = volume.affine
    spacing = volume.spacing
    thickness = slice_thickness_mm or prov.slice_thickness_mm or spacing[0]
    row_dir = aff[:3, 2] / spacing[2]  # direction along a row = increasing column index = axis 2
    col_dir = aff[:3, 1] / spacing[1]  # direction down a column = increasing row index = axis 1
    normal = np.cross(row_dir, col_dir)
    stored, intercept = _stored_pixels(volume.array, rescale_intercept)
    ts_uid = COMPRESSION_SYNTAXES[compression] if compression else EXPLICIT_VR_LITTLE_ENDIAN

    paths: list[Path] = []
    n = volume.shape[0]
    width = max(4, len(str(n)))
    for k in range(n):
        pos = aff[:3, :3] @ np.array([k, 0.0, 0.0]) + aff[:3, 3]
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
        meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = list(image_type)
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = now
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = manufacturer or prov.manufacturer or "osteoscan"
        ds.ManufacturerModelName = manufacturer_model or prov.manufacturer_model or "synthetic"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = study_description
        ds.SeriesDescription = series_description or prov.series_description or "synthetic CT"
        ds.PatientName = patient_name or prov.patient_name or "Anonymous^Phantom"
        ds.PatientID = patient_id or prov.patient_id or "OSTEOSCAN-0000"
        ds.PatientBirthDate = ""
        ds.PatientSex = sex or ""
        ds.PatientAge = _age_string(age_v)
        if height_v is not None:
            ds.PatientSize = _ds_number(float(height_v))
        if weight_v is not None:
            ds.PatientWeight = _ds_number(float(weight_v))
        ds.ContrastBolusAgent = contrast_v or ""
        ds.SliceThickness = _ds_number(float(thickness))
        ds.SpacingBetweenSlices = _ds_number(float(spacing[0]))
        if kvp_v is not None:
            ds.KVP = _ds_number(float(kvp_v))
        if kernel_v:
            ds.ConvolutionKernel = kernel_v
        ds.PatientPosition = "FFS" if aff[2, 0] > 0 else "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds_number(float(x)) for x in pos]
        ds.ImageOrientationPatient = [_ds_number(float(x)) for x in (*row_dir, *col_dir)]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds_number(float(pos @ normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[2])
        ds.PixelSpacing = [_ds_number(spacing[1]), _ds_number(spacing[2])]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = _ds_number(DEFAULT_WINDOW[0])
        ds.WindowWidth = _ds_number(DEFAULT_WINDOW[1])
        ds.RescaleIntercept = _ds_number(intercept)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "synthetic data (osteoscan)"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        if compression:
            ds.compress(ts_uid, np.ascontiguousarray(stored[k]))
        path = outdir / f"{file_prefix}{k + 1:0{width}d}.dcm"
        try:
            ds.save_as(path, enforce_file_format=True)
        except PermissionError as exc:
            raise InputError(f"{path}: permission denied while writing ({exc.strerror})") from exc
        paths.append(path)
    log.info("wrote %d DICOM slices (%s) to %s", n, compression or "uncompressed", outdir)
    return paths
