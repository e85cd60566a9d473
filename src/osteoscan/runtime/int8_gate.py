"""The pipeline-level accuracy gate of an int8 artifact (issue #6).

An int8 model is accepted for screening only if the *pipeline* with that one model in int8 (every
other model at its auto precision) is as accurate against the phantom truth as the pipeline at auto
precision, on held-out phantom cases of the validation cohort (the calibration cases come from other
seeds, :mod:`osteoscan.runtime.calibration`):

* vertebra Dice (pipeline label map vs the truth label map, per level, body + posterior elements)
  drops by at most ``GATE_MAX_VERTEBRA_DICE_DROP``;
* BMD MAE vs the truth rises by at most ``GATE_MAX_BMD_MAE_INCREASE_MG_CM3``;
* tissue Dice (the L3 composition slice vs the truth tissue map, mean over the four tissues) drops
  by at most ``GATE_MAX_TISSUE_DICE_DROP``.

Model-level agreement with fp32 is not enough: a small change in the coarse model's labels can move
a crop, and the BMD regressor's tolerance is in mg/cm3, not in argmax agreement. The result is written
into the artifact's ``<name>.int8.json`` ``gate`` slot, which the pipeline reads
(:func:`osteoscan.runtime.int8.select_gated_int8`).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from osteoscan.errors import InputError, ModelError
from osteoscan.labels import Tissue
from osteoscan.runtime.int8 import (
    GATE_MAX_BMD_MAE_INCREASE_MG_CM3,
    GATE_MAX_TISSUE_DICE_DROP,
    GATE_MAX_VERTEBRA_DICE_DROP,
    Int8Spec,
    int8_paths,
    load_int8_artifact,
)

log = logging.getLogger(__name__)

#: the held-out cohort the gate is measured on (osteoscan.phantom.cohort, seeds 700000+)
GATE_COHORT = "validation"
GATE_TISSUES: tuple[Tissue, ...] = (Tissue.MUSCLE, Tissue.SAT, Tissue.VAT, Tissue.IMAT)
REFERENCE = "auto"


@dataclass
class _Accumulator:
    """Per-variant figures over the cohort."""

    vertebra_dice: list[float] = field(default_factory=list)  # one per (case, level)
    tissue_dice: list[float] = field(default_factory=list)  # one per case with a composition slice
    levels: list[tuple[str, ...]] = field(default_factory=list)
    segment_s: list[float] = field(default_factory=list)
    errors: Any = None  # osteoscan.pipeline.validation.PhantomErrors


@dataclass(frozen=True)
class GateReport:
    """The gate measurement of one model's int8 artifact."""

    name: str
    passed: bool
    why: str
    figures: dict[str, Any]

    def to_gate(self) -> dict[str, Any]:
        """The dict stored in ``<name>.int8.json`` ``gate``."""
        return {"passed": self.passed, "why": self.why, **self.figures}


def vertebra_level_map(labels: np.ndarray) -> np.ndarray:
    """Level number of every vertebra voxel (body or posterior elements), 0 elsewhere."""
    from osteoscan.report.levels import level_map

    return level_map(labels).astype(np.int32)


def per_level_dice(pred_levels: np.ndarray, truth_levels: np.ndarray, levels: Sequence[int]) -> dict[int, float]:
    """Dice of each level's whole-vertebra mask (one pass of bincounts over the volume)."""
    n = int(max(pred_levels.max(initial=0), truth_levels.max(initial=0), *levels)) + 1
    inter = np.bincount(pred_levels[(pred_levels == truth_levels) & (pred_levels > 0)], minlength=n)
    a, b = np.bincount(pred_levels.ravel(), minlength=n), np.bincount(truth_levels.ravel(), minlength=n)
    return {lv: 2.0 * inter[lv] / (a[lv] + b[lv]) for lv in levels if a[lv] + b[lv] > 0}


