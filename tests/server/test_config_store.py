"""Configuration file and the SQLite job store (claims, recovery after a dead worker or a restart)."""

from __future__ import annotations

import stat
import threading
import tomllib
from pathlib import Path

import pytest

from osteoscan.errors import InputError
from osteoscan.server.config import DEFAULT_TOML, ServerConfig, load_config, resolve_token
from osteoscan.server.store import JobState, JobStore, SendState


def test_documented_defaults_are_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "osteoscan.toml"
    path.write_text(DEFAULT_TOML)
    cfg = load_config(path)
    default = ServerConfig()
    assert cfg.api == default.api and cfg.dicom == default.dicom and cfg.pipeline == default.pipeline
    assert cfg.api.host == "127.0.0.1" and cfg.dicom.host == "127.0.0.1"  # loopback by default
    assert cfg.data_dir == (tmp_path / "osteoscan-data").resolve()  # relative to the config file
    assert tomllib.loads(DEFAULT_TOML)["dicom"]["destination"]["ae_title"] == ""


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[api]\nprot = 1\n')
    with pytest.raises(InputError, match="prot"):
        load_config(path)
    path.write_text('[jobs]\nworkers = -1\n')
    with pytest.raises(InputError, match="jobs.workers"):
        load_config(path)
    path.write_text('[api\n')
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_token_file_is_created_private_and_reused(tmp_path: Path) -> None:
    cfg = ServerConfig().replace(jobs={"data_dir": str(tmp_path)})
    token = resolve_token(cfg)
    path = tmp_path / "api_token"
    assert len(token) >= 32 and path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_token(cfg) == token


def test_claims_are_exclusive_across_connections(tmp_path: Path) -> None:
    stores = [JobStore(tmp_path) for _ in range(4)]
    ids = [stores[0].new_id() for _ in range(40)]
    for i in ids:
        stores[0].create(i, source="upload", input_kind="dicom")
    claimed: list[list[str]] = [[] for _ in stores]

    def grab(k: int) -> None:
        while (job := stores[k].claim(1000 + k)) is not None:
            claimed[k].append(job.id)

    threads = [threading.Thread(target=grab, args=(k,)) for k in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [i for c in claimed for i in c]
    assert sorted(flat) == sorted(ids)  # every job claimed exactly once
    assert stores[0].counts()["running"] == 40


def test_dead_worker_job_is_retried_then_failed(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.create("a1", source="upload", input_kind="dicom")
    job = store.claim(worker_pid=111)
    assert job is not None and job.attempts == 1 and job.state is JobState.RUNNING
    [j] = store.recover_worker(111, max_attempts=2, reason="worker process 111 died (signal 9)")
    assert j.state is JobState.QUEUED and "signal 9" in (j.reason or "")
    assert store.claim(worker_pid=222) is not None
    [j] = store.recover_worker(222, max_attempts=2, reason="worker process 222 died (signal 9)")
    assert j.state is JobState.FAILED and "after 2 attempt(s)" in (j.reason or "")
    # a finish from the dead worker that comes late is ignored
    assert not store.finish("a1", JobState.DONE, worker_pid=222)


def test_restart_recovers_running_jobs_and_sends(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.create("r1", source="dicom", input_kind="dicom")
    store.claim(worker_pid=5)
    store.create("s1", source="dicom", input_kind="dicom")
    store.claim(worker_pid=5)
    store.finish("s1", JobState.DONE, send_state=SendState.PENDING)
    assert store.claim_send().id == "s1"  # type: ignore[union-attr]
    store.close()
    again = JobStore(tmp_path)  # "restart"
    [j] = again.recover_interrupted(max_attempts=3)
    assert j.id == "r1" and j.state is JobState.QUEUED and "restart" in (j.reason or "")
    assert again.requeue_interrupted_sends() == 1
    assert again.get("s1").send_state is SendState.PENDING  # type: ignore[union-attr]


def test_rerun_and_delete_only_when_not_running(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.create("d1", source="upload", input_kind="dicom")
    store.claim(worker_pid=7)
    assert store.rerun("d1") is None and not store.delete("d1")
    store.finish("d1", JobState.FAILED, reason="boom")
    job = store.rerun("d1")
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0 and job.reason is None
    assert store.delete("d1") and store.get("d1") is None
    with pytest.raises(KeyError):
        store.job_dir("../etc")


def test_serve_print_config_prints_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from osteoscan.cli import main

    assert main(["serve", "--print-config"]) == 0
    assert capsys.readouterr().out == DEFAULT_TOML
