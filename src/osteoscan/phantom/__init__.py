"""The procedural CT phantom: osteoscan's data engine (issue #3).

Public API (the generation path imports numpy and scipy only; writers are imported lazily)::

    from osteoscan.phantom import generate_case, sample_subject
    case = generate_case(7, "cap")            # case.volume (CTVolume), case.labels, case.truth
    crop = generate_case(7, "cap", spacing_mm=1.0, crop_center_lps_mm=c, crop_size_mm=64)

See ``docs/phantom.md`` for the label table, parameters, HU table and timings.
"""

from osteoscan.phantom.generate import PhantomCase, generate_case
from osteoscan.phantom.params import (
    GENERATOR_VERSION,
    PRESETS,
    ScannerParams,
    SubjectParams,
    VertebraSpec,
    sample_subject,
)

__all__ = [
    "GENERATOR_VERSION",
    "PRESETS",
    "PhantomCase",
    "ScannerParams",
    "SubjectParams",
    "VertebraSpec",
    "generate_case",
    "sample_subject",
]