def tissue_dice(pred: np.ndarray, truth: np.ndarray) -> float | None:
    """Mean Dice over the four tissues present in either map (None when none is)."""
    from osteoscan.pipeline.validation import dice

    scores = [d for cls in GATE_TISSUES if (d := dice(pred == cls, truth == cls)) is not None]
    return float(np.mean(scores)) if scores else None


def _score_case(acc: _Accumulator, screening: Any, truth_labels: np.ndarray, truth: dict[str, Any],
                levels: Sequence[int]) -> None:
    from osteoscan.phantom.truth import tissue_map

    result = screening.result
    dice = per_level_dice(vertebra_level_map(screening.labels), vertebra_level_map(truth_labels), levels)
    acc.vertebra_dice.extend(dice[lv] for lv in levels if lv in dice)
    acc.errors.add_case(result, truth)
    acc.levels.append(tuple(v.level for v in result.vertebrae))
    acc.segment_s.append(float(result.timings_s.get("segment_vertebrae", np.nan)))
    comp = result.composition
    if screening.tissue is not None and comp is not None and comp.slice_index is not None:
        d = tissue_dice(screening.tissue, tissue_map(truth_labels[comp.slice_index]))
        if d is not None:
            acc.tissue_dice.append(d)


def _mean(x: Sequence[float]) -> float | None:
    return float(np.mean(x)) if len(x) else None


def _verdict(ref: _Accumulator, cand: _Accumulator) -> tuple[bool, str, dict[str, Any]]:
    ref_bmd, cand_bmd = ref.errors.summary()["bmd_mae_mg_cm3"], cand.errors.summary()["bmd_mae_mg_cm3"]
    figs = {
        "vertebra_dice_reference": _mean(ref.vertebra_dice),
        "vertebra_dice_int8": _mean(cand.vertebra_dice),
        "bmd_mae_reference_mg_cm3": ref_bmd,
        "bmd_mae_int8_mg_cm3": cand_bmd,
        "tissue_dice_reference": _mean(ref.tissue_dice),
        "tissue_dice_int8": _mean(cand.tissue_dice),
        "n_vertebra_dice": len(cand.vertebra_dice),
        "n_bmd": cand.errors.summary()["n_vertebrae_bmd"],
        "n_tissue_slices": len(cand.tissue_dice),
        "cases_with_same_levels": int(sum(a == b for a, b in zip(ref.levels, cand.levels, strict=True))),
        "segment_vertebrae_s_median_reference": float(np.nanmedian(ref.segment_s)) if ref.segment_s else None,
        "segment_vertebrae_s_median_int8": float(np.nanmedian(cand.segment_s)) if cand.segment_s else None,
    }
    checks = []

    def drop(key_ref: str, key_int8: str, limit: float, sign: float, label: str, unit: str = "") -> None:
        a, b = figs[key_ref], figs[key_int8]
        if a is None or b is None:
            figs[f"{label}_change"] = None
            checks.append((a is None and b is None, f"{label}: {'not measured' if a is None and b is None else 'measured in one run only'}"))
            return
        change = sign * (a - b)  # positive = worse with int8
        figs[f"{label}_change"] = round(float(change), 5)
        checks.append((change <= limit, f"{label} {change:+.4f}{unit} (limit {limit}{unit})"))

    drop("vertebra_dice_reference", "vertebra_dice_int8", GATE_MAX_VERTEBRA_DICE_DROP, 1.0, "vertebra_dice_drop")
    drop("bmd_mae_reference_mg_cm3", "bmd_mae_int8_mg_cm3", GATE_MAX_BMD_MAE_INCREASE_MG_CM3, -1.0,
         "bmd_mae_increase", " mg/cm3")
    drop("tissue_dice_reference", "tissue_dice_int8", GATE_MAX_TISSUE_DICE_DROP, 1.0, "tissue_dice_drop")
    same = figs["cases_with_same_levels"] == len(ref.levels)
    checks.append((same, f"same levels in {figs['cases_with_same_levels']}/{len(ref.levels)} cases"))
    # a metric measured in neither run (e.g. no L3 slice) does not fail the gate; one measured in
    # only one run does, since then the int8 model changed what the pipeline could measure
    passed = all(ok for ok, _ in checks)
    failed = [text for ok, text in checks if not ok]
    why = "; ".join(failed) if failed else "; ".join(text for _, text in checks)
    return passed, why, figs


