"""Phantom cohorts on disk for benchmarks and validation: generated once, then reused.

Each case is written as a DICOM series (so that the benchmark measures reading too) with its
``truth.json`` beside it, under ``<cache>/<cohort>/<case_id>/``. A case whose ``truth.json`` and
series both exist is not generated again (the truth file is written last, so a half-written case is
redone).
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

    @property
    def is_complete(self) -> bool:
        """truth.json is written last, but a series folder removed afterwards also needs a redo."""
        return self.truth_path.is_file() and self.dicom_dir.is_dir() and any(self.dicom_dir.iterdir())


def ensure_cohort(
    name: str, cache_dir: Path | None = None, limit: int | None = None, jobs: int = 1
) -> list[CachedCase]:
    """The cases of cohort ``name`` (first ``limit``), generating the missing ones in ``jobs`` processes."""
    from osteoscan.phantom.cohort import load_cohort

    root = (cache_dir or default_cache_dir()) / name
    cases = load_cohort(name)[:limit]
    out = [CachedCase(c.case_id, root / c.case_id) for c in cases]
    missing = [(c, cached) for c, cached in zip(cases, out) if not cached.is_complete]
    if missing:
        log.info("generating %d of %d cases of cohort %s into %s (%d processes)", len(missing), len(cases), name, root, jobs)
    if jobs > 1 and len(missing) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for case_id in pool.map(_generate, [c for c, _ in missing], [f.folder for _, f in missing]):
                log.info("generated %s", case_id)
    else:
        for c, cached in missing:
            _generate(c, cached.folder)
            log.info("generated %s", c.case_id)
    return out


def _generate(cohort_case: object, folder: Path) -> str:
    """Generate one cohort case as DICOM + truth.json (a top-level function: runs in worker processes)."""
    from osteoscan.phantom.cohort import case_subject
    from osteoscan.phantom.generate import generate_case
    from osteoscan.phantom.writers import save_case

    c = cohort_case
    case = generate_case(c.seed, c.preset, spacing_mm=c.spacing_mm, subject=case_subject(c))  # type: ignore[attr-defined]
    save_case(case, folder, "dicom")
    return str(c.case_id)  # type: ignore[attr-defined]
