"""Named cohorts of phantom cases from a YAML spec (``src/osteoscan/phantom/cohorts/<name>.yaml``).

A spec lists groups; each group has a ``count``, a ``preset`` and optional ``spacing_mm`` and
``overrides`` (keyword overrides of :func:`osteoscan.phantom.sample_subject`, e.g.
``scanner_kvp: 80`` or ``fracture: {L1: [2, wedge]}``). Case *i* of the cohort (counted over all
groups in order) has seed ``base_seed + i`` and id ``<name>_<i:04d>``, so a cohort is reproducible
from its spec alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osteoscan.errors import InputError

log = logging.getLogger(__name__)

COHORT_DIR = Path(__file__).resolve().parent / "cohorts"


@dataclass(frozen=True)
class CohortCase:
    case_id: str
    seed: int
    preset: str
    spacing_mm: float | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


def load_cohort(name_or_path: str | Path) -> list[CohortCase]:
    """Cases of a named cohort ('benchmark', 'test') or of a YAML spec file.

    Raises:
        InputError: the spec is missing or malformed (the message names the file and the key).
    """
    import yaml

    p = Path(name_or_path)
    if not p.suffix:
        p = COHORT_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        known = ", ".join(sorted(q.stem for q in COHORT_DIR.glob("*.yaml")))
        raise InputError(f"cohort spec {p} not found; named cohorts: {known}")
    try:
        spec = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({exc})") from exc
    for key in ("name", "base_seed", "groups"):
        if key not in spec:
            raise InputError(f"{p}: cohort spec lacks the key {key!r}")
    cases: list[CohortCase] = []
    i = 0
    for g_idx, g in enumerate(spec["groups"]):
        if "count" not in g or "preset" not in g:
            raise InputError(f"{p}: group {g_idx} needs 'count' and 'preset'")
        for _ in range(int(g["count"])):
            cases.append(CohortCase(
                case_id=f"{spec['name']}_{i:04d}",
                seed=int(spec["base_seed"]) + i,
                preset=str(g["preset"]),
                spacing_mm=g.get("spacing_mm"),
                overrides=dict(g.get("overrides") or {}),
            ))
            i += 1
    return cases


def case_subject(c: CohortCase):
    """The SubjectParams of a cohort case (its overrides applied)."""
    from osteoscan.phantom.params import sample_subject

    ov = dict(c.overrides)
    if "fracture" in ov:
        ov["fracture"] = {k: (int(v[0]), str(v[1])) for k, v in ov["fracture"].items()}
    return sample_subject(c.seed, c.preset, **ov)


def generate_cohort(name_or_path: str | Path, outdir: str | Path, fmt: str = "nifti", limit: int | None = None) -> int:
    """Generate every case of a cohort into ``outdir/<case_id>/``; returns the number written."""
    from osteoscan.phantom.generate import generate_case
    from osteoscan.phantom.writers import save_case

    cases = load_cohort(name_or_path)[:limit]
    for c in cases:
        s = case_subject(c)
        case = generate_case(c.seed, c.preset, spacing_mm=c.spacing_mm, subject=s)
        save_case(case, Path(outdir) / c.case_id, fmt)
        log.info("%s: %s", c.case_id, case.volume.summary())
    return len(cases)
