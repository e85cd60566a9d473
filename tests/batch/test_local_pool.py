"""The batch driver on the local process pool, with a real study function (batch_testlib)."""

from __future__ import annotations

import json
from pathlib import Path

import batch_testlib as lib
import pandas as pd
import pytest

from osteoscan.batch import LocalPool, discover, plan_slots, run_batch
from osteoscan.errors import BackendError

SEEDS = [1, 2, 3, 4, 5]


def _pool(calls: Path, workers: int = 2, **kw) -> LocalPool:
    return LocalPool(lib.StatsFactory(str(calls), **kw), plan_slots(workers, []))


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    lib.make_cases(root, SEEDS)
    lib.make_not_ct(root / "mr_scan.nii.gz")
    (root / "case_003.nii.gz.crash").touch()  # an internal error in the study function
    (root / "case_004.nii.gz.kill").touch()  # the worker is SIGKILLed once during this study
    return root


def test_batch_isolates_failures_retries_killed_worker_and_writes_tables(archive: Path, tmp_path: Path) -> None:
    out, calls = tmp_path / "out", tmp_path / "calls.log"
    tasks = discover([archive])
    assert [t.study_id for t in tasks] == ["case_001", "case_002", "case_003", "case_004", "case_005", "mr_scan"]

    summary = run_batch(tasks, out, _pool(calls), display=False)

    assert (summary.done, summary.failed, summary.skipped) == (4, 2, 0)
    assert summary.retried == 1
    log = lib.calls(calls)
    killed = [pid for sid, pid in log if sid == "case_004"]
    assert len(killed) == 2 and killed[0] != killed[1], "case_004 must run again in a new worker process"

    studies = pd.read_csv(out / "results.csv")
    assert sorted(studies.study_id) == ["case_001", "case_002", "case_004", "case_005"]
    assert pd.read_parquet(out / "results.parquet").shape == studies.shape
    vert = pd.read_parquet(out / "vertebrae.parquet")
    assert len(vert) == 4 * len(lib.LEVELS)
    for seed in (1, 2, 4, 5):
        got = vert[vert.study_id == f"case_{seed:03d}"].sort_values("level").hu_trabecular.tolist()
        assert got == pytest.approx(lib.expected_means(seed), abs=1e-3)
    assert (out / "studies" / "case_001" / "result.json").is_file()
    assert not (out / "studies" / "case_003").exists(), "a failed study leaves no output folder"

    failures = pd.read_csv(out / "failures.csv").set_index("study_id")
    assert failures.loc["mr_scan", "error_type"] == "UnsupportedSeriesError"
    assert "not a CT" in failures.loc["mr_scan", "reason"]
    assert failures.loc["case_003", "error_type"] == "RuntimeError"
    assert "simulated bug" in failures.loc["case_003", "reason"]

    records = [json.loads(x) for x in (out / "batch_state.jsonl").read_text().splitlines()]
    assert next(r for r in records if r["study_id"] == "case_004")["attempts"] == 2
    assert all(r["input_bytes"] > 0 for r in records if r["status"] == "done")


def test_rerun_is_idempotent_and_notices_changed_inputs(archive: Path, tmp_path: Path) -> None:
    out, calls = tmp_path / "out", tmp_path / "calls.log"
    (archive / "case_004.nii.gz.kill").unlink()
    run_batch(discover([archive]), out, _pool(calls), display=False)
    first = len(lib.calls(calls))

    # 1) same inputs, same models: nothing is recomputed except the internal failure (case_003);
    #    the rejected MR input is not retried while it is unchanged
    s2 = run_batch(discover([archive]), out, _pool(calls), display=False)
    new = [sid for sid, _ in lib.calls(calls)[first:]]
    assert new == ["case_003"]
    assert (s2.skipped, s2.failed) == (5, 1)

    # 2) touched but identical content: confirmed by content hash, not recomputed
    import os

    os.utime(archive / "case_001.nii.gz", ns=(1, 1))
    n = len(lib.calls(calls))
    s3 = run_batch(discover([archive]), out, _pool(calls), display=False)
    assert [sid for sid, _ in lib.calls(calls)[n:]] == ["case_003"]
    assert s3.unchanged == 1

    # 3) changed content: recomputed, and its table row follows the new pixels
    lib.make_cases(tmp_path / "other", [42])
    (tmp_path / "other" / "case_042.nii.gz").replace(archive / "case_002.nii.gz")
    n = len(lib.calls(calls))
    run_batch(discover([archive]), out, _pool(calls), display=False)
    assert sorted(sid for sid, _ in lib.calls(calls)[n:]) == ["case_002", "case_003"]
    vert = pd.read_csv(out / "vertebrae.csv")
    got = vert[vert.study_id == "case_002"].sort_values("level").hu_trabecular.tolist()
    assert got == pytest.approx(lib.expected_means(42), abs=1e-3)

    # 4) an input that disappeared (unmounted archive) keeps its earlier result
    manifest = tmp_path / "one.csv"
    manifest.write_text(f"input,study_id\n{archive / 'case_005.nii.gz'},case_005\n")
    (archive / "case_005.nii.gz").rename(tmp_path / "elsewhere.nii.gz")
    s4 = run_batch(discover([manifest]), out, _pool(calls), display=False)
    assert (s4.skipped, s4.failed) == (1, 0)
    assert "case_005" in set(pd.read_csv(out / "results.csv").study_id)
    (tmp_path / "elsewhere.nii.gz").rename(archive / "case_005.nii.gz")

    # 5) other models (fingerprint): everything is recomputed
    n = len(lib.calls(calls))
    run_batch(discover([archive]), out, _pool(calls, fingerprint="stats-v2"), display=False)
    assert len(lib.calls(calls)[n:]) == 6


