"""The bounded worker pool: N processes, each loading the models once and keeping them warm.

Why processes and not threads: inference and DICOM decoding hold the GIL in places, a crashing native
library must not take the API down, and a stuck job can be killed without killing the service.

Each worker claims the oldest queued job from the :class:`~osteoscan.server.store.JobStore`, runs
:meth:`osteoscan.pipeline.Pipeline.run_study` into a temporary folder inside the job folder and, only
when it succeeded, renames that folder to ``out`` (one atomic rename: a reader sees all outputs or
none). ``InputError`` -> ``rejected`` (reason = the error message); anything else -> ``failed``.

The supervisor (in the API process) restarts a dead worker and hands its job back to the queue, or
fails it with the reason once it has used ``max_attempts``.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osteoscan.server.store import Job, JobState, JobStore, SendState

log = logging.getLogger(__name__)

#: How often an idle worker looks for a queued job (s).
POLL_INTERVAL_S = 0.3
#: How often the supervisor checks that the workers are alive (s).
SUPERVISE_INTERVAL_S = 0.5
#: Share of the progress bar before the first stage (job claimed, models loading) and at its end.
PROGRESS_START, PROGRESS_SPAN = 0.02, 0.96
TMP_PREFIX = ".tmp-out-"


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker process needs (picklable: passed to a spawned process)."""

    data_dir: str
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    outputs: tuple[str, ...] = ("json", "html", "pdf", "seg", "sr", "sc", "mesh")
    weights_dir: str = ""  # empty: the shipped models
    send_results: bool = False  # a destination PACS is configured
    retain_inputs: bool = True  # keep the input after success (re-run and viewer slices need it)
    log_level: int = logging.INFO


def summarize(result: Any) -> dict[str, Any]:
    """The key findings shown in the worklist (from a StudyResult)."""
    s = result.summary
    comp = result.composition
    return {
        "bmd_l1_l2_mg_cm3": s.bmd_l1_l2_mg_cm3,
        "acr_category": s.acr_category.value if s.acr_category is not None else None,
        "l1_hu": s.l1_hu,
        "l1_hu_flag": s.l1_hu_flag,
        "fractures": [{"level": f.level, "genant_grade": f.genant_grade} for f in s.fractures],
        "sma_cm2": comp.sma_cm2 if comp is not None else None,
        "smi_cm2_m2": comp.smi_cm2_m2 if comp is not None else None,
        "l3_slice_index": comp.slice_index if comp is not None else None,
        "coverage": list(result.qc.coverage),
        "warnings": list(result.qc.warnings),
        "total_s": round(result.timings_s.get("total", sum(result.timings_s.values())), 2),
    }


class JobRunner:
    """Runs jobs in one worker process; the pipeline is created on first use and then kept."""

    def __init__(self, store: JobStore, settings: WorkerSettings) -> None:
        self.store = store
        self.settings = settings
        self._pipeline: Any = None

    def pipeline(self) -> Any:
        if self._pipeline is None:
            from osteoscan.pipeline import Pipeline, PipelineConfig

            t0 = time.perf_counter()
            self._pipeline = Pipeline(PipelineConfig(
                backend=self.settings.backend, device=self.settings.device,
                precision=self.settings.precision, outputs=tuple(self.settings.outputs),
                weights_dir=Path(self.settings.weights_dir) if self.settings.weights_dir else None,
            ))
            log.info("worker %d: pipeline loaded in %.1f s", os.getpid(), time.perf_counter() - t0)
        return self._pipeline

    def input_path(self, job: Job) -> Path:
        inp = self.store.input_dir(job.id)
        if job.input_kind == "nifti":
            files = [p for p in inp.rglob("*") if p.is_file()]
            if len(files) != 1:
                raise FileNotFoundError(f"job {job.id}: expected one NIfTI file in {inp}, found {len(files)}")
            return files[0]
        return inp

    def run(self, job: Job) -> JobState:
        from osteoscan.errors import InputError

        pid = os.getpid()
        job_dir = self.store.job_dir(job.id)
        tmp = job_dir / f"{TMP_PREFIX}{pid}-{job.attempts}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

        def progress(stage: str, done: float) -> None:  # called by the pipeline as each stage starts
            self.store.set_progress(job.id, PROGRESS_START + PROGRESS_SPAN * done, stage)

        try:
            self.store.set_progress(job.id, 0.01, "loading models" if self._pipeline is None else "starting")
            pipe = self.pipeline()
            result = pipe.run_study(
                self.input_path(job), tmp, series_uid=job.series_uid,
                patient_height_cm=job.patient_height_cm, patient_sex=job.patient_sex,
                patient_age=job.patient_age, progress=progress,
            )
        except InputError as exc:
            log.warning("job %s rejected: %s", job.id, exc)
            shutil.rmtree(tmp, ignore_errors=True)
            self.store.finish(job.id, JobState.REJECTED, reason=str(exc), worker_pid=pid)
            return JobState.REJECTED
        except Exception as exc:  # any other error fails this job, never the worker
            log.exception("job %s failed", job.id)
            shutil.rmtree(tmp, ignore_errors=True)
            self.store.finish(job.id, JobState.FAILED, reason=f"{type(exc).__name__}: {exc}", worker_pid=pid)
            return JobState.FAILED
        final = self.store.output_dir(job.id)
        if final.exists():  # left by an earlier run of a re-run job
            shutil.rmtree(final)
        os.replace(tmp, final)
        if not self.settings.retain_inputs:
            shutil.rmtree(self.store.input_dir(job.id), ignore_errors=True)
        inp = result.provenance.input
        fields = {k: v for k, v in {
            "study_uid": inp.get("study_instance_uid"), "series_uid": inp.get("series_instance_uid"),
            "patient_id": inp.get("patient_id"),
        }.items() if v}
        if fields:
            self.store.update_fields(job.id, **fields)
        send = SendState.PENDING if (self.settings.send_results and job.source == "dicom") else None
        self.store.finish(job.id, JobState.DONE, summary=summarize(result), send_state=send, worker_pid=pid)
        log.info("job %s done in %.1f s", job.id, time.time() - (job.started_at or time.time()))
        return JobState.DONE


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the service process dies, even by SIGKILL: an orphaned
    worker would keep writing outputs for jobs that the restarted service hands to a new worker."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): workers may outlive a killed service",
                    ctypes.get_errno())


