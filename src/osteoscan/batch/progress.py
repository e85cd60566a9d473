"""Batch progress: counts, throughput (cases/hour) and ETA, as a live bar on a terminal or log lines.

Throughput counts studies finished *in this run* (done or failed) over the wall time since the
first worker became ready, so model loading is not mistaken for per-study time and studies skipped
on resume do not inflate it.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Self

log = logging.getLogger(__name__)


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--:--"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass
class Progress:
    """Counters of one batch run; ``snapshot`` gives the numbers, ``line`` the human text."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    started_at: float | None = None
    _clock: object = field(default=time.monotonic, repr=False)

    def start_clock(self) -> None:
        if self.started_at is None:
            self.started_at = self._clock()  # type: ignore[operator]

    @property
    def finished(self) -> int:
        return self.skipped + self.done + self.failed

    @property
    def remaining(self) -> int:
        return self.total - self.finished

    def cases_per_hour(self) -> float | None:
        if self.started_at is None:
            return None
        elapsed = self._clock() - self.started_at  # type: ignore[operator]
        processed = self.done + self.failed
        return processed / elapsed * 3600.0 if processed and elapsed > 0 else None

    def eta_s(self) -> float | None:
        rate = self.cases_per_hour()
        return self.remaining / rate * 3600.0 if rate else None

    def line(self) -> str:
        rate = self.cases_per_hour()
        return (
            f"{self.finished}/{self.total} studies (done {self.done}, failed {self.failed}, "
            f"skipped {self.skipped}, retried {self.retried}) | "
            f"{'--' if rate is None else f'{rate:.1f}'} cases/h | ETA {format_eta(self.eta_s())}"
        )


class ProgressDisplay:
    """A rich progress bar when stderr is a terminal, else an INFO log line per finished study."""

    def __init__(self, progress: Progress, enabled: bool | None = None) -> None:
        self.progress = progress
        self.live = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None
        self._task = None

    def __enter__(self) -> Self:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("batch", total=self.progress.total, info="", completed=self.progress.finished)
        return self

    def update(self, message: str = "") -> None:
        p = self.progress
        if self._bar is not None:
            rate = p.cases_per_hour()
            info = f"{'--' if rate is None else f'{rate:.1f}'} cases/h ETA {format_eta(p.eta_s())} failed {p.failed}"
            self._bar.update(self._task, completed=p.finished, info=info)
        else:
            log.info("%s%s", f"{message} | " if message else "", p.line())

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
