"""Screening an archive: ``osteoscan batch`` on a local process pool or on Ray (docs/batch.md).

Public API::

    from osteoscan.batch import discover, run_batch, LocalPool, PipelineProcessorFactory
    tasks = discover(["/archive/ct"])
    run_batch(tasks, "out/", LocalPool(PipelineProcessorFactory(outputs=("json",)), plan_slots(2, [])))

Ray is imported only by :class:`osteoscan.batch.ray_pool.RayPool`.
"""

from osteoscan.batch.devices import DeviceSlot, default_local_slots, plan_slots
from osteoscan.batch.discovery import discover, read_manifest
from osteoscan.batch.local_pool import LocalPool
from osteoscan.batch.processor import PipelineProcessorFactory, ProcessorFactory, StudyProcessor
from osteoscan.batch.runner import BatchSummary, run_batch
from osteoscan.batch.tasks import StudyTask

__all__ = [
    "BatchSummary",
    "DeviceSlot",
    "LocalPool",
    "PipelineProcessorFactory",
    "ProcessorFactory",
    "StudyProcessor",
    "StudyTask",
    "default_local_slots",
    "discover",
    "plan_slots",
    "read_manifest",
    "run_batch",
]
