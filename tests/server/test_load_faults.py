"""Load and restart faults with the real pipeline (slow: run with ``-m slow``).

* 20 studies submitted at once, half by REST upload and half by DICOM C-STORE, all on loopback,
  to a service with 2 workers: every one completes, none is lost, none is mixed up with another.
* The whole service is SIGKILLed mid-job and started again: the interrupted job is retried (or failed
  with the reason) and no partial output is ever visible.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow

N_STUDIES = 20
#: Source cases (seed, preset); each is sent N_STUDIES / len(SOURCES) times under new UIDs and IDs,
#: so a mix-up shows as a result that differs from its source's other copies.
SOURCES = ((21, "lumbar"), (22, "lumbar"), (23, "l3_slice"), (24, "l3_slice"))


#: A modality sending one series by C-STORE, run as its own process (as separate scanners are);
#: SCU timeouts are generous, as PACS are configured, because 2 workers keep both cores busy.
SENDER = """
import sys
import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
port, files = int(sys.argv[1]), sys.argv[2:]
datasets = [pydicom.dcmread(f) for f in files]
ae = AE(ae_title="LOADTEST")
ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = 120
ae.add_requested_context(CTImageStorage, str(datasets[0].file_meta.TransferSyntaxUID))
print("ready", flush=True)
sys.stdin.readline()  # go
assoc = ae.associate("127.0.0.1", port, ae_title="OSTEOSCAN")
assert assoc.is_established, "association refused"
for ds in datasets:
    status = assoc.send_c_store(ds)
    assert getattr(status, "Status", None) == 0, f"C-STORE of {ds.SOPInstanceUID}: {status}"
