"""ForkedCall: a writer in a child process gives back its value or its error, and is always joined."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from osteoscan.errors import InputError
from osteoscan.report import parallel
from osteoscan.report.parallel import ChildWriterError, ForkedCall

needs_fork = pytest.mark.skipif(
    "fork" not in parallel.multiprocessing.get_all_start_methods(), reason="no fork on this platform"
)


def _write_and_report(path: Path, array: np.ndarray) -> tuple[int, float]:
    path.write_bytes(array.tobytes())
    return os.getpid(), float(array.sum())


def _fail_with_input_error(name: str) -> None:
    raise InputError(f"{name}: bad input")


class _Unpicklable(Exception):
    def __init__(self, handle: object) -> None:
        super().__init__("cannot travel")
        self.handle = handle


def _fail_unpicklably() -> None:
    raise _Unpicklable(lambda: None)


def _die() -> None:
    os._exit(3)


@needs_fork
def test_child_writes_files_and_returns_its_value(tmp_path: Path) -> None:
    array = np.arange(1000, dtype=np.float64)  # shared copy-on-write, not pickled in
    call = ForkedCall(_write_and_report, tmp_path / "a.bin", array, name="test-writer")
    pid, total = call.result()
    assert pid != os.getpid()  # it really ran in another process
    assert total == float(array.sum())
    assert np.array_equal(np.frombuffer((tmp_path / "a.bin").read_bytes()), array)
    call.close()  # idempotent


@needs_fork
def test_child_errors_are_raised_in_the_parent_with_their_type() -> None:
    with pytest.raises(InputError, match="scan.dcm: bad input"):
        ForkedCall(_fail_with_input_error, "scan.dcm").result()
    with pytest.raises(ChildWriterError, match="cannot travel"):
        ForkedCall(_fail_unpicklably).result()
    with pytest.raises(ChildWriterError, match="exit code 3"):
        ForkedCall(_die, name="dying-writer").result()


def test_without_fork_it_runs_inline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(parallel.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    call = ForkedCall(_write_and_report, tmp_path / "b.bin", np.ones(4))
    assert (tmp_path / "b.bin").exists()  # already written: inline, at construction
    assert call.result() == (os.getpid(), 4.0)
    with pytest.raises(InputError):
        ForkedCall(_fail_with_input_error, "x").result()


@needs_fork
def test_no_fork_when_switched_off_or_off_the_main_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert parallel.fork_allowed()
    monkeypatch.setenv(parallel.FORK_ENV, "0")
    assert not parallel.fork_allowed()
    assert ForkedCall(_write_and_report, tmp_path / "c.bin", np.ones(2)).result()[0] == os.getpid()
    monkeypatch.delenv(parallel.FORK_ENV)
    with ThreadPoolExecutor(max_workers=1) as pool:  # e.g. the batch runner's threads
        pid, _ = pool.submit(lambda: ForkedCall(_write_and_report, tmp_path / "d.bin", np.ones(2)).result()).result()
    assert pid == os.getpid()


def _report_fork_allowed(queue) -> None:
    queue.put(parallel.fork_allowed())


@needs_fork
def test_no_fork_in_a_daemonic_process() -> None:
    """The server's workers are daemonic: multiprocessing would refuse them a child."""
    ctx = parallel.multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_report_fork_allowed, args=(queue,), daemon=True)
    proc.start()
    allowed = queue.get(timeout=30)
    proc.join()
    assert allowed is False
