"""``osteoscan bench``: end-to-end timings over a phantom cohort, or per-model timings (``--models``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "benchmark: end-to-end per-stage timings over the 120-case phantom cohort, or per model (--models)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cohort", default="benchmark", help="phantom cohort name (default: benchmark, 120 cases)")
    p.add_argument("--cases", type=int, default=None, help="use only the first N cases of the cohort")
    p.add_argument("--cache-dir", type=Path, default=None, help="where generated cohorts are kept")
    p.add_argument("--backend", default="auto", choices=["auto", "openvino", "onnxruntime", "torch"])
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"])
    p.add_argument("--outputs", default="json,html,pdf,nifti,seg,sr,sc,mesh", help="outputs written per case")
    p.add_argument("--models", action="store_true", help="per-model benchmark (model x backend x precision)")
    p.add_argument("--repeats", type=int, default=10, help="--models: timed runs per configuration")


def run(args: argparse.Namespace) -> int:
    if args.models:
        from osteoscan.runtime.bench import format_rows, run_model_bench

        rows = run_model_bench(repeats=args.repeats, device=args.device)
        print(format_rows(rows))
        return 0

    from osteoscan.pipeline.bench import format_table, run_benchmark
    from osteoscan.pipeline.cohorts import ensure_cohort
    from osteoscan.pipeline.config import PipelineConfig

    cases = ensure_cohort(args.cohort, cache_dir=args.cache_dir, limit=args.cases)
    config = PipelineConfig(
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        outputs=tuple(o.strip() for o in args.outputs.split(",") if o.strip()),
    )
    result = run_benchmark([c.dicom_dir for c in cases], config)
    print(format_table(result))
    return 0 if result.failures == 0 else 1