def machine_description() -> str:
    """CPU model and core count, for the gate record."""
    import os

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores"


def _pipeline_config(weights_dir: str | Path | None, device: str, precision: str) -> Any:
    from osteoscan.pipeline.config import PipelineConfig

    return PipelineConfig(backend="openvino", device=device, precision=precision, outputs=("json",),
                          weights_dir=Path(weights_dir) if weights_dir is not None else None)


def measure_gates(
    names: Sequence[str],
    artifact_dir: str | Path,
    *,
    cases: int = 8,
    cohort: str = GATE_COHORT,
    weights_dir: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, GateReport]:
    """Run the pipeline at auto precision and, per model in ``names``, with that model's int8
    artifact from ``artifact_dir``, on the first ``cases`` cases of ``cohort``; score all against
    the phantom truth. The reference runs once per case and is shared by every candidate.

    Raises:
        ModelError: an artifact missing, stale or altered. InputError: a cohort case without truth labels.
    """
    from osteoscan.models.registry import get_spec
    from osteoscan.pipeline.cascade import MODEL_NAMES, LoadedModel
    from osteoscan.pipeline.screen import Pipeline
    from osteoscan.runtime import create_session
    from osteoscan.runtime.model_source import ModelSource

    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise InputError(f"gate: unknown model(s) {unknown}; the gate runs the cascade, so only {list(MODEL_NAMES)}")
    reference = Pipeline(_pipeline_config(weights_dir, device, REFERENCE))
    candidates: dict[str, Any] = {}
    for name in names:
        spec = get_spec(name, weights_dir=reference.config.weights_dir)
        source, _ = load_int8_artifact(ModelSource.from_spec(spec), *int8_paths(Path(artifact_dir), name))
        session = create_session(source, backend="openvino", device=device, precision="int8")
        pipe = copy.copy(reference)  # shares the reference's warm sessions; only ``name`` is swapped
        pipe.cascade = reference.cascade.with_model(name, LoadedModel(spec=spec, session=session))
        candidates[name] = pipe
    return compare_with_reference(reference, candidates, cases=cases, cohort=cohort)


def measure_int8_pipeline(*, cases: int = 8, cohort: str = GATE_COHORT, weights_dir: str | Path | None = None,
                          device: str = "cpu") -> GateReport:
    """The pipeline at ``precision="int8"`` (every gated artifact at once, the rest at auto) against
    the pipeline at auto: the acceptance check of what ``osteoscan run --precision int8`` does."""
    from osteoscan.pipeline.screen import Pipeline

    reference = Pipeline(_pipeline_config(weights_dir, device, REFERENCE))
    candidate = Pipeline(_pipeline_config(weights_dir, device, "int8"))
    return compare_with_reference(reference, {"pipeline int8": candidate}, cases=cases, cohort=cohort)["pipeline int8"]


