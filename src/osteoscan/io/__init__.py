"""CT input: the volume type, DICOM series reading and selection, NIfTI conversion, resampling.

Public API (see docs/io.md): ``load_ct``, ``check_is_ct``, ``load_dicom_series``, ``read_nifti``,
``write_nifti``, ``write_dicom_series``, ``resample``, ``resample_array``, ``resample_to_grid`` and
the volume type with its orientation helpers. pydicom and nibabel are imported lazily inside the
functions that need them.
"""

from osteoscan.io.dicom_writer import write_dicom_series
from osteoscan.io.nifti import read_nifti, read_nifti_array, write_nifti
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
    "Provenance",
    "affine_from_spacing",
    "orientation_codes",
    "read_nifti",
    "read_nifti_array",
    "reorient",
    "reorient_array",
    "to_canonical",
    "write_dicom_series",
    "write_nifti",
]
