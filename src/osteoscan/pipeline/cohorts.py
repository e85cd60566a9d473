"""Phantom cohorts on disk for benchmarks and validation: generated once, then reused.

Each case is written as a DICOM series (so that the benchmark measures reading too) with its
``truth.json`` beside it, under ``<cache>/<cohort>/<case_id>/``. A case whose ``truth.json`` exists
is not generated again (the truth file is written last, so a half-written case is redone).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``cohorts/`` in osteoscan's cache folder (see :func:`osteoscan.runtime.config.default_cache_dir`)."""
    from osteoscan.runtime.config import default_cache_dir as cache_root

    return cache_root() / "cohorts"


@dataclass(frozen=True)
class CachedCase:
    case_id: str
    folder: Path

    @property
    def dicom_dir(self) -> Path:
        return self.folder / "ct"

    @property
    def truth_path(self) -> Path:
        return self.folder / "truth.json"


def ensure_cohort(name: str, cache_dir: Path | None = None, limit: int | None = None) -> list[CachedCase]:
    """The cases of cohort ``name`` (first ``limit``), generating the missing ones."""
    from osteoscan.phantom.cohort import case_subject, load_cohort
    from osteoscan.phantom.generate import generate_case
    from osteoscan.phantom.writers import save_case

    root = (cache_dir or default_cache_dir()) / name
    cases = load_cohort(name)[:limit]
    out = []
    for i, c in enumerate(cases):
        cached = CachedCase(c.case_id, root / c.case_id)
        if not cached.truth_path.is_file():
            log.info("generating %s (%d/%d) into %s", c.case_id, i + 1, len(cases), cached.folder)
            case = generate_case(c.seed, c.preset, spacing_mm=c.spacing_mm, subject=case_subject(c))
            save_case(case, cached.folder, "dicom")
        out.append(cached)
    return out
