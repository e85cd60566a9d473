"""``osteoscan batch``: screen an archive of studies, locally or on a Ray cluster (docs/batch.md)."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

HELP = "screen many studies (folders, manifest CSV, globs): resumable, local process pool or Ray cluster"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from osteoscan.pipeline.config import ALL_OUTPUTS

    p.add_argument("inputs", nargs="+", help="folders of studies, manifest .csv files, or glob patterns (quoted)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (created; re-use it to resume)")
    p.add_argument("--workers", type=int, default=None,
                   help="CPU workers (default: one per core when there is no GPU, none besides the GPUs otherwise)")
    p.add_argument("--gpus", default="auto",
                   help="GPUs to use: auto, none, or indices such as 0,1 (Ray: a count of cluster GPUs)")
    p.add_argument("--per-gpu", type=int, default=2, help="workers per GPU (one decodes while another computes)")
    p.add_argument("--ray-address", default=None,
                   help="run on Ray: a cluster address (auto, host:6379, ray://host:10001) or 'local'")
    p.add_argument("--shared-storage", action="store_true",
                   help="Ray: the output folder has the same path on every node; workers write there directly")
    p.add_argument("--by-series", action="store_true", help="find studies by DICOM series instead of by sub-folder")
    p.add_argument("--outputs", default=",".join(ALL_OUTPUTS),
                   help=f"comma list of {','.join(ALL_OUTPUTS)} (json is always written; 'json' alone is leanest)")
    p.add_argument("--backend", default="auto", choices=["auto", "openvino", "onnxruntime", "torch"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"])
    p.add_argument("--all-levels", action="store_true", help="run the fine model on every vertebra in view")
    p.add_argument("--weights-dir", type=Path, default=None, help="use models from this folder")
    p.add_argument("--max-attempts", type=int, default=3, help="attempts per study when its worker dies")
    p.add_argument("--retry-failed", action="store_true", help="retry studies whose input was rejected before")
    p.add_argument("--list", action="store_true", help="only list the studies found, do not screen")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> int:
    from osteoscan.batch.devices import default_local_slots, parse_gpus
    from osteoscan.batch.discovery import discover
    from osteoscan.batch.processor import PipelineProcessorFactory
    from osteoscan.batch.runner import run_batch
    from osteoscan.errors import InputError

    tasks = discover(args.inputs, by_series=args.by_series)
    if args.list:
        for t in tasks:
            print(f"{t.study_id}\t{t.input_path}\t{t.series_uid or ''}")
        return 0
    if not tasks:
        raise InputError(f"no studies found in {' '.join(args.inputs)}; see docs/batch.md for the input rules")
    outputs = tuple(dict.fromkeys(["json", *(o.strip() for o in args.outputs.split(",") if o.strip())]))
    factory = PipelineProcessorFactory(
        backend=args.backend,
        precision=args.precision,
        outputs=outputs,
        all_levels=args.all_levels,
        weights_dir=str(args.weights_dir) if args.weights_dir else None,
    )
    gpus = parse_gpus(args.gpus)
    if args.ray_address:
        from osteoscan.batch.ray_pool import RayPool

        backend = RayPool(
            factory, args.ray_address, cpu_workers=args.workers, gpus=None if gpus is None else len(gpus),
            per_gpu=args.per_gpu, shared_storage=args.shared_storage,
        )
    else:
        from osteoscan.batch.local_pool import LocalPool

        backend = LocalPool(factory, default_local_slots(args.workers, gpus, args.per_gpu))
    signal.signal(signal.SIGTERM, _terminate)  # a scheduler's stop: shut down like Ctrl-C (tables, workers)
    summary = run_batch(tasks, args.output, backend, max_attempts=args.max_attempts, retry_failed=args.retry_failed)
    rate = "--" if summary.cases_per_hour is None else f"{summary.cases_per_hour:.1f}"
    print(
        f"{summary.total} studies: {summary.done} screened, {summary.skipped} skipped (already done), "
        f"{summary.failed} failed, {summary.retried} retried; {rate} cases/h; {summary.elapsed_s:.0f} s\n"
        f"tables: {args.output / 'results.csv'} ({summary.tables.get('studies', 0)} studies), "
        f"{args.output / 'vertebrae.csv'}, {args.output / 'failures.csv'}"
    )
    return 0 if summary.failed == 0 else 3
