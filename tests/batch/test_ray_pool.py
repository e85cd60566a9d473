"""The batch driver on a real local Ray cluster (2 CPUs -> 2 actors), one cluster for the module."""

from __future__ import annotations

import json
from pathlib import Path

import batch_testlib as lib
import pandas as pd
import pytest

from osteoscan.batch import LocalPool, discover, plan_slots, run_batch
from osteoscan.batch.ray_pool import RayPool, plan_cluster_slots
from osteoscan.errors import BackendError

ray = pytest.importorskip("ray")

SEEDS = list(range(1, 21))  # the 20-case batch of the acceptance criteria
#: columns that legitimately differ between runs (who ran it, when, how long it took)
RUN_COLUMNS = ["worker", "finished_at", "time_total_s", "time_inference_s"]


@pytest.fixture(scope="module")
def cluster():
    """A private Ray cluster on loopback with 2 CPUs, shared by the module's tests (start-up is slow)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _ray_pool(calls: Path, **kw) -> RayPool:
    return RayPool(lib.StatsFactory(str(calls)), "local", cpu_workers=2, **kw)


def _results_without_timings(out: Path) -> dict[str, dict]:
    data = {}
    for p in sorted((out / "studies").glob("*/result.json")):
        d = json.loads(p.read_text())
        d.pop("timings_s")
        data[p.parent.name] = d
    return data


def test_ray_batch_retries_a_killed_actor_and_matches_local_mode(cluster, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    lib.make_cases(root, SEEDS)
    tasks = discover([root])
    assert len(tasks) == 20

    (root / "case_007.nii.gz.kill").touch()  # the actor process is SIGKILLed during this study
    ray_out, ray_calls = tmp_path / "ray", tmp_path / "ray_calls.log"
    summary = run_batch(tasks, ray_out, _ray_pool(ray_calls), display=False)
    assert (summary.done, summary.failed, summary.retried) == (20, 0, 1)
    pids = [pid for sid, pid in lib.calls(ray_calls) if sid == "case_007"]
    assert len(pids) == 2 and pids[0] != pids[1], "the study is retried in a fresh actor process"

    (root / "case_007.nii.gz.kill").touch()
    local_out = tmp_path / "local"
    local = run_batch(tasks, local_out, LocalPool(lib.StatsFactory(str(tmp_path / "l.log")), plan_slots(2, [])), display=False)
    assert (local.done, local.retried) == (20, 1)

    # identical per-study results: result.json (minus timings) and both tables (minus run columns)
    assert _results_without_timings(ray_out) == _results_without_timings(local_out)
    for name in ("results", "vertebrae"):
        a = pd.read_parquet(ray_out / f"{name}.parquet").drop(columns=RUN_COLUMNS, errors="ignore")
        b = pd.read_parquet(local_out / f"{name}.parquet").drop(columns=RUN_COLUMNS, errors="ignore")
        pd.testing.assert_frame_equal(a, b)
    vert = pd.read_parquet(ray_out / "vertebrae.parquet")
    got = vert[vert.study_id == "case_013"].sort_values("level").hu_trabecular.tolist()
    assert got == pytest.approx(lib.expected_means(13), abs=1e-3)


def test_ray_batch_resumes_after_interruption_with_shared_storage(cluster, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    lib.make_cases(root, SEEDS[:8])
    lib.make_not_ct(root / "mr_scan.nii.gz")
    tasks = discover([root])
    out, calls = tmp_path / "out", tmp_path / "calls.log"
    finished: list[str] = []

    def interrupt_after_three(record) -> None:
        finished.append(record.study_id)
        if len(finished) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(tasks, out, _ray_pool(calls, shared_storage=True), on_record=interrupt_after_three, display=False)
    summary = run_batch(tasks, out, _ray_pool(calls, shared_storage=True), display=False)
    assert summary.skipped == 3
    assert not set(summary.processed) & set(finished), "finished studies are not recomputed"
    log = [sid for sid, _ in lib.calls(calls)]
    assert all(log.count(sid) == 1 for sid in finished)
    assert len(pd.read_csv(out / "results.csv")) == 8
    assert pd.read_csv(out / "failures.csv").study_id.tolist() == ["mr_scan"]
    assert not (out / ".staging").exists()


def test_cluster_slot_planning_spreads_over_every_gpu() -> None:
    slots = plan_cluster_slots({"CPU": 16.0, "GPU": 4.0}, cpu_workers=None, gpus=None, per_gpu=2)
    assert [s.num_gpus for s in slots] == [0.5] * 8
    assert sorted({s.gpu_index for s in slots}) == [0, 1, 2, 3]
    mixed = plan_cluster_slots({"CPU": 16.0, "GPU": 1.0}, cpu_workers=3, gpus=None, per_gpu=2)
    assert [s.device for s in mixed] == ["cuda:0", "cuda:0", "cpu", "cpu", "cpu"]
    assert len(plan_cluster_slots({"CPU": 6.0}, cpu_workers=None, gpus=None)) == 6
    with pytest.raises(BackendError, match="has 1"):
        plan_cluster_slots({"CPU": 16.0, "GPU": 1.0}, cpu_workers=0, gpus=2)
    with pytest.raises(BackendError, match="one CPU each"):
        plan_cluster_slots({"CPU": 2.0, "GPU": 2.0}, cpu_workers=0, gpus=None, per_gpu=2)


@pytest.mark.slow
def test_batch_against_a_ray_start_head_cluster_on_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented cluster path: ``ray start --head`` (own process group, ended by its id)."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # loopback test cluster: no token to share
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
         "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        root = tmp_path / "archive"
        lib.make_cases(root, [1, 2, 3, 4])
        (root / "case_002.nii.gz.kill").touch()
        calls = tmp_path / "calls.log"
        pool = RayPool(lib.StatsFactory(str(calls)), f"127.0.0.1:{port}", cpu_workers=2)
        deadline = time.monotonic() + 120
        while True:  # the head takes a while to accept drivers
            try:
                summary = run_batch(discover([root]), tmp_path / "out", pool, display=False)
                break
            except ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        assert (summary.done, summary.retried) == (4, 1)
        assert not ray.is_initialized(), "the pool disconnects the driver it connected"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
