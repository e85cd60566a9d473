"""What the driver needs from an execution back-end (local process pool or Ray actors).

A back-end owns *slots* (workers with warm models). The driver sends one study at a time to an
idle slot, with a hint of the slot's next study for read-ahead, and polls for events. When a worker
dies, the back-end reports it and starts a replacement for the slot by itself; the driver decides
whether the study is retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from osteoscan.batch.tasks import StudyTask
from osteoscan.batch.worker import Dispatch, StudyOutcome

#: Times a slot's worker may fail to start (e.g. a model that cannot load) before the slot is dropped.
MAX_INIT_FAILURES = 3


@dataclass(frozen=True)
class SlotReady:
    """A worker finished loading its models and can take studies."""

    slot: str
    fingerprint: str
    pid: int
    device: str
    host: str


@dataclass(frozen=True)
class SlotFailed:
    """A worker could not start (after MAX_INIT_FAILURES tries): the slot is gone for this batch."""

    slot: str
    reason: str


@dataclass(frozen=True)
class SlotDied:
    """A worker process died while it held ``study_id`` (None: while idle); a replacement is starting."""

    slot: str
    study_id: str | None
    reason: str


@dataclass(frozen=True)
class Finished:
    """A worker reported the outcome of one attempt."""

    slot: str
    outcome: StudyOutcome


Event = SlotReady | SlotFailed | SlotDied | Finished


class Backend(Protocol):
    """Execution back-end protocol (see module docstring)."""

    #: True when workers write into ``Dispatch.staging_dir`` (storage shared with the driver);
    #: False when they ship the output files back to the driver.
    shared_storage: bool

    def start(self) -> list[str]:
        """Start every slot's worker (non-blocking); return the slot names."""
        ...

    def submit(self, slot: str, job: Dispatch, hint: StudyTask | None) -> None:
        """Send one attempt to an idle, ready slot."""
        ...

    def poll(self, timeout: float) -> list[Event]:
        """Events that happened, waiting up to ``timeout`` seconds for the first."""
        ...

    def close(self) -> None:
        """Stop every worker (in-flight attempts are abandoned)."""
        ...
