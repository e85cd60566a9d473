"""The batch driver: decide what to run, stream studies to the workers, record every outcome.

Guarantees (tested in tests/batch):

* **idempotent**: a study whose latest record is "done" with the same model fingerprint is not
  recomputed: skipped outright when its files' stat signature is unchanged, or after the worker
  confirms the content hash when only the stat signature changed;
* **resumable**: every finished attempt is journaled durably before it counts (state.py); an
  interrupted batch re-run continues with what is missing;
* **isolated**: a study's failure is recorded (failures.csv) and the batch goes on; a worker that
  dies is replaced and its study retried (``max_attempts`` attempts in all);
* **atomic outputs**: a study's folder appears under ``studies/`` only when complete (written to a
  staging folder, then renamed), so a half-written study is never mistaken for a finished one.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from osteoscan.batch.backend import Backend, Finished, SlotDied, SlotFailed, SlotReady
from osteoscan.batch.hashing import stat_signature
from osteoscan.batch.progress import Progress, ProgressDisplay
from osteoscan.batch.state import BatchState, StudyRecord, utc_now
from osteoscan.batch.tables import STUDIES_DIR, write_tables
from osteoscan.batch.tasks import StudyTask
from osteoscan.batch.worker import DONE, FAILED, UNCHANGED, Dispatch, StudyOutcome
from osteoscan.errors import BackendError, InputError

log = logging.getLogger(__name__)

STAGING_DIR = ".staging"
#: Attempts per study when its worker dies (a study that kills its worker every time is failed).
DEFAULT_MAX_ATTEMPTS = 3
#: Threads stat-ing inputs before the run (stat is I/O-bound: network file systems reward parallelism).
_STAT_THREADS = 8
#: How long the driver waits for events per loop turn (s).
_POLL_S = 0.5
#: Tables are rewritten at least this often during a long batch (s), so they can be watched.
TABLES_EVERY_S = 600.0


@dataclass
class BatchSummary:
    """What one ``run_batch`` call did."""

    outdir: Path
    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    unchanged: int = 0
    retried: int = 0
    processed: list[str] = field(default_factory=list)  # study ids screened (not skipped) in this run
    elapsed_s: float = 0.0
    cases_per_hour: float | None = None
    tables: dict[str, int] = field(default_factory=dict)
    fingerprint: str | None = None


@dataclass
class _SlotState:
    job: Dispatch | None = None
    reserved: Dispatch | None = None  # the slot's next study (its read-ahead hint)


class _Driver:
    def __init__(
        self,
        tasks: Sequence[StudyTask],
        outdir: Path,
        backend: Backend,
        state: BatchState,
        max_attempts: int,
        retry_failed: bool,
        on_record: Callable[[StudyRecord], None] | None,
        display: bool | None,
    ) -> None:
        self.tasks = list(tasks)
        self.outdir = outdir
        self.backend = backend
        self.state = state
        self.max_attempts = max_attempts
        self.retry_failed = retry_failed
        self.on_record = on_record
        self.progress = Progress(total=len(self.tasks))
        self.display = ProgressDisplay(self.progress, enabled=display)
        self.summary = BatchSummary(outdir=outdir, total=len(self.tasks))
        self.staging = outdir / STAGING_DIR
        self.fingerprint: str | None = None
        self.slots: dict[str, _SlotState] = {}
        self.alive: set[str] = set()
        self.queue: deque[Dispatch] = deque()
        self.signatures: dict[str, str | InputError] = {}
        self.n_slots = 0
        self.failed_slots: set[str] = set()

    # -- set-up -----------------------------------------------------------------------------
    def _signatures(self) -> None:
        def sig(task: StudyTask) -> tuple[str, str | InputError]:
            try:
                return task.study_id, stat_signature(task)
            except InputError as exc:
                return task.study_id, exc

        with ThreadPoolExecutor(_STAT_THREADS) as pool:
            self.signatures = dict(pool.map(sig, self.tasks))

    def _on_ready(self, ev: SlotReady) -> None:
        if self.fingerprint is None:
            self.fingerprint = ev.fingerprint
            log.info("model fingerprint %s (from worker %s)", ev.fingerprint, ev.slot)
        elif ev.fingerprint != self.fingerprint:
            raise BackendError(
                f"worker {ev.slot} on {ev.host} loaded other models (fingerprint {ev.fingerprint}, others "
                f"{self.fingerprint}); give every node the same osteoscan version and weights"
            )
        self.slots.setdefault(ev.slot, _SlotState())
        self.alive.add(ev.slot)
        self.progress.start_clock()

    def _wait_first_worker(self, names: list[str]) -> None:
        pending = set(names)
        failures: list[str] = []
        while self.fingerprint is None:
            for ev in self.backend.poll(_POLL_S):
                if isinstance(ev, SlotReady):
                    self._on_ready(ev)
                elif isinstance(ev, SlotFailed):
                    pending.discard(ev.slot)
                    self.failed_slots.add(ev.slot)
                    failures.append(f"{ev.slot}: {ev.reason}")
            if not pending:
                raise BackendError("no worker could start: " + " | ".join(failures))

    def _plan(self) -> None:
        """Decide for each study: skip, dispatch, or (missing input) fail now."""
        assert self.fingerprint is not None
        for task in self.tasks:
            sig = self.signatures[task.study_id]
            rec = self.state.records.get(task.study_id)
            same_models = rec is not None and rec.fingerprint == self.fingerprint
            have_result = (self.outdir / STUDIES_DIR / task.study_id / "result.json").is_file()
            if isinstance(sig, InputError):
                if same_models and rec.status == DONE and have_result:
                    # an unmounted archive must not turn finished studies into failures
                    log.warning("study %s: %s; keeping its earlier result", task.study_id, sig)
                    self.progress.skipped += 1
                    self.summary.skipped += 1
                    continue
                self._record_failure(task, Dispatch(task), error_type=type(sig).__name__, reason=str(sig), rejected=True)
                continue
            if same_models and rec.status == DONE and have_result:
                if rec.stat_signature == sig and rec.input_path == task.input_path:
                    self.progress.skipped += 1
                    self.summary.skipped += 1
                    continue
                self.queue.append(Dispatch(task, known_sha256=rec.input_sha256))
                continue
            if same_models and rec.status == FAILED and rec.rejected and rec.stat_signature == sig and not self.retry_failed:
                log.info("study %s: input rejected before and unchanged (%s); not retried", task.study_id, rec.reason)
                self.progress.skipped += 1
                self.summary.skipped += 1
                continue
            self.queue.append(Dispatch(task))
        log.info(
            "%d studies: %d to screen, %d already done or rejected (skipped)",
            len(self.tasks), len(self.queue), self.summary.skipped,
        )

    # -- the loop ---------------------------------------------------------------------------
    def _next_job(self, name: str) -> Dispatch | None:
        st = self.slots[name]
        job, st.reserved = st.reserved, None
        if job is None and self.queue:
            job = self.queue.popleft()
        if job is None:  # the queue is empty: take another busy slot's reserved study
            for other in self.slots.values():
                if other.reserved is not None:
                    job, other.reserved = other.reserved, None
                    break
        if job is not None and self.queue:
            st.reserved = self.queue.popleft()
        return job

    def _assign(self) -> None:
        for name in sorted(self.alive):
            st = self.slots[name]
            if st.job is not None:
                continue
            job = self._next_job(name)
            if job is None:
                return
            if self.backend.shared_storage:
                staging = self.staging / f"{job.task.study_id}.{job.attempt}"
                shutil.rmtree(staging, ignore_errors=True)
                job = dataclasses.replace(job, staging_dir=str(staging))
            st.job = job
            self.backend.submit(name, job, st.reserved.task if st.reserved else None)

    def _busy(self) -> bool:
        return bool(self.queue) or any(s.job or s.reserved for s in self.slots.values())

    def run(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        last_tables = time.monotonic()
        with self.display:
            while self._busy():
                if len(self.failed_slots) >= self.n_slots:
                    raise BackendError("every worker failed; see the log for the reasons")
                self._assign()
                for ev in self.backend.poll(_POLL_S):
                    self._handle(ev)
                if time.monotonic() - last_tables > TABLES_EVERY_S:
                    write_tables(self.outdir, self.state.records)
                    last_tables = time.monotonic()

    def _handle(self, ev: object) -> None:
        if isinstance(ev, SlotReady):
            self._on_ready(ev)
        elif isinstance(ev, SlotFailed):
            self.alive.discard(ev.slot)
            self.failed_slots.add(ev.slot)
            self._requeue_slot(ev.slot, ev.reason, count_attempt=False)
        elif isinstance(ev, SlotDied):
            self.alive.discard(ev.slot)
            self._requeue_slot(ev.slot, ev.reason, count_attempt=True)
        elif isinstance(ev, Finished):
            st = self.slots[ev.slot]
            job, st.job = st.job, None
            if job is None or job.task.study_id != ev.outcome.study_id:
                log.error("unexpected outcome for %s from %s; ignored", ev.outcome.study_id, ev.slot)
                return
            self._on_outcome(job, ev.outcome)

    def _requeue_slot(self, name: str, reason: str, count_attempt: bool) -> None:
        st = self.slots.setdefault(name, _SlotState())
        if st.reserved is not None:
            self.queue.appendleft(st.reserved)
            st.reserved = None
        job, st.job = st.job, None
        if job is None:
            return
        if count_attempt and job.attempt >= self.max_attempts:
            self._record_failure(
                job.task, job, error_type="WorkerDied",
                reason=f"{reason} on each of {job.attempt} attempts; the study may exhaust memory or crash a library",
                rejected=False,
            )
            return
        nxt = dataclasses.replace(job, attempt=job.attempt + 1 if count_attempt else job.attempt, staging_dir=None)
        self.progress.retried += 1
        self.summary.retried += 1
        log.warning("study %s: %s; retrying (attempt %d of %d)", job.task.study_id, reason, nxt.attempt, self.max_attempts)
        self.queue.appendleft(nxt)

    # -- outcomes ---------------------------------------------------------------------------
    def _install(self, job: Dispatch, outcome: StudyOutcome) -> None:
        """Move the finished study's outputs into studies/<id> atomically (replacing an old run)."""
        sid = job.task.study_id
        if outcome.staging_dir is not None:
            src = Path(outcome.staging_dir)
        else:  # shipped back by a worker without shared storage: the driver writes the files
            src = self.staging / f"{sid}.{job.attempt}"
            shutil.rmtree(src, ignore_errors=True)
            for rel, data in (outcome.files or {}).items():
                target = src / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        dest = self.outdir / STUDIES_DIR / sid
        dest.parent.mkdir(parents=True, exist_ok=True)
        old = self.staging / f"{sid}.old"
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            dest.rename(old)
        src.rename(dest)
        shutil.rmtree(old, ignore_errors=True)

    def _append(self, record: StudyRecord) -> None:
        self.state.append(record)
        if self.on_record is not None:
            self.on_record(record)

    def _record_failure(self, task: StudyTask, job: Dispatch, *, error_type: str, reason: str, rejected: bool,
                        outcome: StudyOutcome | None = None) -> None:
        sig = self.signatures.get(task.study_id)
        self._append(
            StudyRecord(
                study_id=task.study_id,
                status=FAILED,
                input_path=task.input_path,
                series_uid=task.series_uid,
                stat_signature=sig if isinstance(sig, str) else None,
                input_sha256=outcome.input_sha256 if outcome else None,
                fingerprint=self.fingerprint or "",
                attempts=job.attempt,
                worker=outcome.worker if outcome else None,
                device=outcome.device if outcome else None,
                error_type=error_type,
                rejected=rejected,
                reason=reason,
                traceback=outcome.traceback if outcome else None,
                elapsed_s=(outcome.hash_s + outcome.process_s) if outcome else None,
                finished_at=utc_now(),
            )
        )
        self.progress.failed += 1
        self.summary.failed += 1
        self.display.update(f"{task.study_id} failed: {error_type}: {reason}")

    def _on_outcome(self, job: Dispatch, outcome: StudyOutcome) -> None:
        task = job.task
        if outcome.status == FAILED:
            if outcome.staging_dir:
                shutil.rmtree(outcome.staging_dir, ignore_errors=True)
            self.summary.processed.append(task.study_id)
            self._record_failure(task, job, error_type=outcome.error_type or "Error", reason=outcome.reason or "",
                                 rejected=outcome.rejected, outcome=outcome)
            return
        sig = self.signatures[task.study_id]
        if outcome.status == UNCHANGED:
            prev = self.state.records[task.study_id]
            self._append(
                dataclasses.replace(
                    prev, stat_signature=sig if isinstance(sig, str) else None, input_path=task.input_path,
                    series_uid=task.series_uid,
                )
            )
            self.progress.skipped += 1
            self.summary.skipped += 1
            self.summary.unchanged += 1
            self.display.update(f"{task.study_id} unchanged (same content)")
            return
        self._install(job, outcome)
        self._append(
            StudyRecord(
                study_id=task.study_id,
                status=DONE,
                input_path=task.input_path,
                series_uid=task.series_uid,
                stat_signature=sig if isinstance(sig, str) else None,
                input_sha256=outcome.input_sha256,
                fingerprint=self.fingerprint or "",
                attempts=job.attempt,
                worker=outcome.worker,
                device=outcome.device,
                elapsed_s=round(outcome.hash_s + outcome.process_s, 3),
                input_bytes=outcome.input_bytes,
                read_ahead=outcome.read_ahead,
                finished_at=utc_now(),
            )
        )
        self.summary.processed.append(task.study_id)
        self.progress.done += 1
        self.summary.done += 1
        self.display.update(f"{task.study_id} done in {outcome.process_s:.1f} s on {outcome.worker}")


