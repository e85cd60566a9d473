"""Spread jobs over several sessions (devices, or streams of one device) with one thread each.

A job is a model input (a case's crop batch, a sliding-window batch) or anything a custom
``fn(session, job)`` understands (a whole case). Threads suit all back-ends: OpenVINO, ONNX Runtime
and PyTorch release the GIL while they compute. Jobs are pulled from a shared queue, so a faster
device simply takes more of them (CPU + GPU, two GPUs).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from osteoscan.errors import BackendError
from osteoscan.runtime.session import InferenceSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolStats:
    """Throughput of one ``DevicePool.map`` call."""

    n_jobs: int
    wall_s: float
    jobs_per_s: float
    jobs_per_session: tuple[int, ...]
    devices: tuple[str, ...]


class DevicePool:
    """Run jobs concurrently over ``sessions`` (e.g. ``[cpu_session, gpu_session]``)."""

    def __init__(self, sessions: Sequence[InferenceSession]) -> None:
        if not sessions:
            raise BackendError("DevicePool needs at least one session")
        self.sessions = list(sessions)
        self.last_stats: PoolStats | None = None

    @classmethod
    def from_devices(cls, model: Any, devices: Sequence[str], **session_kwargs: Any) -> DevicePool:
        """One session per device (``create_session(model, device=d, **session_kwargs)``)."""
        from osteoscan.runtime.api import create_session

        return cls([create_session(model, device=d, **session_kwargs) for d in devices])

    def map(self, jobs: Sequence[Any], fn: Callable[[InferenceSession, Any], Any] | None = None) -> list[Any]:
        """Results of ``fn(session, job)`` (default: ``session.infer(job)``) in job order.

        The first failure stops the pool and is re-raised after all threads have finished.
        """
        run = fn or (lambda s, job: s.infer(job))
        todo: queue.Queue[int] = queue.Queue()
        for i in range(len(jobs)):
            todo.put(i)
        results: list[Any] = [None] * len(jobs)
        counts = [0] * len(self.sessions)
        errors: list[BaseException] = []
        stop = threading.Event()

        def worker(k: int) -> None:
            session = self.sessions[k]
            while not stop.is_set():
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    results[i] = run(session, jobs[i])
                    counts[k] += 1
                except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                    errors.append(exc)
                    stop.set()
                    return

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(len(self.sessions))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        if errors:
            raise errors[0]
        self.last_stats = PoolStats(
            n_jobs=len(jobs),
            wall_s=wall,
            jobs_per_s=len(jobs) / wall if wall > 0 else float("inf"),
            jobs_per_session=tuple(counts),
            devices=tuple(f"{s.info.backend}/{s.info.device}" for s in self.sessions),
        )
        log.info("device pool: %d jobs in %.2f s (%.2f jobs/s), per session %s",
                 len(jobs), wall, self.last_stats.jobs_per_s, counts)
        return results

    def close(self) -> None:
        for s in self.sessions:
            s.close()
