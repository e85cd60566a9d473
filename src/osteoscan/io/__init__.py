"""CT input: the volume type, DICOM series reading and selection, NIfTI conversion, resampling."""

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
    "reorient",
    "reorient_array",
    "to_canonical",
]
