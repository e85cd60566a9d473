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
    p.add_argument("--backends", default="openvino,onnxruntime,torch", help="--models: comma list of back-ends")
    p.add_argument("--precisions", default="fp32,bf16,int8", help="--models: comma list of precisions")
    p.add_argument("--warmup", type=int, default=1,
                   help="cases run once, untimed, before the timed ones (first-call compilation, GPU autotuning)")
    p.add_argument("--jobs", type=int, default=1, help="processes generating missing cohort cases")


def run(args: argparse.Namespace) -> int:
    if args.models:
        from osteoscan.runtime.bench import format_rows, run_model_bench

        rows = run_model_bench(
            backends=_split(args.backends), precisions=_split(args.precisions), repeats=args.repeats,
            device=None if args.device == "auto" else args.device,
        )
        print(format_rows(rows))
        return 0

    from osteoscan.pipeline.bench import format_table, run_benchmark
    from osteoscan.pipeline.cohorts import ensure_cohort
    from osteoscan.pipeline.config import PipelineConfig

    cases = ensure_cohort(args.cohort, cache_dir=args.cache_dir, limit=args.cases, jobs=args.jobs)
    config = PipelineConfig(
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        outputs=tuple(o.strip() for o in args.outputs.split(",") if o.strip()),
    )
    result = run_benchmark([c.dicom_dir for c in cases], config, warmup=args.warmup)
    print(format_table(result))
    return 0 if result.failures == 0 else 1


def _split(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]
