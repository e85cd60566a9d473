"""Tidy result tables of a batch: one row per study, one row per (study, vertebra), failures.

Built by the driver from every finished study's ``result.json`` (so the tables always cover the
whole output folder, including studies finished by earlier, interrupted runs). Columns are
documented in docs/batch.md; a test checks that every column written is documented there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from osteoscan.batch.state import StudyRecord
from osteoscan.errors import BackendError
from osteoscan.result import VertebraResult

log = logging.getLogger(__name__)

STUDIES_TABLE = "results"  # results.parquet / results.csv: one row per study
VERTEBRAE_TABLE = "vertebrae"  # vertebrae.parquet / vertebrae.csv: one row per study and vertebra
FAILURES_CSV = "failures.csv"
STUDIES_DIR = "studies"

#: provenance.input keys copied into the study table (acquisition facts researchers stratify by).
_INPUT_KEYS = (
    "study_instance_uid",
    "series_instance_uid",
    "modality",
    "manufacturer",
    "kvp",
    "slice_thickness_mm",
    "convolution_kernel",
    "contrast_agent",
    "study_date",
)

STUDY_COLUMNS: tuple[str, ...] = (
    "study_id", "input_path", "series_uid", "input_sha256", "fingerprint", "finished_at", "worker",
    *_INPUT_KEYS,
    "osteoscan_version", "models", "backend", "device", "precision",
    "bmd_l1_l2_mg_cm3", "acr_category", "l1_hu", "l1_hu_flag", "n_fractures", "max_genant_grade",
    "fracture_levels", "lordosis_deg", "contrast_phase",
    "composition_level", "composition_slice_index", "composition_slice_z_mm", "sma_cm2", "sat_cm2", "vat_cm2",
    "imat_cm2", "muscle_hu", "vat_sat_ratio", "smi_cm2_m2", "composition_flags",
    "n_vertebrae", "coverage", "lumbar_covered", "l3_covered", "n_warnings", "warnings", "not_reported",
    "time_total_s", "time_inference_s",
)

FAILURE_COLUMNS: tuple[str, ...] = (
    "study_id", "input_path", "series_uid", "error_type", "reason", "attempts", "worker", "finished_at",
)

_JOIN = "; "


def _flatten_vertebra(v: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in v.items():
        if key == "centroid_lps_mm":
            xyz = value if value is not None else (None, None, None)
            row.update({f"centroid_{a}_lps_mm": c for a, c in zip("xyz", xyz, strict=True)})
        elif key == "heights_mm":
            row.update({f"height_{k}_mm": h for k, h in (value or {}).items()})
        else:
            row[key] = value
    return row


def vertebra_columns() -> tuple[str, ...]:
    """Columns of the vertebra table, derived from the result schema (VertebraResult)."""
    example = dataclasses.asdict(VertebraResult(level="L1", complete=True))
    return ("study_id", *_flatten_vertebra(example))


def study_row(record: StudyRecord, result: dict[str, Any]) -> dict[str, Any]:
    """One study's row from its journal record and its result.json dict."""
    prov = result.get("provenance") or {}
    inp = prov.get("input") or {}
    summary = result.get("summary") or {}
    comp = result.get("composition") or {}
    qc = result.get("qc") or {}
    timings = result.get("timings_s") or {}
    fractures = summary.get("fractures") or []
    row: dict[str, Any] = {
        "study_id": record.study_id,
        "input_path": record.input_path,
        "series_uid": record.series_uid,
        "input_sha256": record.input_sha256,
        "fingerprint": record.fingerprint,
        "finished_at": record.finished_at,
        "worker": record.worker,
        **{k: inp.get(k) for k in _INPUT_KEYS},
        "osteoscan_version": prov.get("osteoscan_version"),
        "models": _JOIN.join(f"{m['name']}:{m['version']}" for m in prov.get("models") or []),
        "backend": prov.get("backend"),
        "device": prov.get("device"),
        "precision": prov.get("precision"),
        "bmd_l1_l2_mg_cm3": summary.get("bmd_l1_l2_mg_cm3"),
        "acr_category": summary.get("acr_category"),
        "l1_hu": summary.get("l1_hu"),
        "l1_hu_flag": summary.get("l1_hu_flag"),
        "n_fractures": len(fractures),
        "max_genant_grade": max((f["genant_grade"] for f in fractures), default=0) if fractures else 0,
        "fracture_levels": _JOIN.join(f["level"] for f in fractures),
        "lordosis_deg": summary.get("lordosis_deg"),
        "contrast_phase": summary.get("contrast_phase"),
        "composition_level": comp.get("level"),
        "composition_slice_index": comp.get("slice_index"),
        "composition_slice_z_mm": comp.get("slice_z_mm"),
        **{k: comp.get(k) for k in ("sma_cm2", "sat_cm2", "vat_cm2", "imat_cm2", "muscle_hu", "vat_sat_ratio", "smi_cm2_m2")},
        "composition_flags": _JOIN.join(comp.get("flags") or []),
        "n_vertebrae": len(result.get("vertebrae") or []),
        "coverage": _JOIN.join(qc.get("coverage") or []),
        "lumbar_covered": qc.get("lumbar_covered"),
        "l3_covered": qc.get("l3_covered"),
        "n_warnings": len(qc.get("warnings") or []),
        "warnings": _JOIN.join(qc.get("warnings") or []),
        "not_reported": _JOIN.join(sorted((qc.get("not_reported") or {}).keys())),
        "time_total_s": timings.get("total"),
        "time_inference_s": timings.get("inference"),
    }
    return row


