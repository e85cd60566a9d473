"""Per-stage wall-clock timing: every stage of the cascade is timed and the times go in result.json."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class StageTimer:
    """Collects ``stage name -> seconds``; a stage run twice accumulates."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        log.info("stage %s ...", name)
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.timings[name] = self.timings.get(name, 0.0) + dt
            log.info("stage %s done in %.3f s", name, dt)

    def total(self) -> float:
        return time.perf_counter() - self._start