def compare_with_reference(reference: Any, candidates: dict[str, Any], *, cases: int, cohort: str) -> dict[str, GateReport]:
    """Score ``reference`` and every candidate Pipeline on the same cohort cases against the truth."""
    from osteoscan.pipeline import stages
    from osteoscan.pipeline.cohorts import ensure_cohort
    from osteoscan.pipeline.validation import PhantomErrors, labels_canonical

    t0 = time.perf_counter()
    accs = {key: _Accumulator(errors=PhantomErrors()) for key in (REFERENCE, *candidates)}
    chosen = ensure_cohort(cohort, limit=cases)
    for i, case in enumerate(chosen):
        labels_path = case.folder / "labels.nii.gz"
        if not labels_path.is_file():
            raise InputError(f"{case.folder}: no labels.nii.gz; regenerate the cohort case (delete the folder)")
        truth = json.loads(case.truth_path.read_text())
        truth_labels = labels_canonical(labels_path)
        volume = stages.load_study(case.dicom_dir).volume
        if truth_labels.shape != volume.shape:
            raise InputError(f"{labels_path}: shape {truth_labels.shape} differs from its CT {volume.shape}")
        screenings = {REFERENCE: reference.screen(volume)}
        screenings.update({name: pipe.screen(volume) for name, pipe in candidates.items()})
        truth_lv = vertebra_level_map(truth_labels)
        produced = set()
        for s in screenings.values():
            produced |= set(np.unique(vertebra_level_map(s.labels)).tolist())
        levels = sorted((produced & set(np.unique(truth_lv).tolist())) - {0})
        for key, s in screenings.items():
            _score_case(accs[key], s, truth_labels, truth, levels)
        log.info("gate case %d/%d %s: levels %s", i + 1, len(chosen), case.case_id, accs[REFERENCE].levels[-1])
    seconds = time.perf_counter() - t0
    reports = {}
    for name, pipe in candidates.items():
        passed, why, figs = _verdict(accs[REFERENCE], accs[name])
        figs.update({
            "cohort": cohort,
            "cases": len(chosen),
            "case_ids": [c.case_id for c in chosen],
            "reference": f"pipeline precision auto ({'+'.join(dict.fromkeys(reference.cascade.precisions().values()))})",
            "candidate_precisions": pipe.cascade.precisions(),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_description(),
            "seconds_all_models": round(seconds, 1),
            "limits": {"vertebra_dice_drop": GATE_MAX_VERTEBRA_DICE_DROP,
                       "bmd_mae_increase_mg_cm3": GATE_MAX_BMD_MAE_INCREASE_MG_CM3,
                       "tissue_dice_drop": GATE_MAX_TISSUE_DICE_DROP},
        })
        reports[name] = GateReport(name=name, passed=passed, why=why, figures=figs)
        log.info("int8 gate %s: %s (%s)", name, "PASSED" if passed else "FAILED", why)
    return reports


def write_gate(artifact_dir: str | Path, report: GateReport) -> Path:
    """Store ``report`` in ``<artifact_dir>/<name>.int8.json`` (the IR's sha256 is unaffected)."""
    js = int8_paths(Path(artifact_dir), report.name)[2]
    if not js.is_file():
        raise ModelError(f"{js}: no int8 spec to record the gate in; run `osteoscan models quantize {report.name}`")
    spec = Int8Spec.load(js)
    replace(spec, gate=report.to_gate()).save(js)
    return js


def format_gate_table(reports: dict[str, GateReport]) -> str:
    """Markdown table of the gate figures (docs/runtime.md)."""

    def f(x: Any, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    lines = [
        ("| model in int8 | vertebra Dice auto / int8 (drop) | BMD MAE auto / int8 mg/cm3 (increase) | "
         "tissue Dice auto / int8 (drop) | same levels | segment_vertebrae s auto / int8 | gate |"),
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports.values():
        g = r.figures
        lines.append(
            f"| {r.name} | {f(g['vertebra_dice_reference'], '.4f')} / {f(g['vertebra_dice_int8'], '.4f')} "
            f"({f(g.get('vertebra_dice_drop_change'), '+.4f')}) | {f(g['bmd_mae_reference_mg_cm3'], '.2f')} / "
            f"{f(g['bmd_mae_int8_mg_cm3'], '.2f')} ({f(g.get('bmd_mae_increase_change'), '+.2f')}) | "
            f"{f(g['tissue_dice_reference'], '.4f')} / {f(g['tissue_dice_int8'], '.4f')} "
            f"({f(g.get('tissue_dice_drop_change'), '+.4f')}) | {g['cases_with_same_levels']}/{g['cases']} | "
            f"{f(g['segment_vertebrae_s_median_reference'], '.2f')} / {f(g['segment_vertebrae_s_median_int8'], '.2f')} | "
            f"{'pass' if r.passed else 'FAIL'} |"
        )
    return "\n".join(lines)