def vertebra_rows(study_id: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"study_id": study_id, **_flatten_vertebra(v)} for v in result.get("vertebrae") or []]


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]):  # -> pandas.DataFrame
    import pandas as pd

    extra = [c for r in rows for c in r if c not in columns]
    if extra:
        log.warning("result fields %s are not in the documented table columns; written at the end", sorted(set(extra)))
    return pd.DataFrame(rows, columns=list(dict.fromkeys([*columns, *extra])))


def write_tables(outdir: Path, records: dict[str, StudyRecord]) -> dict[str, int]:
    """Write results.{parquet,csv}, vertebrae.{parquet,csv} and failures.csv; return row counts.

    Raises:
        BackendError: pandas/pyarrow are not installed.
    """
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        raise BackendError("writing batch tables needs pandas and pyarrow: pip install 'osteoscan[batch]'") from None
    studies, vertebrae, failures = [], [], []
    for sid in sorted(records):
        rec = records[sid]
        if rec.status == "failed":
            failures.append({k: getattr(rec, k) for k in FAILURE_COLUMNS})
            continue
        path = outdir / STUDIES_DIR / sid / "result.json"
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("study %s is recorded as done but %s is unreadable (%s); re-run to redo it", sid, path, exc)
            continue
        studies.append(study_row(rec, result))
        vertebrae.extend(vertebra_rows(sid, result))
    frames = {
        STUDIES_TABLE: _frame(studies, STUDY_COLUMNS),
        VERTEBRAE_TABLE: _frame(vertebrae, vertebra_columns()),
    }
    for name, frame in frames.items():
        _atomic(outdir / f"{name}.parquet", lambda p, f=frame: f.to_parquet(p, index=False))
        _atomic(outdir / f"{name}.csv", lambda p, f=frame: f.to_csv(p, index=False))
    _atomic(outdir / FAILURES_CSV, lambda p: _frame(failures, FAILURE_COLUMNS).to_csv(p, index=False))
    return {"studies": len(studies), "vertebrae": len(vertebrae), "failures": len(failures)}


def _atomic(path: Path, write) -> None:
    """Write through a temporary file and rename, so a reader never sees half a table."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    tmp.replace(path)