def worker_main(settings: WorkerSettings, stop: multiprocessing.synchronize.Event, parent_pid: int) -> None:
    """Entry point of a worker process: claim and run jobs until ``stop`` is set."""
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        return
    logging.basicConfig(level=settings.log_level,
                        format=f"%(asctime)s %(levelname)s worker-{os.getpid()} %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    store = JobStore(settings.data_dir)
    runner = JobRunner(store, settings)
    pid = os.getpid()
    log.info("worker %d started", pid)
    while not stop.is_set():
        job = store.claim(pid)
        if job is None:
            stop.wait(POLL_INTERVAL_S)
            continue
        log.info("worker %d: job %s (attempt %d)", pid, job.id, job.attempts)
        runner.run(job)
    store.close()


class WorkerPool:
    """Starts ``n`` worker processes and keeps ``n`` alive; recovers the job of any that dies."""

    def __init__(self, store: JobStore, settings: WorkerSettings, n: int, max_attempts: int) -> None:
        self.store, self.settings, self.n, self.max_attempts = store, settings, n, max_attempts
        self._ctx = multiprocessing.get_context("spawn")
        self._stop = self._ctx.Event()
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0

    def _spawn(self) -> None:
        p = self._ctx.Process(target=worker_main, args=(self.settings, self._stop, os.getpid()), daemon=True,
                              name="osteoscan-worker")
        p.start()
        self._procs.append(p)
        log.info("started worker process %d", p.pid)

    def start(self) -> None:
        for job in self.store.recover_interrupted(self.max_attempts):
            log.warning("job %s was interrupted by the last shutdown: now %s (%s)", job.id, job.state.value,
                        job.reason)
        self._clean_tmp(None)
        for _ in range(self.n):
            self._spawn()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)
        self._thread.start()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.is_alive() and p.pid is not None]

    def alive(self) -> int:
        return len(self.pids())

    def _clean_tmp(self, pid: int | None) -> None:
        """Remove the temp output folders of a dead worker (or all, at start-up)."""
        pattern = f"{TMP_PREFIX}{pid}-*" if pid is not None else f"{TMP_PREFIX}*"
        for tmp in self.store.jobs_dir.glob(f"*/{pattern}"):
            shutil.rmtree(tmp, ignore_errors=True)

    def _supervise(self) -> None:
        while not self._halt.wait(SUPERVISE_INTERVAL_S):
            for p in list(self._procs):
                if p.is_alive():
                    continue
                self._procs.remove(p)
                assert p.pid is not None
                code = p.exitcode
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                reason = f"worker process {p.pid} died ({how}) while running the job"
                for job in self.store.recover_worker(p.pid, self.max_attempts, reason):
                    log.error("job %s: %s -> %s", job.id, reason, job.state.value)
                self._clean_tmp(p.pid)
                if not self._halt.is_set():
                    self.restarts += 1
                    self._spawn()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers; a job cut off here goes back to the queue for the next start."""
        self._halt.set()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        deadline = time.monotonic() + timeout
        for p in self._procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
        for p in self._procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
            if p.pid is not None:
                self.store.recover_worker(p.pid, self.max_attempts + 1_000_000, "interrupted by shutdown")
                self._clean_tmp(p.pid)
        self._procs.clear()
