"""What every DICOM output shares: checks on the source series, series numbers, equipment fields."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pydicom

from osteoscan import __version__
from osteoscan.errors import InputError
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


def check_source(datasets: Sequence[pydicom.Dataset]) -> None:
    """The source datasets must be one CT series with a Frame of Reference.

    Slice order and grid need not match the volume: highdicom places segmentation frames by their
    patient positions and references the source frames they coincide with (all of them when the grid
    is the source's; none, with explicit plane positions, when the volume was resampled).

    Raises:
        InputError: empty list, mixed studies/series/frames of reference, or no Frame of Reference.
    """
    if not datasets:
        raise InputError("source_datasets is empty; pass the header datasets of the source CT series or None")
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(key, "")) for ds in datasets}
        if "" in values:
            raise InputError(f"source datasets lack {key}; cannot reference the source series in DICOM outputs")
        if len(values) != 1:
            raise InputError(f"source datasets span {len(values)} different {key} values; pass one series")


def unique_instances(datasets: Sequence[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """One dataset per SOP instance, in order (an Enhanced CT is passed once per frame by the reader)."""
    seen: set[str] = set()
    out = []
    for ds in datasets:
        if ds.SOPInstanceUID not in seen:
            seen.add(ds.SOPInstanceUID)
            out.append(ds)
    return out


@contextmanager
def no_phi_warnings() -> Iterator[None]:
    """Silence highdicom's warning about unusual person names: it quotes the patient's name, and
    warnings end up in logs. The name is copied from the source verbatim, which is what we want."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*is unlikely to represent the intended person name.*", category=UserWarning
        )
        yield
