"""Cluster execution on Ray: one actor per slot (CPU slots and shares of each GPU), warm models.

The driver streams studies to the actors (one in flight per actor, plus a read-ahead hint) and
writes every result itself. An actor that dies (node lost, killed, out of memory) surfaces as
``RayActorError`` on its pending call; the pool then starts a fresh actor for the slot and the
driver retries the study.

GPU actors ask Ray for ``1/per_gpu`` of a GPU; Ray picks the physical GPU and restricts the actor's
``CUDA_VISIBLE_DEVICES`` to it, so inside the actor the device is ``cuda:0`` and the physical index
is reported by ``ray.get_gpu_ids()``.

Outputs: with shared storage (``shared_storage=True``; the output folder has the same path on every
node) actors write straight into the driver's staging folder; otherwise they return the files'
bytes through Ray's object store and the driver writes them.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any

from osteoscan.batch.backend import MAX_INIT_FAILURES, Event, Finished, SlotDied, SlotFailed, SlotReady
from osteoscan.batch.devices import DEFAULT_SLOTS_PER_GPU, DeviceSlot, plan_slots
from osteoscan.batch.processor import ProcessorFactory
from osteoscan.batch.tasks import StudyTask
from osteoscan.batch.worker import Dispatch, StudyWorker
from osteoscan.errors import BackendError

log = logging.getLogger(__name__)

#: Ray's switch that stops it from setting CUDA_VISIBLE_DEVICES per actor (Ray documentation).
_RAY_NOSET_CUDA = "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"


class StudyActor:
    """The Ray actor body (wrapped with ``ray.remote`` at start-up, so that importing this module
    does not need Ray)."""

    def __init__(self, factory: ProcessorFactory, slot: DeviceSlot) -> None:
        import ray

        device = slot.device
        self.gpu_ids: list[Any] = []
        if slot.num_gpus > 0:
            self.gpu_ids = list(ray.get_gpu_ids())
            if os.environ.get(_RAY_NOSET_CUDA) and self.gpu_ids:
                device = f"cuda:{int(self.gpu_ids[0])}"  # Ray left CUDA_VISIBLE_DEVICES alone: physical index
            else:
                device = "cuda:0"  # Ray limits CUDA_VISIBLE_DEVICES to this actor's GPU
        self.worker = StudyWorker(factory, device, slot.name)

    def info(self) -> tuple[str, int, str, str, list[Any]]:
        return self.worker.fingerprint, os.getpid(), self.worker.device, socket.gethostname(), self.gpu_ids

    def process(self, job: Dispatch, hint: StudyTask | None) -> Any:
        return self.worker.process(job, hint)


def plan_cluster_slots(
    resources: dict[str, float], cpu_workers: int | None, gpus: int | None, per_gpu: int = DEFAULT_SLOTS_PER_GPU
) -> list[DeviceSlot]:
    """Slots for a Ray cluster's resources: ``per_gpu`` actors on each GPU, and CPU actors.

    ``gpus`` None means every GPU of the cluster; ``cpu_workers`` None means one per cluster CPU
    when there is no GPU, none otherwise. Each actor also reserves one CPU.

    Raises:
        BackendError: the plan asks for more GPUs or CPUs than the cluster has.
    """
    n_gpu_cluster = int(resources.get("GPU", 0))
    n_cpu_cluster = int(resources.get("CPU", 0))
    n_gpu = n_gpu_cluster if gpus is None else gpus
    if n_gpu > n_gpu_cluster:
        raise BackendError(f"{n_gpu} GPUs asked for but the Ray cluster has {n_gpu_cluster}")
    if cpu_workers is None:
        cpu_workers = 0 if n_gpu else n_cpu_cluster
    slots = plan_slots(cpu_workers, list(range(n_gpu)), per_gpu)
    if len(slots) > n_cpu_cluster:
        raise BackendError(
            f"{len(slots)} actors need one CPU each but the Ray cluster has {n_cpu_cluster}; "
            "lower --workers or --per-gpu"
        )
    return slots


@dataclass
class _ActorSlot:
    spec: DeviceSlot
    actor: Any = None
    ready_ref: Any = None
    busy: str | None = None
    init_failures: int = 0
    dead: bool = False


class RayPool:
    """The Ray back-end (see :class:`osteoscan.batch.backend.Backend`).

    ``address``: a running cluster ("auto", "ray://host:10001", "host:6379") or "local" to start a
    private one on this machine. When Ray is already initialised in this process (a test or a
    notebook), that connection is used and left open.
    """

    def __init__(
        self,
        factory: ProcessorFactory,
        address: str,
        *,
        cpu_workers: int | None = None,
        gpus: int | None = None,
        per_gpu: int = DEFAULT_SLOTS_PER_GPU,
        shared_storage: bool = False,
    ) -> None:
        self.factory = factory
        self.address = address
        self.cpu_workers = cpu_workers
        self.gpus = gpus
        self.per_gpu = per_gpu
        self.shared_storage = shared_storage
        self._slots: dict[str, _ActorSlot] = {}
        self._inflight: dict[Any, str] = {}  # process ref -> slot
        self._owns_ray = False
        self._actor_cls: Any = None

    def start(self) -> list[str]:
        try:
            import ray
        except ImportError:
            raise BackendError("Ray is not installed: pip install 'osteoscan[batch]'") from None
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=True)
            self._owns_ray = True
        resources = ray.cluster_resources()
        slots = plan_cluster_slots(resources, self.cpu_workers, self.gpus, self.per_gpu)
        log.info("Ray cluster: %s; %d actors (%s)", {k: resources[k] for k in ("CPU", "GPU") if k in resources},
                 len(slots), ", ".join(s.name for s in slots))
        self._actor_cls = ray.remote(StudyActor)
        for spec in slots:
            slot = _ActorSlot(spec=spec)
            self._slots[spec.name] = slot
            self._spawn(slot)
        return list(self._slots)

    def _spawn(self, slot: _ActorSlot) -> None:
        spec = slot.spec
        slot.actor = self._actor_cls.options(
            num_cpus=spec.num_cpus, num_gpus=spec.num_gpus, max_restarts=0, max_task_retries=0
        ).remote(self.factory, spec)
        slot.ready_ref = slot.actor.info.remote()
        slot.busy = None

    def submit(self, slot: str, job: Dispatch, hint: StudyTask | None) -> None:
        s = self._slots[slot]
        if s.ready_ref is not None or s.busy is not None or s.dead:
            raise RuntimeError(f"actor slot {slot} is not idle")  # a driver bug, not a user error
        s.busy = job.task.study_id
        self._inflight[s.actor.process.remote(job, hint)] = slot

    def poll(self, timeout: float) -> list[Event]:
        import ray

        ready_refs = {s.ready_ref: n for n, s in self._slots.items() if s.ready_ref is not None and not s.dead}
        refs = list(ready_refs) + list(self._inflight)
        if not refs:
            time.sleep(timeout)  # nothing can report: do not spin the driver
            return []
        done, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if done:
            more, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            done = list(dict.fromkeys([*done, *more]))
        events: list[Event] = []
        for ref in done:
            if ref in ready_refs:
                events.append(self._on_ready(ready_refs[ref], ref))
            else:
                events.append(self._on_result(self._inflight.pop(ref), ref))
        return [e for e in events if e is not None]

    def _on_ready(self, name: str, ref: Any) -> Event | None:
        import ray

        slot = self._slots[name]
        slot.ready_ref = None
        try:
            fingerprint, pid, device, host, gpu_ids = ray.get(ref)
        except ray.exceptions.RayError as exc:
            slot.init_failures += 1
            reason = _short(exc)
            log.error("actor %s failed to start: %s", name, reason)
            ray.kill(slot.actor)
            if slot.init_failures >= MAX_INIT_FAILURES:
                slot.dead = True
                return SlotFailed(slot=name, reason=reason)
            self._spawn(slot)
            return None
        where = f"{device} (GPU ids {gpu_ids})" if gpu_ids else device
        log.info("actor %s ready on %s, %s, pid %d", name, host, where, pid)
        return SlotReady(slot=name, fingerprint=fingerprint, pid=pid, device=device, host=host)

    def _on_result(self, name: str, ref: Any) -> Event:
        import ray

        slot = self._slots[name]
        study, slot.busy = slot.busy, None
        try:
            return Finished(slot=name, outcome=ray.get(ref))
        except ray.exceptions.RayActorError as exc:
            log.warning("actor %s died while screening %s (%s); starting a new one", name, study, _short(exc))
            ray.kill(slot.actor)
            self._spawn(slot)
            return SlotDied(slot=name, study_id=study, reason=f"Ray actor died ({_short(exc)})")
        except ray.exceptions.RayError as exc:
            # the worker catches every study error itself: this is Ray failing to run or return the call
            log.error("actor %s: call failed for %s: %s", name, study, traceback.format_exception_only(exc))
            ray.kill(slot.actor)
            self._spawn(slot)
            return SlotDied(slot=name, study_id=study, reason=f"Ray call failed ({_short(exc)})")

    def pids(self) -> dict[str, int]:
        """Not tracked for Ray (actors may be on other nodes); see the actors' ``info``."""
        return {}

    def close(self) -> None:
        import ray

        for slot in self._slots.values():
            if slot.actor is not None:
                ray.kill(slot.actor)
        self._slots.clear()
        self._inflight.clear()
        if self._owns_ray:
            ray.shutdown()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