def test_interrupted_batch_resumes_without_recomputing(archive: Path, tmp_path: Path) -> None:
    out, calls = tmp_path / "out", tmp_path / "calls.log"
    for marker in ("case_003.nii.gz.crash", "case_004.nii.gz.kill"):
        (archive / marker).unlink()
    (archive / "mr_scan.nii.gz").unlink()
    tasks = discover([archive])
    finished: list[str] = []

    def interrupt_after_two(record) -> None:
        finished.append(record.study_id)
        if len(finished) == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises in the driver

    with pytest.raises(KeyboardInterrupt):
        run_batch(tasks, out, _pool(calls, workers=1), on_record=interrupt_after_two, display=False)
    assert len(pd.read_csv(out / "results.csv")) == 2, "tables are written for what finished"

    summary = run_batch(tasks, out, _pool(calls, workers=1), display=False)
    assert summary.skipped == 2 and summary.done == 3
    assert sorted(summary.processed) == sorted({t.study_id for t in tasks} - set(finished))
    log = [sid for sid, _ in lib.calls(calls)]
    assert sorted(set(log)) == sorted(t.study_id for t in tasks)
    # at most the one study in flight at the interruption ran twice; finished ones never did
    assert all(log.count(sid) == 1 for sid in finished)
    assert len(pd.read_csv(out / "results.csv")) == 5
    # read-ahead: with one worker, every study but the first of each run was read (hashed) while
    # the previous one was being screened
    records = [json.loads(x) for x in (out / "batch_state.jsonl").read_text().splitlines()]
    assert [r["read_ahead"] for r in records].count(False) == 2


def test_study_that_always_kills_its_worker_fails_after_max_attempts(tmp_path: Path) -> None:
    root, out, calls = tmp_path / "a", tmp_path / "out", tmp_path / "calls.log"
    lib.make_cases(root, [1, 2])
    (root / "case_001.nii.gz.killalways").touch()
    summary = run_batch(discover([root]), out, _pool(calls, workers=1), max_attempts=2, display=False)
    assert (summary.done, summary.failed) == (1, 1)
    failures = pd.read_csv(out / "failures.csv")
    assert failures.error_type.tolist() == ["WorkerDied"]
    assert "SIGKILL" in failures.reason[0] and failures.attempts[0] == 2


def test_workers_that_cannot_load_models_stop_the_batch_with_the_reason(tmp_path: Path) -> None:
    root = tmp_path / "a"
    lib.make_cases(root, [1])
    with pytest.raises(BackendError, match="model file missing"):
        run_batch(discover([root]), tmp_path / "out", _pool(tmp_path / "c.log", workers=1, fail_init=True), display=False)


def test_studies_are_spread_over_every_gpu_slot_by_index(tmp_path: Path) -> None:
    """Device assignment only (the study function ignores the device): 2 GPUs + 1 CPU worker."""
    root, out = tmp_path / "a", tmp_path / "out"
    lib.make_cases(root, list(range(1, 10)))
    pool = LocalPool(lib.StatsFactory(str(tmp_path / "c.log"), delay_s=0.3), plan_slots(1, [0, 1], per_gpu=1))
    run_batch(discover([root]), out, pool, display=False)
    records = [json.loads(x) for x in (out / "batch_state.jsonl").read_text().splitlines()]
    assert {r["device"] for r in records} == {"cuda:0", "cuda:1", "cpu"}
    assert {r["worker"] for r in records} == {"gpu0-0", "gpu1-0", "cpu-0"}
    assert set(pd.read_csv(out / "results.csv").device) == {"cuda:0", "cuda:1", "cpu"}


DRIVER = """
import sys, batch_testlib as lib
from osteoscan.batch import LocalPool, discover, plan_slots, run_batch
root, out, calls = sys.argv[1:4]
run_batch(discover([root]), out, LocalPool(lib.StatsFactory(calls, delay_s=0.4), plan_slots(1, [])), display=False)
"""


def test_killed_driver_leaves_no_workers_and_the_batch_resumes(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    root, out, calls = tmp_path / "a", tmp_path / "out", tmp_path / "calls.log"
    lib.make_cases(root, [1, 2, 3, 4, 5])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(lib.__file__).parent), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(root), str(out), str(calls)], env=env)
    journal = out / "batch_state.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 2):
        time.sleep(0.1)
    assert driver.poll() is None, "the driver finished before it could be interrupted"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    worker_pids = {pid for _, pid in lib.calls(calls)}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in worker_pids):
        time.sleep(0.2)
    assert not any(_alive(p) for p in worker_pids), "orphaned workers must exit when the driver dies"

    done_before = [json.loads(x)["study_id"] for x in journal.read_text().splitlines() if x.strip()]
    summary = run_batch(discover([root]), out, _pool(calls, workers=1), display=False)
    assert summary.skipped == len(done_before) >= 2
    log = [sid for sid, _ in lib.calls(calls)]
    assert all(log.count(sid) == 1 for sid in done_before)
    assert len(pd.read_csv(out / "results.csv")) == 5


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead for our purpose
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
