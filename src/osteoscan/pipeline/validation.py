"""Pipeline-level validation: screening results against ground truth (phantom) or a reference tool.

``validate_phantom`` compares result.json with the phantom's truth.json (BMD per level, heights,
Genant grades, L3 areas); ``compare_ts_example`` puts osteoscan's per-level heights, volumes and HU
next to TotalSegmentator's spine report on ``../shared/realct/ts_example`` (a reference to compare
with, not truth). Both return plain rows for docs/VALIDATION.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from osteoscan.result import StudyResult

log = logging.getLogger(__name__)

#: TotalSegmentator vertebra ids in ts_example/ref/vertebrae.nii.gz (realct README)
TS_VERTEBRA_IDS: dict[str, int] = {"S": 26, "L5": 27, "L4": 28, "L3": 29, "L2": 30, "L1": 31, "T12": 32, "T11": 33}


@dataclass
class PhantomErrors:
    """Accumulates per-case errors over a cohort."""

    bmd_abs: dict[str, list[float]] = field(default_factory=dict)  # level -> |pred - truth|
    bmd_pairs: list[tuple[float, float]] = field(default_factory=list)
    height_abs: list[float] = field(default_factory=list)
    grade_hits: list[bool] = field(default_factory=list)
    level_hits: list[bool] = field(default_factory=list)
    area_rel: dict[str, list[float]] = field(default_factory=dict)  # sma/sat/vat -> relative error
    failures: list[str] = field(default_factory=list)

    def add_case(self, result: StudyResult, truth: dict[str, Any], centroid_tolerance_mm: float = 20.0) -> None:
        truth_levels = {v["level"]: v for v in truth["vertebrae"]}
        for v in result.vertebrae:
            t = truth_levels.get(v.level)
            # identification: the predicted centroid lies within 20 mm of the true one (VerSe)
            # identification (VerSe): the reported vertebral-body centroid lies within 20 mm of the
            # true body centroid of the level it was labelled as
            if v.centroid_lps_mm is not None:
                true_c = None if t is None else t.get("body_centroid_lps_mm")
                ok = true_c is not None and float(np.linalg.norm(np.subtract(v.centroid_lps_mm, true_c))) <= centroid_tolerance_mm
                self.level_hits.append(bool(ok))
            if t is None or not v.complete or not t.get("complete", True):
                continue
            if v.bmd_mg_cm3 is not None and t.get("bmd_mg_cm3") is not None:
                err = abs(v.bmd_mg_cm3 - t["bmd_mg_cm3"])
                self.bmd_abs.setdefault(v.level, []).append(err)
                self.bmd_pairs.append((v.bmd_mg_cm3, t["bmd_mg_cm3"]))
            th = t.get("heights_mm") or {}
            for key in ("anterior", "middle", "posterior"):
                pred = getattr(v.heights_mm, key)
                if pred is not None and th.get(key) is not None:
                    self.height_abs.append(abs(pred - th[key]))
            if v.genant_grade is not None and t.get("fracture_grade") is not None:
                self.grade_hits.append(int(v.genant_grade) == int(t["fracture_grade"]))
        l3 = truth.get("l3") or {}
        if result.composition is not None and l3:
            for ours, theirs in (("sma_cm2", "muscle_area_cm2"), ("sat_cm2", "sat_area_cm2"), ("vat_cm2", "vat_area_cm2")):
                pred, ref = getattr(result.composition, ours), l3.get(theirs)
                if pred is not None and ref:
                    self.area_rel.setdefault(ours, []).append(abs(pred - ref) / ref)

    def summary(self) -> dict[str, Any]:
        all_bmd = [e for errs in self.bmd_abs.values() for e in errs]
        pairs = np.asarray(self.bmd_pairs) if self.bmd_pairs else np.zeros((0, 2))
        return {
            "bmd_mae_mg_cm3": float(np.mean(all_bmd)) if all_bmd else None,
            "bmd_mae_by_level_mg_cm3": {k: float(np.mean(v)) for k, v in sorted(self.bmd_abs.items())},
            "bmd_pearson_r": float(np.corrcoef(pairs.T)[0, 1]) if len(pairs) > 2 else None,
            "height_mae_mm": float(np.mean(self.height_abs)) if self.height_abs else None,
            "height_p95_mm": float(np.percentile(self.height_abs, 95)) if self.height_abs else None,
            "genant_accuracy": float(np.mean(self.grade_hits)) if self.grade_hits else None,
            "level_identification_rate": float(np.mean(self.level_hits)) if self.level_hits else None,
            "area_relative_error": {k: float(np.mean(v)) for k, v in sorted(self.area_rel.items())},
            "n_vertebrae_bmd": len(all_bmd),
            "n_grades": len(self.grade_hits),
            "failures": list(self.failures),
        }


def compare_ts_example(result: StudyResult, labels_ct_grid: np.ndarray | None, realct: Path) -> list[dict[str, Any]]:
    """Rows level -> (ours vs TotalSegmentator): heights, volume, HU; plus Dice where labels are given."""
    ref = json.loads((realct / "ts_example" / "ref" / "spine_report.json").read_text())["results"]
    ref_labels = reference_labels_canonical(realct) if labels_ct_grid is not None else None
    rows = []
    for level in ("T11", "T12", "L1", "L2", "L3", "L4", "L5"):
        v = result.vertebra(level)
        row: dict[str, Any] = {"level": level, "found": v is not None, "complete": bool(v and v.complete)}
        for key in ("posterior", "middle", "anterior"):
            row[f"{key}_mm"] = None if v is None else getattr(v.heights_mm, key)
            row[f"ts_{key}_mm"] = ref.get(f"vertebrae_{level}_height_{key}_mm")
        row["volume_ml"] = None if v is None else v.volume_ml
        row["ts_volume_ml"] = ref.get(f"vertebrae_{level}_volume_ml")
        row["hu_trabecular"] = None if v is None else v.hu_trabecular
        row["ts_intensity_median"] = ref.get(f"vertebrae_{level}_intensity_median")
        row["genant_grade"] = None if v is None else v.genant_grade
        if ref_labels is not None and labels_ct_grid is not None:
            row["dice_vs_ts"] = dice(level_mask(labels_ct_grid, level), ref_labels == TS_VERTEBRA_IDS[level])
        rows.append(row)
    return rows


def labels_canonical(path: Path) -> np.ndarray:
    """A label NIfTI (phantom truth, reference segmentation) reoriented like the pipeline's CT (S, P, L)."""
    from osteoscan.io import CANONICAL_ORIENTATION, reorient_array
    from osteoscan.io.nifti import read_nifti_array

    array, affine = read_nifti_array(path)
    return reorient_array(array, affine, CANONICAL_ORIENTATION)[0]


def reference_labels_canonical(realct: Path) -> np.ndarray:
    """TotalSegmentator's vertebra map of ts_example, reoriented like the pipeline's CT (S, P, L)."""
    return labels_canonical(realct / "ts_example" / "ref" / "vertebrae.nii.gz")


def level_mask(labels: np.ndarray, level_name: str) -> np.ndarray:
    """Whole-vertebra mask (body + posterior elements) of a level in the pipeline's label encoding."""
    from osteoscan.labels import BODY_OFFSET, POSTERIOR_OFFSET, VertebraLevel

    lv = int(VertebraLevel.from_name(level_name))
    return (labels == BODY_OFFSET + lv) | (labels == POSTERIOR_OFFSET + lv)


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    denom = int(a.sum()) + int(b.sum())
    return None if denom == 0 else 2.0 * float(np.logical_and(a, b).sum()) / denom
