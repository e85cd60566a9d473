"""The batch journal: what is done, so that a batch resumes and a re-run is idempotent.

``OUTDIR/batch_state.jsonl`` is append-only: one JSON record per finished attempt (done or failed),
flushed and fsync'ed before the next study is counted, so a batch killed at any moment loses at
most the studies in flight. The latest record of a study wins; a torn last line (the process died
while writing) is cut off when the journal is next opened. Only one driver may use an output folder at a time (``.batch.lock``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

from osteoscan.errors import InputError

log = logging.getLogger(__name__)

STATE_FILE = "batch_state.jsonl"
LOCK_FILE = ".batch.lock"


@dataclass(frozen=True)
class StudyRecord:
    """One finished attempt of one study (a line of the journal)."""

    study_id: str
    status: str  # "done" or "failed"
    input_path: str
    series_uid: str | None
    stat_signature: str | None
    input_sha256: str | None
    fingerprint: str
    attempts: int
    worker: str | None = None
    device: str | None = None
    error_type: str | None = None
    rejected: bool = False  # input rejected (InputError): not retried while the input is unchanged
    reason: str | None = None
    traceback: str | None = None
    elapsed_s: float | None = None
    input_bytes: int | None = None
    read_ahead: bool = False  # the input had been read (hashed) while the previous study ran
    finished_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class BatchState:
    """The journal of one output folder, locked for the lifetime of the object (use ``with``)."""

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self.path = outdir / STATE_FILE
        self.records: dict[str, StudyRecord] = {}
        self._lock_fh: Any = None
        self._fh: Any = None

    def __enter__(self) -> Self:
        self.outdir.mkdir(parents=True, exist_ok=True)
        self._lock_fh = (self.outdir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise InputError(
                f"{self.outdir} is in use by another osteoscan batch; wait for it or choose another -o folder"
            ) from None
        self._drop_torn_tail()
        self.records = dict(self._read())
        self._fh = self.path.open("a", encoding="utf-8")
        return self

    def _drop_torn_tail(self) -> None:
        """Cut a last record that an interrupted write left without its newline."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        log.warning("%s: dropping an incomplete last record (interrupted batch)", self.path)
        with self.path.open("r+b") as fh:
            fh.truncate(keep)

    def _read(self) -> Iterator[tuple[str, StudyRecord]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = StudyRecord(**json.loads(line))
            except (json.JSONDecodeError, TypeError) as exc:
                raise InputError(
                    f"{self.path}, line {number}: not a batch record ({exc}); the journal is damaged: "
                    "move it away to start the batch afresh"
                ) from None
            yield rec.study_id, rec

    def append(self, record: StudyRecord) -> None:
        """Record a finished attempt durably (flush + fsync) before it counts as done."""
        self._fh.write(record.to_json() + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records[record.study_id] = record

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
