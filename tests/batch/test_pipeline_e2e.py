"""End to end: ``osteoscan batch`` with the real Pipeline on small phantom cases.

Skipped (with the reason) when the shipped model weights are not in this checkout (ModelError).
"""

from __future__ import annotations

import json
from pathlib import Path

import batch_testlib as lib
import pandas as pd
import pytest

from osteoscan.batch import LocalPool, PipelineProcessorFactory, discover, plan_slots, run_batch
from osteoscan.cli import main

#: grid of the test phantoms: lumbar preset, coarse enough to screen in seconds on 2 cores
SPACING = (3.0, 2.0, 2.0)


def _pipeline_available() -> str | None:
    """None when the models load; else why not (only a missing/corrupt model skips: ModelError)."""
    from osteoscan.errors import ModelError
    from osteoscan.pipeline import Pipeline, PipelineConfig

    try:
        Pipeline(PipelineConfig(outputs=("json",)))
    except ModelError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _pipeline_available()
    if reason:
        pytest.skip(f"the pipeline cannot load its models here: {reason}")
    from osteoscan.io import write_dicom_series, write_nifti
    from osteoscan.phantom import generate_case

    root = tmp_path_factory.mktemp("phantoms")
    write_nifti(generate_case(11, "lumbar", spacing_mm=SPACING).volume, path=root / "ph_nifti.nii.gz")
    write_dicom_series(generate_case(12, "lumbar", spacing_mm=SPACING).volume, root / "ph_dicom", compression="rle")
    lib.make_not_ct(root / "mr_scan.nii.gz")
    return root


def test_batch_with_the_pipeline_matches_a_direct_run_and_resumes(phantoms: Path, tmp_path: Path) -> None:
    from osteoscan.pipeline import Pipeline, PipelineConfig

    out = tmp_path / "out"
    factory = PipelineProcessorFactory(outputs=("json",))
    summary = run_batch(discover([phantoms]), out, LocalPool(factory, plan_slots(1, [])), display=False)
    assert (summary.done, summary.failed) == (2, 1)
    failures = pd.read_csv(out / "failures.csv")
    assert failures.study_id.tolist() == ["mr_scan"] and failures.error_type[0] == "UnsupportedSeriesError"

    studies = pd.read_parquet(out / "results.parquet").set_index("study_id")
    vert = pd.read_parquet(out / "vertebrae.parquet")
    assert set(studies.index) == {"ph_nifti", "ph_dicom"}
    for sid in studies.index:
        result = json.loads((out / "studies" / sid / "result.json").read_text())
        assert studies.loc[sid, "n_vertebrae"] == len(result["vertebrae"]) == (vert.study_id == sid).sum()
        assert studies.loc[sid, "models"] and studies.loc[sid, "fingerprint"] == summary.fingerprint

    # identical to screening the same input directly with the pipeline (timings aside)
    direct = Pipeline(PipelineConfig(outputs=("json",))).run_study(phantoms / "ph_dicom", tmp_path / "direct")
    batch = json.loads((out / "studies" / "ph_dicom" / "result.json").read_text())
    expected = direct.to_dict()
    for d in (expected, batch):
        d.pop("timings_s")
    assert batch == expected

    # a re-run recomputes nothing (rejected input included)
    again = run_batch(discover([phantoms]), out, LocalPool(factory, plan_slots(1, [])), display=False)
    assert (again.skipped, again.done, again.processed) == (3, 0, [])


@pytest.mark.slow
def test_cli_batch_lean_outputs(phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    code = main(["batch", str(phantoms / "ph_nifti.nii.gz"), "-o", str(out), "--outputs", "json", "--workers", "1"])
    assert code == 0
    assert sorted(p.name for p in (out / "studies" / "ph_nifti").iterdir()) == ["result.json"]
    assert "1 screened" in capsys.readouterr().out


@pytest.mark.slow
def test_pipeline_results_identical_in_local_and_ray_mode(phantoms: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from osteoscan.batch.ray_pool import RayPool

    factory = PipelineProcessorFactory(outputs=("json",))
    tasks = [t for t in discover([phantoms]) if t.study_id != "mr_scan"]
    run_batch(tasks, tmp_path / "local", LocalPool(factory, plan_slots(2, [])), display=False)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_batch(tasks, tmp_path / "ray", RayPool(factory, "local", cpu_workers=2), display=False)
    finally:
        ray.shutdown()
    for t in tasks:
        a = json.loads((tmp_path / "local" / "studies" / t.study_id / "result.json").read_text())
        b = json.loads((tmp_path / "ray" / "studies" / t.study_id / "result.json").read_text())
        a.pop("timings_s"), b.pop("timings_s")
        assert a == b, t.study_id
