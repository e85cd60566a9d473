"""Local execution: one process per slot, each loading the models once.

Not ``concurrent.futures.ProcessPoolExecutor``: when one of its workers dies the whole pool is
broken, and a batch must survive a killed worker, retry its study and carry on. Here each worker
has its own task queue, the driver watches every process, and a dead one is replaced.

Workers are started with ``spawn`` (no fork of a process whose inference libraries already run
threads); they ignore SIGINT (Ctrl-C is the driver's to handle) and exit on their own when the
driver disappears.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import socket
import traceback
from dataclasses import dataclass, field
from typing import Any

from osteoscan.batch.backend import MAX_INIT_FAILURES, Event, Finished, SlotDied, SlotFailed, SlotReady
from osteoscan.batch.devices import DeviceSlot
from osteoscan.batch.processor import ProcessorFactory
from osteoscan.batch.tasks import StudyTask
from osteoscan.batch.worker import Dispatch, StudyWorker

log = logging.getLogger(__name__)

#: How often an idle worker checks that its driver is still alive (s).
_PARENT_CHECK_S = 1.0
#: Grace period for workers to exit after the stop message before they are terminated (s).
_JOIN_TIMEOUT_S = 10.0


def _worker_main(
    factory: ProcessorFactory,
    slot: DeviceSlot,
    tasks: Any,
    results: Any,
    parent_pid: int,
    log_level: int,
) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s [{slot.name}] %(name)s: %(message)s")
    try:
        worker = StudyWorker(factory, slot.device, slot.name)
    except BaseException as exc:  # noqa: BLE001 - reported to the driver, which drops the slot
        results.put(("init_failed", slot.name, os.getpid(), f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return
    results.put(("ready", slot.name, os.getpid(), worker.fingerprint, slot.device, socket.gethostname()))
    try:
        while True:
            try:
                item = tasks.get(timeout=_PARENT_CHECK_S)
            except queue.Empty:
                if os.getppid() != parent_pid:
                    return  # the driver is gone: nobody will read our results
                continue
            if item is None:
                return
            job, hint = item
            results.put(("outcome", slot.name, os.getpid(), worker.process(job, hint)))
    finally:
        worker.close()


@dataclass
class _Slot:
    spec: DeviceSlot
    process: Any = None
    tasks: Any = None
    busy: str | None = None  # study id in flight
    ready: bool = False
    init_failures: int = 0
    dead: bool = False
    history: list[int] = field(default_factory=list)  # pids, for the log


class LocalPool:
    """The local back-end (see :class:`osteoscan.batch.backend.Backend`)."""

    shared_storage = True

    def __init__(self, factory: ProcessorFactory, slots: list[DeviceSlot], start_method: str = "spawn") -> None:
        self.factory = factory
        self._ctx = mp.get_context(start_method)
        self._results = self._ctx.Queue()
        self._slots = {s.name: _Slot(spec=s) for s in slots}

    def _spawn(self, slot: _Slot) -> None:
        slot.tasks = self._ctx.Queue()
        slot.process = self._ctx.Process(
            target=_worker_main,
            args=(self.factory, slot.spec, slot.tasks, self._results, os.getpid(), logging.getLogger().level),
            name=f"osteoscan-batch-{slot.spec.name}",
        )
        slot.process.start()
        slot.ready = False
        slot.busy = None
        slot.history.append(slot.process.pid)
        log.debug("started worker %s (pid %d) on %s", slot.spec.name, slot.process.pid, slot.spec.device)

    def start(self) -> list[str]:
        for slot in self._slots.values():
            self._spawn(slot)
        return list(self._slots)

    def submit(self, slot: str, job: Dispatch, hint: StudyTask | None) -> None:
        s = self._slots[slot]
        if not s.ready or s.busy is not None:
            raise RuntimeError(f"slot {slot} is not idle")  # a driver bug, not a user error
        s.busy = job.task.study_id
        s.tasks.put((job, hint))

    def pids(self) -> dict[str, int]:
        """Current worker pid of each live slot (for monitoring and tests)."""
        return {n: s.process.pid for n, s in self._slots.items() if s.process is not None and not s.dead}

    def poll(self, timeout: float) -> list[Event]:
        events: list[Event] = []
        try:
            msg = self._results.get(timeout=timeout)
            while True:
                events.append(self._event(msg))
                msg = self._results.get_nowait()
        except queue.Empty:
            pass
        events.extend(self._check_liveness())
        return [e for e in events if e is not None]

    def _event(self, msg: tuple) -> Event | None:
        kind, name, pid = msg[0], msg[1], msg[2]
        slot = self._slots[name]
        if slot.process is None or pid != slot.process.pid:
            log.debug("dropping a message from %s's previous worker (pid %d)", name, pid)
            return None
        if kind == "ready":
            slot.ready = True
            return SlotReady(slot=name, fingerprint=msg[3], pid=pid, device=msg[4], host=msg[5])
        if kind == "outcome":
            slot.busy = None
            return Finished(slot=name, outcome=msg[3])
        # init_failed: the process returns after reporting; liveness check sees it exit
        slot.init_failures += 1
        log.error("worker %s failed to start: %s\n%s", name, msg[3], msg[4])
        if slot.init_failures >= MAX_INIT_FAILURES:
            slot.dead = True
            slot.process.join(_JOIN_TIMEOUT_S)
            return SlotFailed(slot=name, reason=msg[3])
        slot.process.join(_JOIN_TIMEOUT_S)
        self._spawn(slot)
        return None

    def _check_liveness(self) -> list[Event]:
        events: list[Event] = []
        for name, slot in self._slots.items():
            if slot.dead or slot.process is None or slot.process.is_alive():
                continue
            code = slot.process.exitcode
            reason = _describe_exit(code)
            study = slot.busy
            if not slot.ready:
                slot.init_failures += 1
                if slot.init_failures >= MAX_INIT_FAILURES:
                    slot.dead = True
                    events.append(SlotFailed(slot=name, reason=f"worker died while loading models ({reason})"))
                    continue
            log.warning("worker %s (pid %d) died (%s)%s; starting a new one", name, slot.process.pid, reason,
                        f" while screening {study}" if study else "")
            events.append(SlotDied(slot=name, study_id=study, reason=f"worker process died ({reason})"))
            self._spawn(slot)
        return events

    def close(self) -> None:
        for slot in self._slots.values():
            if slot.process is not None and slot.process.is_alive():
                slot.tasks.put(None)
        for slot in self._slots.values():
            if slot.process is None:
                continue
            slot.process.join(_JOIN_TIMEOUT_S)
            if slot.process.is_alive():
                log.warning("worker %s did not stop; terminating it", slot.spec.name)
                slot.process.terminate()
                slot.process.join(_JOIN_TIMEOUT_S)
        self._results.close()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
