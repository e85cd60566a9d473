"""CT input: the volume type, DICOM series reading and selection, NIfTI conversion, resampling.

Public API (see docs/io.md): ``load_ct``, ``check_is_ct``, ``load_dicom_series``, ``read_nifti``,
``write_nifti``, ``write_dicom_series``, ``resample``, ``resample_array``, ``resample_to_grid`` and
the volume type with its orientation helpers. pydicom and nibabel are imported lazily inside the
functions that need them, so importing this package stays cheap.
"""

from osteoscan.io.dicom import DicomSeries, load_dicom_series, scan_series
from osteoscan.io.dicom_select import SkippedSeries
from osteoscan.io.dicom_writer import write_dicom_series
from osteoscan.io.load import check_is_ct, load_ct
from osteoscan.io.nifti import read_nifti, read_nifti_array, write_nifti
from osteoscan.io.resample import grid_for_spacing, resample, resample_array, resample_to_grid
from osteoscan.io.volume import (
    CANONICAL_ORIENTATION,
    CTVolume,
    Provenance,
    affine_from_spacing,
    orientation_codes,
    reorient,
    reorient_array,
    to_canonical,
)

__all__ = [
    "CANONICAL_ORIENTATION",
    "CTVolume",
    "DicomSeries",
    "Provenance",
    "SkippedSeries",
    "affine_from_spacing",
    "check_is_ct",
    "grid_for_spacing",
    "load_ct",
    "load_dicom_series",
    "orientation_codes",
    "read_nifti",
    "read_nifti_array",
    "reorient",
    "reorient_array",
    "resample",
    "resample_array",
    "resample_to_grid",
    "scan_series",
    "to_canonical",
    "write_dicom_series",
    "write_nifti",
]
