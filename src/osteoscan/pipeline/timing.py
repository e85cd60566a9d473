"""Per-stage wall-clock timing and progress: every stage is timed and the times go in result.json."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

#: Stages in the order they run (see osteoscan.pipeline.screen); used for progress fractions.
STAGE_ORDER: tuple[str, ...] = (
    "load",
    "localise_spine",
    "segment_vertebrae",
    "regress_bmd",
    "canvas",
    "segment_tissue",
    "analyse",
    "label_map",
    "write_outputs",
)

#: Called when a stage starts: (stage name, fraction of the stages already done, 0..1).
ProgressCallback = Callable[[str, float], None]


class StageTimer:
    """Collects ``stage name -> seconds``; a stage run twice accumulates."""

    def __init__(self, progress: ProgressCallback | None = None) -> None:
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()
        self._progress = progress

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._progress is not None:
            done = STAGE_ORDER.index(name) / len(STAGE_ORDER) if name in STAGE_ORDER else 0.0
            self._progress(name, done)
        t0 = time.perf_counter()
        log.debug("stage %s ...", name)
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.timings[name] = self.timings.get(name, 0.0) + dt
            log.info("stage %s done in %.3f s", name, dt)

    def total(self) -> float:
        return time.perf_counter() - self._start