def run_batch(
    tasks: Sequence[StudyTask],
    outdir: str | Path,
    backend: Backend,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    retry_failed: bool = False,
    on_record: Callable[[StudyRecord], None] | None = None,
    display: bool | None = None,
) -> BatchSummary:
    """Screen ``tasks`` into ``outdir`` on ``backend`` (started and closed here); write the tables.

    ``on_record`` is called after each journal record (a hook for monitoring). Tables are written
    even when the run is interrupted (KeyboardInterrupt is re-raised after).

    Raises:
        InputError: the output folder is in use by another batch, or a study id is duplicated.
        BackendError: no worker could start, or workers disagree on the models.
    """
    ids = [t.study_id for t in tasks]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(f"study ids must be unique within a batch; repeated: {', '.join(dupes[:10])}")
    if max_attempts < 1:
        raise InputError(f"max_attempts must be >= 1, got {max_attempts}")
    outdir = Path(outdir).resolve()
    t0 = time.monotonic()
    with BatchState(outdir) as state:
        shutil.rmtree(outdir / STAGING_DIR, ignore_errors=True)  # leftovers of an interrupted run
        driver = _Driver(tasks, outdir, backend, state, max_attempts, retry_failed, on_record, display)
        driver._signatures()
        try:
            names = backend.start()
            driver.n_slots = len(names)
            driver._wait_first_worker(names)
            driver.summary.fingerprint = driver.fingerprint
            driver._plan()
            driver.run()
        finally:
            backend.close()
            driver.summary.elapsed_s = time.monotonic() - t0
            driver.summary.cases_per_hour = driver.progress.cases_per_hour()
            driver.summary.tables = write_tables(outdir, state.records)
            shutil.rmtree(outdir / STAGING_DIR, ignore_errors=True)
        log.info("batch finished: %s; tables in %s", driver.progress.line(), outdir)
        return driver.summary
