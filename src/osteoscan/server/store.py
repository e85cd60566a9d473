"""The durable job table: SQLite in WAL mode, shared by the API process and the worker processes.

Why SQLite: one file, crash-safe, readable by many processes while one writes (WAL), no server to run
on the edge box. Every state change is one short transaction; a worker claims the oldest queued job
with ``BEGIN IMMEDIATE`` so two workers never get the same job.

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` (reason) | ``rejected`` (reason).
A ``running`` job whose worker died is put back to ``queued`` (attempts left) or ``failed`` with the
reason, both by the live supervisor and on a restart (:meth:`JobStore.recover_interrupted`).
Results of DICOM-received studies have a separate send state: ``none`` | ``pending`` | ``sending`` |
``sent`` | ``failed`` (reason).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

#: How long a writer waits for the database lock before failing (ms); workers write rarely.
BUSY_TIMEOUT_MS = 30_000


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    REJECTED = "rejected"

    @property
    def final(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.REJECTED)


class SendState(str, Enum):
    NONE = "none"
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    """One row of the job table (times are UNIX seconds)."""

    id: str
    state: JobState
    source: str  # "upload" or "dicom"
    input_kind: str  # "dicom", "nifti"
    created_at: float
    updated_at: float
    reason: str | None = None
    attempts: int = 0
    progress: float = 0.0
    stage: str | None = None
    worker_pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    calling_aet: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    patient_id: str | None = None
    description: str | None = None
    n_files: int = 0
    patient_height_cm: float | None = None
    patient_sex: str | None = None
    patient_age: float | None = None
    summary: dict[str, Any] | None = None
    send_state: SendState = SendState.NONE
    send_reason: str | None = None
    send_attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        d["send_state"] = self.send_state.value
        return d


_COLUMNS: dict[str, str] = {
    "id": "TEXT PRIMARY KEY",
    "state": "TEXT NOT NULL",
    "source": "TEXT NOT NULL",
    "input_kind": "TEXT NOT NULL",
    "created_at": "REAL NOT NULL",
    "updated_at": "REAL NOT NULL",
    "reason": "TEXT",
    "attempts": "INTEGER NOT NULL DEFAULT 0",
    "progress": "REAL NOT NULL DEFAULT 0",
    "stage": "TEXT",
    "worker_pid": "INTEGER",
    "started_at": "REAL",
    "finished_at": "REAL",
    "calling_aet": "TEXT",
    "study_uid": "TEXT",
    "series_uid": "TEXT",
    "patient_id": "TEXT",
    "description": "TEXT",
    "n_files": "INTEGER NOT NULL DEFAULT 0",
    "patient_height_cm": "REAL",
    "patient_sex": "TEXT",
    "patient_age": "REAL",
    "summary": "TEXT",
    "send_state": "TEXT NOT NULL DEFAULT 'none'",
    "send_reason": "TEXT",
    "send_attempts": "INTEGER NOT NULL DEFAULT 0",
}


def _row_to_job(row: sqlite3.Row) -> Job:
    d = dict(row)
    d["state"] = JobState(d["state"])
    d["send_state"] = SendState(d["send_state"])
    d["summary"] = json.loads(d["summary"]) if d["summary"] else None
    return Job(**d)


class JobStore:
    """The job table in ``<data_dir>/jobs.sqlite3``; one instance per process (thread-safe)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.jobs_dir = self.data_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "jobs.sqlite3"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cols = ", ".join(f"{k} {v}" for k, v in _COLUMNS.items())
        self._db.execute(f"CREATE TABLE IF NOT EXISTS jobs ({cols})")
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created_at)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that takes the database write lock at once (no upgrade deadlocks)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- paths -------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        if not job_id.isalnum():  # ids are hex: refuse anything that could walk out of jobs/
            raise KeyError(job_id)
        return self.jobs_dir / job_id

    def input_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "input"

    def output_dir(self, job_id: str) -> Path:
        """The final outputs; present only once complete (renamed into place from a temp dir)."""
        return self.job_dir(job_id) / "out"

    # ---- create / read -----------------------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex[:16]

    def create(self, job_id: str, *, source: str, input_kind: str, state: JobState = JobState.QUEUED,
               **fields: Any) -> Job:
        now = time.time()
        if "summary" in fields and fields["summary"] is not None:
            fields["summary"] = json.dumps(fields["summary"])
        values = {"id": job_id, "state": state.value, "source": source, "input_kind": input_kind,
                  "created_at": now, "updated_at": now, **fields}
        if state.final:
            values.setdefault("finished_at", now)
        unknown = set(values) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job field(s) {sorted(unknown)}")
        with self._tx() as db:
            db.execute(
                f"INSERT INTO jobs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                tuple(v.value if isinstance(v, Enum) else v for v in values.values()),
            )
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row_to_job(row) if row else None

    def list(self, state: JobState | None = None, limit: int = 200, offset: int = 0) -> list[Job]:
        with self._lock:
            if state is None:
                rows = self._db.execute(
                    "SELECT * FROM jobs ORDER BY created_at DESC LIMIT ? OFFSET ?", (limit, offset)
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM jobs WHERE state = ? ORDER BY created_at DESC LIMIT ? OFFSET ?",
                    (state.value, limit, offset),
                ).fetchall()
        return [_row_to_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts = {s.value: 0 for s in JobState}
        counts.update({r[0]: r[1] for r in rows})
        return counts

    def send_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT send_state, COUNT(*) FROM jobs GROUP BY send_state").fetchall()
        counts = {s.value: 0 for s in SendState}
        counts.update({r[0]: r[1] for r in rows})
        return counts

    def durations(self) -> list[float]:
        """Run times (s) of the finished jobs that ran, for the metrics endpoint."""
        with self._lock:
            rows = self._db.execute(
                "SELECT finished_at - started_at FROM jobs WHERE state IN ('done', 'failed') "
                "AND started_at IS NOT NULL AND finished_at IS NOT NULL"
            ).fetchall()
        return [float(r[0]) for r in rows]

    # ---- transitions -------------------------------------------------------------------------
    def claim(self, worker_pid: int) -> Job | None:
        """Atomically take the oldest queued job for ``worker_pid`` (state -> running)."""
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at, rowid LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = 'running', worker_pid = ?, attempts = attempts + 1, progress = 0, "
                "stage = 'starting', reason = NULL, started_at = ?, updated_at = ? WHERE id = ?",
                (worker_pid, now, now, row[0]),
            )
        return self.get(row[0])

    def set_progress(self, job_id: str, progress: float, stage: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET progress = ?, stage = ?, updated_at = ? WHERE id = ? AND state = 'running'",
                (max(0.0, min(1.0, progress)), stage, time.time(), job_id),
            )

    def update_fields(self, job_id: str, **fields: Any) -> None:
        """Set descriptive fields (study UID, patient ID, ...) found while reading the input."""
        unknown = set(fields) - set(_COLUMNS)
        if unknown or not fields:
            raise ValueError(f"unknown or no job field(s) {sorted(unknown)}")
        with self._tx() as db:
            db.execute(
                f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in fields)}, updated_at = ? WHERE id = ?",
                (*fields.values(), time.time(), job_id),
            )

    def finish(self, job_id: str, state: JobState, *, reason: str | None = None,
               summary: dict[str, Any] | None = None, send_state: SendState | None = None,
               worker_pid: int | None = None) -> bool:
        """End a running job. With ``worker_pid``, only if that worker still owns it.

        Returns False when the job was no longer running for that worker (for example the supervisor
        already failed it because the worker was presumed dead).
        """
        if not state.final:
            raise ValueError(f"{state} is not a final state")
        now = time.time()
        sql = ("UPDATE jobs SET state = ?, reason = ?, summary = COALESCE(?, summary), progress = ?, "
               "stage = NULL, finished_at = ?, updated_at = ?, send_state = COALESCE(?, send_state) "
               "WHERE id = ? AND state = 'running'")
        args: list[Any] = [state.value, reason, json.dumps(summary) if summary is not None else None,
                           1.0 if state is JobState.DONE else 0.0, now, now,
                           send_state.value if send_state else None, job_id]
        if worker_pid is not None:
            sql += " AND worker_pid = ?"
            args.append(worker_pid)
        with self._tx() as db:
            return db.execute(sql, args).rowcount == 1

    def _recover(self, where: str, args: tuple[Any, ...], max_attempts: int, reason: str) -> list[Job]:
        now = time.time()
        with self._tx() as db:
            rows = db.execute(f"SELECT id, attempts FROM jobs WHERE state = 'running' AND {where}",
                              args).fetchall()
            for job_id, attempts in rows:
                if attempts < max_attempts:
                    db.execute(
                        "UPDATE jobs SET state = 'queued', worker_pid = NULL, progress = 0, stage = NULL, "
                        "reason = ?, updated_at = ? WHERE id = ?",
                        (f"retrying: {reason}", now, job_id),
                    )
                else:
                    db.execute(
                        "UPDATE jobs SET state = 'failed', worker_pid = NULL, progress = 0, stage = NULL, "
                        "reason = ?, finished_at = ?, updated_at = ? WHERE id = ?",
                        (f"{reason} (after {attempts} attempt(s))", now, now, job_id),
                    )
        return [j for j in (self.get(r[0]) for r in rows) if j is not None]

    def recover_worker(self, worker_pid: int, max_attempts: int, reason: str) -> list[Job]:
        """The jobs of a dead worker: back to the queue, or failed once out of attempts."""
        return self._recover("worker_pid = ?", (worker_pid,), max_attempts, reason)

    def recover_interrupted(self, max_attempts: int) -> list[Job]:
        """At start-up: every job still marked running was interrupted by the previous shutdown."""
        return self._recover("1 = 1", (), max_attempts, "interrupted by a service restart")

    def rerun(self, job_id: str) -> Job | None:
        """Queue a finished job again (attempts reset); None if it does not exist or is not final."""
        now = time.time()
        with self._tx() as db:
            n = db.execute(
                "UPDATE jobs SET state = 'queued', reason = NULL, attempts = 0, progress = 0, stage = NULL, "
                "started_at = NULL, finished_at = NULL, summary = NULL, send_state = 'none', "
                "send_reason = NULL, send_attempts = 0, updated_at = ? "
                "WHERE id = ? AND state IN ('done', 'failed', 'rejected')",
                (now, job_id),
            ).rowcount
        return self.get(job_id) if n else None

    def delete(self, job_id: str) -> bool:
        """Remove a job that is not running (its folder is removed by the caller)."""
        with self._tx() as db:
            return db.execute("DELETE FROM jobs WHERE id = ? AND state != 'running'", (job_id,)).rowcount == 1

    # ---- sending results back ----------------------------------------------------------------
    def claim_send(self) -> Job | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE send_state = 'pending' ORDER BY finished_at LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET send_state = 'sending', updated_at = ? WHERE id = ?",
                       (time.time(), row[0]))
        return self.get(row[0])

    def set_send(self, job_id: str, state: SendState, reason: str | None, attempts: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET send_state = ?, send_reason = ?, send_attempts = ?, updated_at = ? "
                "WHERE id = ?",
                (state.value, reason, attempts, time.time(), job_id),
            )

    def requeue_interrupted_sends(self) -> int:
        """At start-up: a send cut off by a shutdown is tried again."""
        with self._tx() as db:
            return db.execute(
                "UPDATE jobs SET send_state = 'pending' WHERE send_state = 'sending'"
            ).rowcount
