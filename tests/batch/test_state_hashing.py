"""Input identity (stat signature, content hash), the journal, slot planning, progress."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from osteoscan.batch.devices import default_local_slots, parse_gpus, plan_slots
from osteoscan.batch.hashing import content_sha256, stat_signature
from osteoscan.batch.progress import Progress
from osteoscan.batch.state import STATE_FILE, BatchState, StudyRecord
from osteoscan.batch.tasks import StudyTask
from osteoscan.errors import InputError


def _study(root: Path) -> StudyTask:
    (root / "s1").mkdir(parents=True)
    for i in range(3):
        (root / "s1" / f"IM{i}").write_bytes(bytes([i]) * 1000)
    return StudyTask(study_id="s1", input_path=str(root / "s1"))


def test_stat_signature_and_content_hash(tmp_path: Path) -> None:
    task = _study(tmp_path)
    sig, (digest, nbytes) = stat_signature(task), content_sha256(task)
    assert nbytes == 3000
    os.utime(tmp_path / "s1" / "IM1", ns=(5, 5))
    assert stat_signature(task) != sig, "a touched file changes the cheap signature"
    assert content_sha256(task)[0] == digest, "but not the content hash"
    (tmp_path / "s1" / "IM1").write_bytes(b"\x07" * 1000)
    assert content_sha256(task)[0] != digest
    renamed = tmp_path / "s1" / "IM9"
    (tmp_path / "s1" / "IM2").rename(renamed)
    assert content_sha256(task)[0] != digest, "file names are part of the hash"
    # a series pinned in a shared folder hashes only its files, and its UID
    pinned = StudyTask(study_id="p", input_path=task.input_path, files=(str(renamed),), series_uid="1.2.3")
    other = StudyTask(study_id="p", input_path=task.input_path, files=(str(renamed),), series_uid="1.2.4")
    assert content_sha256(pinned)[1] == 1000 and content_sha256(pinned)[0] != content_sha256(other)[0]
    with pytest.raises(InputError, match="not found"):
        stat_signature(StudyTask(study_id="x", input_path=str(tmp_path / "gone")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no files"):
        content_sha256(StudyTask(study_id="e", input_path=str(tmp_path / "empty")))


def _rec(sid: str, status: str = "done") -> StudyRecord:
    return StudyRecord(study_id=sid, status=status, input_path="/x", series_uid=None, stat_signature="s",
                       input_sha256="h", fingerprint="f", attempts=1)


def test_journal_latest_record_wins_and_survives_a_torn_line(tmp_path: Path) -> None:
    with BatchState(tmp_path) as state:
        state.append(_rec("a", "failed"))
        state.append(_rec("b"))
        state.append(_rec("a"))
    with (tmp_path / STATE_FILE).open("a") as fh:
        fh.write('{"study_id": "c", "stat')  # the driver died mid-write
    with BatchState(tmp_path) as state:
        assert {k: r.status for k, r in state.records.items()} == {"a": "done", "b": "done"}
        state.append(_rec("c"))
    with BatchState(tmp_path) as state:
        assert sorted(state.records) == ["a", "b", "c"]


def test_journal_damage_in_the_middle_is_an_error_and_one_driver_per_folder(tmp_path: Path) -> None:
    with BatchState(tmp_path) as state:
        with pytest.raises(InputError, match="in use by another"):
            BatchState(tmp_path).__enter__()
        state.append(_rec("a"))
    text = (tmp_path / STATE_FILE).read_text()
    (tmp_path / STATE_FILE).write_text("garbage\n" + text)
    with pytest.raises(InputError, match="line 1"):
        BatchState(tmp_path).__enter__()


def test_slots_cover_every_gpu_by_index() -> None:
    slots = plan_slots(1, [0, 1, 2], per_gpu=2)
    assert [s.device for s in slots] == ["cuda:0", "cuda:0", "cuda:1", "cuda:1", "cuda:2", "cuda:2", "cpu"]
    assert len({s.name for s in slots}) == len(slots)
    assert parse_gpus("auto") is None and parse_gpus("none") == [] and parse_gpus("0, 3") == [0, 3]
    with pytest.raises(InputError):
        parse_gpus("first")
    with pytest.raises(InputError, match="no worker"):
        plan_slots(0, [])
    # explicit GPUs: no CPU workers unless asked; no GPUs: one worker per usable core
    assert [s.device for s in default_local_slots(None, [1])] == ["cuda:1", "cuda:1"]
    assert [s.device for s in default_local_slots(None, [])] == ["cpu"] * len(os.sched_getaffinity(0))


def test_progress_rate_and_eta() -> None:
    now = [100.0]
    p = Progress(total=10, skipped=2, _clock=lambda: now[0])
    assert p.cases_per_hour() is None and "ETA --" in p.line()
    p.start_clock()
    now[0] += 60.0
    p.done, p.failed = 3, 1
    assert p.cases_per_hour() == pytest.approx(4 * 60.0)
    assert p.eta_s() == pytest.approx(4 / 240 * 3600)
    assert "6/10 studies" in p.line() and "240.0 cases/h" in p.line() and "ETA 0:01:00" in p.line()