assoc.release()
"""


def _key_numbers(result: dict) -> str:
    """What must be equal for copies of one source case (and differ between cases)."""
    return json.dumps({"levels": [v["level"] for v in result["vertebrae"]],
                       "bmd": [v["bmd_mg_cm3"] for v in result["vertebrae"]],
                       "composition": result["composition"]}, sort_keys=True)


def test_twenty_studies_by_rest_and_dicom_at_once(serve_factory, request: pytest.FixtureRequest,
                                                   h: ModuleType, tmp_path: Path) -> None:
    extra = h.pipeline_toml(request)
    h.pipeline_or_skip(h.weights_dir_of(extra))
    serve = serve_factory(workers=2, quiet_s=5.0, extra=extra)
    copies = N_STUDIES // len(SOURCES)
    submissions = []  # (patient_id, source index, channel, files)
    for s, (seed, preset) in enumerate(SOURCES):
        for k in range(copies):
            pid = f"LOAD-{s}-{k}"
            files, _ = h.phantom_series(tmp_path / pid, seed=seed, preset=preset, patient_id=pid)
            channel = "rest" if (s * copies + k) % 2 == 0 else "dicom"  # half and half
            submissions.append((pid, s, channel, files))
    errors: list[str] = []
    # what the clients send is prepared beforehand: the test measures the service, not the clients
    zips = {pid: h.zip_of_files(files) for pid, _, ch, files in submissions if ch == "rest"}
    senders = {pid: subprocess.Popen([sys.executable, "-c", SENDER, str(serve.dicom_port), *map(str, files)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for pid, _, ch, files in submissions if ch == "dicom"}
    request.addfinalizer(lambda: [p.kill() for p in senders.values() if p.poll() is None])
    for p in senders.values():
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def upload(pid: str) -> None:
        try:
            r = serve.client.post("/api/v1/studies", files=[("files", (f"{pid}.zip", zips[pid]))])
            assert r.status_code == 202, r.text
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(f"{pid} (rest): {exc!r}")

    t0 = time.perf_counter()
    for p in senders.values():
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    threads = [threading.Thread(target=upload, args=(pid,)) for pid in zips]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for pid, p in senders.items():
        _, err = p.communicate(timeout=600)
        if p.returncode != 0:
            errors.append(f"{pid} (dicom): exit {p.returncode}: {err[-500:]}")
    t_submitted = time.perf_counter() - t0
    assert not errors, errors
    deadline = time.monotonic() + 1800
    while True:
        jobs = serve.jobs()
        if len(jobs) == N_STUDIES and all(j["state"] in ("done", "failed", "rejected") for j in jobs):
            break
        assert time.monotonic() < deadline, f"not finished: {[(j['patient_id'], j['state']) for j in jobs]}"
        time.sleep(1.0)
    elapsed = time.perf_counter() - t0
    by_pid = {j["patient_id"]: j for j in jobs}
    failed = [(j["patient_id"], j["state"], j["reason"]) for j in jobs if j["state"] != "done"]
    run_s = [j["finished_at"] - j["started_at"] for j in jobs if j["started_at"]]
    print(f"\nload: {N_STUDIES} studies ({sum(1 for s in submissions if s[2] == 'rest')} REST, "
          f"{sum(1 for s in submissions if s[2] == 'dicom')} DICOM) submitted in {t_submitted:.1f} s, all final "
          f"after {elapsed:.1f} s with 2 workers; failures: {len(failed)} {failed}; per-job run time "
          f"min/median/max {min(run_s):.1f}/{sorted(run_s)[len(run_s) // 2]:.1f}/{max(run_s):.1f} s")
    assert not failed
    assert sorted(by_pid) == sorted(s[0] for s in submissions), "a study was lost or duplicated"
    numbers: dict[int, set[str]] = {}
    for pid, s, channel, _ in submissions:
        job = by_pid[pid]
        assert job["source"] == ("upload" if channel == "rest" else "dicom")
        result = serve.client.get(f"/api/v1/jobs/{job['id']}/result.json").json()
        assert result["provenance"]["input"]["patient_id"] == pid, "outputs of another study"
        numbers.setdefault(s, set()).add(_key_numbers(result))
    assert all(len(v) == 1 for v in numbers.values()), "copies of one case gave different results"
    assert len({next(iter(v)) for v in numbers.values()}) == len(SOURCES), "different cases gave one result"
    assert serve.client.get("/health").json()["status"] == "ok"


def test_service_killed_mid_job_recovers_on_restart(serve_factory, request: pytest.FixtureRequest,
                                                    h: ModuleType, tmp_path: Path) -> None:
    extra = h.pipeline_toml(request)
    h.pipeline_or_skip(h.weights_dir_of(extra))
    serve = serve_factory(workers=1, extra=extra)
    files, _ = h.phantom_series(tmp_path / "r", seed=31, preset="lumbar", patient_id="RESTART-31")
    job = serve.client.post("/api/v1/studies", files=[("files", ("r.zip", h.zip_of_files(files)))]).json()
    running = serve.wait_job(job["id"], timeout=120, until=lambda j: j["state"] != "queued" and (
        j["state"] != "running" or j["stage"] not in (None, "starting", "loading models", "load")))
    assert running["state"] == "running", f"job finished before the kill: {running}"
    serve.stop(signal.SIGKILL)
    worker = running["worker_pid"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the worker dies with the service (PR_SET_PDEATHSIG)
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        h.kill_quietly(worker)
        pytest.fail(f"worker {worker} outlived the killed service")
    job_dir = serve.root / "data" / "jobs" / job["id"]
    assert not (job_dir / "out").exists(), "partial outputs visible after the crash"
    serve.start()
    final = serve.wait_job(job["id"], timeout=900)
    assert not list(job_dir.glob(".tmp-out-*"))
    if final["state"] == "done":
        assert final["attempts"] == 2 and (job_dir / "out" / "result.json").is_file()
    else:
        assert final["state"] == "failed" and "interrupted by a service restart" in final["reason"]
    print(f"\nservice SIGKILLed at stage {running['stage']!r}; after restart the job is {final['state']} "
          f"(attempts {final['attempts']}, reason {final['reason']!r})")
