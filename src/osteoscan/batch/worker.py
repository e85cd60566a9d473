"""The code that runs inside every worker (local process or Ray actor): one study, isolated.

``StudyWorker.process`` never raises for a bad study: every failure becomes a ``StudyOutcome`` with
the error's type and message, so one study can never stop the batch. Only the death of the worker
process itself (killed, out of memory, a crash in native code) escapes, and the driver retries the
study on a fresh worker.

Read-ahead: with each study the driver names the one that will follow (``hint``). The worker hashes
the hinted study's files in a background thread while the current one is screened, so the next
input is read from disk (and is in the page cache for decoding) while the models compute.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osteoscan.batch.hashing import content_sha256
from osteoscan.batch.processor import ProcessorFactory
from osteoscan.batch.tasks import StudyTask
from osteoscan.errors import InputError, OsteoscanError

log = logging.getLogger(__name__)

DONE = "done"
FAILED = "failed"
UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Dispatch:
    """One attempt at one study, as sent to a worker.

    ``staging_dir``: where to write the outputs (a fresh folder on storage the driver can see); when
    None the worker writes to a private temporary folder and returns the files' bytes to the driver
    (clusters without shared storage). ``known_sha256``: the input hash of an earlier finished run;
    if the content still hashes to it, the study is reported unchanged and not recomputed.
    """

    task: StudyTask
    attempt: int = 1
    staging_dir: str | None = None
    known_sha256: str | None = None


@dataclass
class StudyOutcome:
    """What a worker reports about one attempt (plain data: crosses process and Ray boundaries)."""

    study_id: str
    status: str  # DONE, FAILED or UNCHANGED
    attempt: int
    worker: str
    device: str
    input_sha256: str | None = None
    input_bytes: int = 0
    error_type: str | None = None
    rejected: bool = False  # the input was rejected (InputError): retrying the same input is pointless
    reason: str | None = None
    traceback: str | None = None
    result: dict[str, Any] | None = None
    staging_dir: str | None = None
    files: dict[str, bytes] | None = None
    hash_s: float = 0.0
    process_s: float = 0.0
    read_ahead: bool = False
    pid: int = field(default_factory=os.getpid)


class StudyWorker:
    """Holds one processor (warm models) and screens studies one at a time."""

    def __init__(self, factory: ProcessorFactory, device: str, name: str) -> None:
        self.name = name
        self.device = device
        self.processor = factory(device)
        self.fingerprint: str = self.processor.fingerprint
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-readahead")
        self._ahead: dict[str, Future] = {}

    def read_ahead(self, task: StudyTask) -> None:
        """Start hashing (reading) ``task``'s input in the background.

        A hint is consumed by the very next ``process`` call; one still here now went to another
        worker (the driver rebalances at the end of a batch) and is dropped.
        """
        self._ahead = {k: f for k, f in self._ahead.items() if k == task.study_id}
        if task.study_id not in self._ahead:
            self._ahead[task.study_id] = self._io.submit(content_sha256, task)

    def _input_hash(self, task: StudyTask) -> tuple[str, int, bool]:
        future = self._ahead.pop(task.study_id, None)
        if future is not None:
            digest, nbytes = future.result()
            return digest, nbytes, True
        digest, nbytes = content_sha256(task)
        return digest, nbytes, False

    def _failure(self, job: Dispatch, exc: BaseException, internal: bool, **kw: Any) -> StudyOutcome:
        reason = str(exc) or type(exc).__name__
        tb = "".join(traceback.format_exception(exc)) if internal else None
        if internal:
            log.error("study %s: internal error on %s: %s\n%s", job.task.study_id, self.name, reason, tb)
        else:
            log.warning("study %s rejected: %s", job.task.study_id, reason)
        return StudyOutcome(
            study_id=job.task.study_id,
            status=FAILED,
            attempt=job.attempt,
            worker=self.name,
            device=self.device,
            error_type=type(exc).__name__,
            rejected=isinstance(exc, InputError),
            reason=reason,
            traceback=tb,
            **kw,
        )

    def process(self, job: Dispatch, hint: StudyTask | None = None) -> StudyOutcome:
        """Screen one study; every failure is returned, not raised (see module docstring)."""
        task = job.task
        t0 = time.perf_counter()
        try:
            digest, nbytes, ahead = self._input_hash(task)
        except OsteoscanError as exc:
            if hint is not None:
                self.read_ahead(hint)
            return self._failure(job, exc, internal=not isinstance(exc, InputError))
        except OSError as exc:  # an I/O error not already named by hashing (e.g. a vanished mount)
            return self._failure(job, InputError(f"{task.input_path}: {exc}"), internal=False)
        hash_s = time.perf_counter() - t0
        if hint is not None:
            self.read_ahead(hint)
        common = {"input_sha256": digest, "input_bytes": nbytes, "hash_s": hash_s, "read_ahead": ahead}
        if job.known_sha256 is not None and job.known_sha256 == digest:
            return StudyOutcome(
                study_id=task.study_id, status=UNCHANGED, attempt=job.attempt, worker=self.name,
                device=self.device, **common,
            )
        ship = job.staging_dir is None
        outdir = Path(tempfile.mkdtemp(prefix=f"osteoscan-{task.study_id}-")) if ship else Path(job.staging_dir)
        outdir.mkdir(parents=True, exist_ok=True)
        t1 = time.perf_counter()
        try:
            try:
                result = self.processor.process(task, outdir)
            except OsteoscanError as exc:
                return self._failure(job, exc, internal=not isinstance(exc, InputError), **common)
            except Exception as exc:  # noqa: BLE001 - isolation: any bug is this study's failure, recorded
                return self._failure(job, exc, internal=True, **common)
            if not (outdir / "result.json").is_file():
                result.to_json(outdir / "result.json")
            files = _read_tree(outdir) if ship else None
        finally:
            if ship:
                shutil.rmtree(outdir, ignore_errors=True)
        return StudyOutcome(
            study_id=task.study_id,
            status=DONE,
            attempt=job.attempt,
            worker=self.name,
            device=self.device,
            result=result.to_dict(),
            staging_dir=None if ship else str(outdir),
            files=files,
            process_s=time.perf_counter() - t1,
            **common,
        )

    def close(self) -> None:
        self._io.shutdown(wait=False, cancel_futures=True)


def _read_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` as relative POSIX path -> bytes (outputs shipped to the driver)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
