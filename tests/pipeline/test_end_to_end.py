"""Golden end-to-end tests of the shipped cascade (nnU-Net style: real weights, stated tolerances).

A small phantom with exact truth, the real scans of ../shared/realct (skipped when absent), and the
input-rejection paths of ``osteoscan run``. Inference runs on the default back-end (OpenVINO, CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from osteoscan.cli import main as cli_main
from osteoscan.errors import ModelError

#: Tolerances of this golden test (looser than the model card's cohort means: one case, 2 mm voxels).
BMD_MAE_TOLERANCE_MG_CM3 = 20.0
HEIGHT_MAE_TOLERANCE_MM = 3.0
AREA_REL_TOLERANCE = 0.15
CENTROID_TOLERANCE_MM = 20.0


@pytest.fixture(scope="module")
def pipeline():
    from osteoscan.pipeline import Pipeline, PipelineConfig

    try:
        return Pipeline(PipelineConfig(outputs=("json",)))
    except ModelError as exc:
        pytest.skip(f"shipped weights unavailable: {exc}")


@pytest.fixture(scope="module")
def lumbar_case():
    from osteoscan.phantom import generate_case

    # seed from the phantom's test range (900000+), never used in training
    return generate_case(900123, "lumbar", spacing_mm=2.0)


def test_phantom_levels_bmd_heights_and_composition(pipeline, lumbar_case) -> None:
    screening = pipeline.screen(lumbar_case.volume)
    result = screening.result
    truth = {v["level"]: v for v in lumbar_case.truth["vertebrae"]}
    found = [v for v in result.vertebrae if v.complete]
    assert {"L1", "L2", "L3", "L4", "L5"} <= {v.level for v in found}, result.qc
    bmd_err, height_err = [], []
    for v in found:
        t = truth[v.level]
        dist = np.linalg.norm(np.subtract(v.centroid_lps_mm, t["body_centroid_lps_mm"]))
        assert dist <= CENTROID_TOLERANCE_MM, f"{v.level} centroid {dist:.1f} mm from the truth"
        if t.get("complete") and v.bmd_mg_cm3 is not None:
            bmd_err.append(abs(v.bmd_mg_cm3 - t["bmd_mg_cm3"]))
        for key in ("anterior", "middle", "posterior"):
            if getattr(v.heights_mm, key) is not None:
                height_err.append(abs(getattr(v.heights_mm, key) - t["heights_mm"][key]))
    assert bmd_err and float(np.mean(bmd_err)) <= BMD_MAE_TOLERANCE_MG_CM3, bmd_err
    assert height_err and float(np.mean(height_err)) <= HEIGHT_MAE_TOLERANCE_MM, height_err
    comp = result.composition
    assert comp is not None and comp.sma_cm2 is not None
    l3 = lumbar_case.truth["l3"]
    for ours, theirs in (("sma_cm2", "muscle_area_cm2"), ("sat_cm2", "sat_area_cm2"), ("vat_cm2", "vat_area_cm2")):
        rel = abs(getattr(comp, ours) - l3[theirs]) / l3[theirs]
        assert rel <= AREA_REL_TOLERANCE, f"{ours}: {getattr(comp, ours):.1f} vs truth {l3[theirs]:.1f} cm2"
    # the label map written for outputs holds every reported level, on the CT grid
    assert screening.labels.shape == lumbar_case.volume.shape
    assert result.provenance.backend and result.provenance.precision and result.provenance.models


def test_run_rejects_mr_with_exit_code_2(realct: Path, tmp_path: Path, capsys) -> None:
    code = cli_main(["run", str(realct / "mr_not_ct" / "mr_small.nii.gz"), "-o", str(tmp_path / "o")])
    assert code == 2
    assert not (tmp_path / "o" / "result.json").exists()


def test_run_rejects_missing_input_with_exit_code_2(tmp_path: Path) -> None:
    assert cli_main(["run", str(tmp_path / "nothing-here"), "-o", str(tmp_path / "o")]) == 2


def test_chest_ct_reports_thoracic_levels_and_says_lumbar_not_covered(pipeline, realct: Path, tmp_path: Path) -> None:
    result = pipeline.run_study(realct / "chest_jpegll", tmp_path / "chest")
    assert not result.qc.lumbar_covered
    assert result.summary.bmd_l1_l2_mg_cm3 is None and result.summary.acr_category is None
    assert result.composition is None
    assert any("lumbar spine not covered" in w for w in result.qc.warnings)
    thoracic = [v for v in result.vertebrae if v.level.startswith("T")]
    assert thoracic, "a chest CT must still report thoracic vertebrae"
    written = json.loads((tmp_path / "chest" / "result.json").read_text())
    assert written["qc"]["lumbar_covered"] is False


#: Minimum Dice with TotalSegmentator's masks on ts_example for the levels the pipeline measures
#: (measured 0.75-0.89 after the decoder fixes of issue #5; a floor, not the target of 0.80 for all).
TS_EXAMPLE_MIN_DICE = 0.70


def test_ts_example_labels_t11_to_l5(pipeline, realct: Path, tmp_path: Path) -> None:
    """Issue #5's real-scan acceptance: T11 (a sliver at the top edge) .. L5, no level absorbed."""
    from osteoscan.analysis.intervertebral import genant_grade_from_loss
    from osteoscan.pipeline.validation import dice, level_mask, reference_labels_canonical

    screening = pipeline.screen_path(realct / "ts_example" / "ct.nii.gz")
    result = screening.result
    assert [v.level for v in result.vertebrae] == ["T11", "T12", "L1", "L2", "L3", "L4", "L5"], result.qc
    # T11 and T12 are cut by the top of the scan: labelled, not measured
    assert [v.level for v in result.vertebrae if not v.complete] == ["T11", "T12"]
    ref = reference_labels_canonical(realct)
    ts_ids = {"L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27}
    for level, ts_id in ts_ids.items():
        d = dice(level_mask(screening.labels, level), ref == ts_id)
        assert d is not None and d >= TS_EXAMPLE_MIN_DICE, f"{level}: Dice {d:.2f} with TotalSegmentator"
    # Genant's method grades T4-L4: L5 (wedge-shaped in health) gets heights, not a grade
    assert next(v for v in result.vertebrae if v.level == "L5").genant_grade is None
    # L1-L4: within one grade of what TotalSegmentator's own heights imply (1 - min/max of its three
    # heights, 1.5 mm steps: 0.16-0.22, i.e. grade 0-1), and never severe
    report = json.loads((realct / "ts_example" / "ref" / "spine_report.json").read_text())["results"]
    for v in result.vertebrae:
        if v.level in ("L1", "L2", "L3", "L4"):
            ts_grade = genant_grade_from_loss(report[f"vertebrae_{v.level}_height_difference"])
            assert v.genant_grade is not None and abs(v.genant_grade - ts_grade) <= 1 and v.genant_grade < 3, (
                v.level, v.genant_grade, ts_grade, v.heights_mm)
