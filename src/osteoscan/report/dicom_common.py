"""What every DICOM output shares: checks on the source series, series numbers, equipment fields."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pydicom

from osteoscan import __version__
from osteoscan.errors import GeometryError, InputError
from osteoscan.io import CTVolume
from osteoscan.report import constants as C

log = logging.getLogger(__name__)

#: Series numbers of the derived series (high, so that they sort after the scanner's series).
SERIES_NUMBER_SEG = 9001
SERIES_NUMBER_SR = 9002
SERIES_NUMBER_PDF = 9003
SERIES_NUMBER_SC = 9004

MANUFACTURER = C.MANUFACTURER
MODEL_NAME = C.PRODUCT_NAME
SOFTWARE_VERSION = __version__
DEVICE_SERIAL = "n/a"
#: Tolerance when matching slice positions of the volume and the source datasets, mm.
POSITION_TOLERANCE_MM = 0.05


def check_source(datasets: Sequence[pydicom.Dataset], ct: CTVolume) -> None:
    """The source datasets must be one series of ``ct.shape[0]`` slices, in axis-0 order.

    Raises:
        InputError: empty list, mixed studies/series or frames of reference, no Frame of Reference.
        GeometryError: the slice count or the slice positions do not match the volume's geometry.
    """
    if not datasets:
        raise InputError("source_datasets is empty; pass the header datasets of the source CT series or None")
    first = datasets[0]
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(key, "")) for ds in datasets}
        if "" in values:
            raise InputError(f"source datasets lack {key}; cannot reference the source series in DICOM outputs")
        if len(values) != 1:
            raise InputError(f"source datasets span {len(values)} different {key} values; pass one series")
    if len(datasets) != ct.shape[0]:
        raise GeometryError(
            f"{len(datasets)} source datasets for a volume of {ct.shape[0]} slices (series "
            f"{first.SeriesInstanceUID}); pass the datasets of the slices the volume was built from, in axis-0 order"
        )
    expected = ct.index_to_lps(np.stack([np.arange(ct.shape[0]), np.zeros(ct.shape[0]), np.zeros(ct.shape[0])], 1))
    # The canonical grid's (k, 0, 0) voxel is one corner of each source slice, not necessarily the first
    # stored pixel: compare only the position along the slice normal.
    normal = ct.direction[:, 0]
    got = np.array([[float(x) for x in ds.ImagePositionPatient] for ds in datasets])
    err = np.abs((got - expected) @ normal)
    if err.max() > max(POSITION_TOLERANCE_MM, 0.01 * ct.spacing[0]):
        k = int(err.argmax())
        raise GeometryError(
            f"source dataset {k} of series {first.SeriesInstanceUID} lies {err[k]:.2f} mm off slice {k} of the "
            "volume; datasets must be in the volume's axis-0 order"
        )
