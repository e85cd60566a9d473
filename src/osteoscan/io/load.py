"""``load_ct``: one entry point for every input a user can hand over, and the "is this CT?" check.

DICOM (folder, zip, file or list of files) carries a Modality tag, which decides. NIfTI carries
none, so :func:`check_is_ct` judges by intensities: a CT in Hounsfield units always contains air
(about -1000 HU) around the body or in the lungs/bowel, or at least fat (about -100 HU); MR and
other non-HU images are (almost) never below -200.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from osteoscan.errors import InputError, UnsupportedSeriesError
from osteoscan.io.nifti import is_nifti_path, read_nifti
from osteoscan.io.volume import CTVolume, to_canonical

log = logging.getLogger(__name__)

#: Below this HU only air, lung and fat occur in CT (fat is about -100, lung -700..-900, air -1000).
CT_LOW_HU = -200.0
#: A CT has at least this fraction of voxels below CT_LOW_HU (air around the body, lungs, fat).
#: The tightest real case here, a crop around L3 (tptbox_l3), has about 1 %; MR has 0.
MIN_LOW_FRACTION = 0.001
#: Voxels sampled for the statistics (every n-th voxel; the decision does not need them all).
_SAMPLE_VOXELS = 2_000_000


@dataclass(frozen=True)
class CTCheck:
    """Intensity statistics behind :func:`check_is_ct` (for messages and logs)."""

    is_ct: bool
    low_fraction: float  # fraction of voxels below CT_LOW_HU
    minimum: float
    maximum: float
    median: float

    def describe(self) -> str:
        return (
            f"{100 * self.low_fraction:.2f} % of voxels below {CT_LOW_HU:.0f} HU, "
            f"values {self.minimum:.0f}..{self.maximum:.0f} (median {self.median:.0f})"
        )


def ct_statistics(array: np.ndarray) -> CTCheck:
    """The statistics :func:`check_is_ct` decides on (subsampled for speed)."""
    flat = array.reshape(-1)
    if flat.size == 0:
        return CTCheck(False, 0.0, 0.0, 0.0, 0.0)
    step = max(1, flat.size // _SAMPLE_VOXELS)
    sample = flat[::step]
    low = float(np.count_nonzero(sample < CT_LOW_HU)) / sample.size
    return CTCheck(
        is_ct=low >= MIN_LOW_FRACTION,
        low_fraction=low,
        minimum=float(sample.min()),
        maximum=float(sample.max()),
        median=float(np.median(sample)),
    )


def check_is_ct(volume: CTVolume, source: str | None = None) -> CTCheck:
    """Reject volumes whose intensities cannot be CT in HU (used for NIfTI, which has no modality).

    Raises:
        UnsupportedSeriesError: with a one-line reason naming the source and the statistics.
    """
    stats = ct_statistics(volume.array)
    if not stats.is_ct:
        where = source or volume.provenance.source_path or "the volume"
        raise UnsupportedSeriesError(
            f"{where}: not a CT in HU (NIfTI has no modality tag, so this was judged by intensities: "
            f"{stats.describe()}; a CT always has air at -1000 HU or fat at -100 HU). osteoscan analyses "
            "CT only; if this is a CT stored without rescaling (air at 0), convert it to HU first."
        )
    return stats


def load_ct(path: str | Path | Sequence[str | Path], series_uid: str | None = None) -> CTVolume:
    """Load a CT volume in canonical (S, P, L) orientation from DICOM or NIfTI.

    Args:
        path: DICOM folder (recursive), zip, single DICOM file, list of DICOM files, or a
            ``.nii``/``.nii.gz`` file.
        series_uid: for DICOM, the SeriesInstanceUID to read instead of the automatic choice.

    Raises:
        InputError: unreadable input (see the message for the fix).
        UnsupportedSeriesError: not CT (MR series, non-HU NIfTI, localizer only, ...).
        GeometryError: geometry that cannot be made consistent.
    """
    if isinstance(path, (str, Path)) and is_nifti_path(path):
        if series_uid is not None:
            raise InputError(f"{path}: a series UID only applies to DICOM input; NIfTI holds one volume")
        volume = read_nifti(path)
        check_is_ct(volume, str(path))
        return to_canonical(volume)
    from osteoscan.io.dicom import load_dicom_series

    volume = load_dicom_series(path, series_uid).volume
    stats = ct_statistics(volume.array)
    if not stats.is_ct:
        log.warning(
            "%s: labelled CT but the values do not look like HU (%s); results may be wrong",
            volume.provenance.source_path,
            stats.describe(),
        )
    return volume
