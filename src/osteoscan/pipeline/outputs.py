"""Writing a screening's outputs: the report package's writers, then result.json with final timings."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from osteoscan.pipeline.timing import StageTimer
from osteoscan.result import StudyResult

if TYPE_CHECKING:
    from osteoscan.pipeline.screen import Screening

log = logging.getLogger(__name__)


def final_timings(timer: StageTimer) -> dict[str, float]:
    from osteoscan.pipeline.screen import INFERENCE_STAGES

    timings = dict(timer.timings)
    timings["inference"] = sum(timings.get(s, 0.0) for s in INFERENCE_STAGES)
    timings["total"] = timer.total()
    return timings


def write_all(screening: Screening, outdir: Path, outputs: Collection[str], timer: StageTimer) -> StudyResult:
    """Write every requested output; result.json is written last so that it holds the final timings."""
    others = [o for o in outputs if o != "json"]
    if others:
        from osteoscan.report import write_outputs

        with timer.stage("write_outputs"):
            write_outputs(
                screening.result,
                screening.volume,
                screening.labels,
                screening.tissue,
                outdir,
                outputs=others,
                source_datasets=screening.source_datasets,
            )
    result = dataclasses.replace(screening.result, timings_s=final_timings(timer))
    result.to_json(outdir / "result.json")
    log.info("wrote %s to %s", ", ".join(outputs), outdir)
    return result
