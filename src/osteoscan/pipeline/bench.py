"""End-to-end benchmark over a phantom cohort: per-stage time statistics and peak memory.

The reference system reported 9.55 s per case of pure AI inference over 120 CT cases on an Arc A770
GPU; ``osteoscan bench`` measures the same quantities here, on the cohort the phantom ships
(``benchmark120``), generated once and cached as DICOM so that loading is part of the measurement.
"""

from __future__ import annotations

import logging
import resource
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from osteoscan.pipeline.config import PipelineConfig
from osteoscan.pipeline.screen import INFERENCE_STAGES, Pipeline
from osteoscan.result import StudyResult

log = logging.getLogger(__name__)

#: Rows of the benchmark table, in this order (stage names as in result.json timings_s).
TABLE_ROWS = ("load", *INFERENCE_STAGES, "canvas", "analyse", "label_map", "write_outputs", "inference", "total")


@dataclass(frozen=True)
class BenchRun:
    backend: str
    device: str
    precision: str
    cases: int
    failures: int
    timings: dict[str, list[float]]  # stage -> per-case seconds
    peak_rss_mb: float
    model_load_s: float


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 1024.0 / 1024.0


def run_benchmark(case_dirs: list[Path], config: PipelineConfig, warmup: int = 0) -> BenchRun:
    """Run the pipeline over ``case_dirs`` (each a DICOM series folder) and collect stage timings.

    The first ``warmup`` cases are run once more before the timed pass and not counted, so that
    one-off costs (OpenVINO's first inference, cuDNN autotuning, lazy imports) do not land in the
    first case; model loading and compilation are reported separately as ``model_load_s``.
    """
    import time

    t0 = time.perf_counter()
    pipeline = Pipeline(config)
    load_s = time.perf_counter() - t0
    timings: dict[str, list[float]] = {}
    failures = 0
    with tempfile.TemporaryDirectory(prefix="osteoscan-bench-") as tmp:
        for i, case in enumerate(case_dirs[:warmup]):
            try:
                pipeline.run_study(case, Path(tmp) / f"warmup{i:03d}")
            except Exception as exc:  # noqa: BLE001 - the timed pass counts this case's failure
                log.error("warm-up case %s failed: %s", case, exc)
        for i, case in enumerate(case_dirs):
            try:
                result: StudyResult = pipeline.run_study(case, Path(tmp) / f"case{i:03d}")
            except Exception as exc:  # noqa: BLE001 - a benchmark counts failures and goes on
                failures += 1
                log.error("case %s failed: %s", case, exc)
                continue
            for stage in TABLE_ROWS:
                timings.setdefault(stage, []).append(float(result.timings_s.get(stage, 0.0)))
            log.info("case %d/%d: %.2f s", i + 1, len(case_dirs), result.timings_s.get("total", 0.0))
    backend, device, precision = pipeline.cascade.runtime_description()
    return BenchRun(
        backend=backend,
        device=device,
        precision=precision,
        cases=len(case_dirs) - failures,
        failures=failures,
        timings=timings,
        peak_rss_mb=peak_rss_mb(),
        model_load_s=load_s,
    )


def format_table(run: BenchRun) -> str:
    lines = [
        (f"backend {run.backend}, device {run.device}, precision {run.precision}: {run.cases} cases "
        f"({run.failures} failed), model loading {run.model_load_s:.2f} s, peak RSS {run.peak_rss_mb:.0f} MB"),
        "",
        f"| {'stage':<18} | {'mean s':>7} | {'median s':>8} | {'p95 s':>7} |",
        f"|{'-' * 20}|{'-' * 9}|{'-' * 10}|{'-' * 9}|",
    ]
    for stage in TABLE_ROWS:
        values = run.timings.get(stage)
        if not values:
            continue
        arr = np.asarray(values)
        lines.append(
            f"| {stage:<18} | {arr.mean():7.3f} | {statistics.median(values):8.3f} | "
            f"{np.percentile(arr, 95):7.3f} |"
        )
    return "\n".join(lines)
