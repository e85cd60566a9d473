"""``osteoscan run``: screen one CT (DICOM folder/zip or NIfTI) and write every output."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from osteoscan.pipeline.timing import ProgressCallback

HELP = "screen one CT study: BMD per vertebra, fractures, L3 body composition, report and DICOM outputs"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from osteoscan.pipeline.config import ALL_OUTPUTS

    p.add_argument("input", type=Path, help="DICOM folder, zip or file list folder, or a NIfTI file")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (created)")
    p.add_argument("--backend", default="auto", choices=["auto", "openvino", "onnxruntime", "torch"])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, gpu (OpenVINO GPU), xpu")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"])
    p.add_argument("--series", default=None, help="SeriesInstanceUID to analyse (default: chosen by rules)")
    p.add_argument("--outputs", default=",".join(ALL_OUTPUTS), help=f"comma list of {','.join(ALL_OUTPUTS)}")
    p.add_argument("--all-levels", action="store_true", help="run the fine model on every vertebra in view")
    p.add_argument("--weights-dir", type=Path, default=None, help="use models from this folder")
    p.add_argument("--patient-height-cm", type=float, default=None)
    p.add_argument("--patient-sex", choices=["M", "F"], default=None)
    p.add_argument("--patient-age", type=float, default=None)


def run(args: argparse.Namespace) -> int:
    from osteoscan.errors import InputError
    from osteoscan.pipeline import Pipeline, PipelineConfig
    from osteoscan.pipeline.config import PatientInfo
    from osteoscan.pipeline.summary import format_summary

    try:
        config = PipelineConfig(
            backend=args.backend,
            device=args.device,
            precision=args.precision,
            outputs=tuple(o.strip() for o in args.outputs.split(",") if o.strip()),
            all_levels=args.all_levels,
            weights_dir=args.weights_dir,
        )
        PatientInfo(height_cm=args.patient_height_cm, sex=args.patient_sex, age_years=args.patient_age)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    with stage_progress(enabled=not args.quiet) as progress:
        pipeline = Pipeline(config)
        result = pipeline.run_study(
            args.input,
            args.output,
            series_uid=args.series,
            patient_height_cm=args.patient_height_cm,
            patient_sex=args.patient_sex,
            patient_age=args.patient_age,
            progress=progress,
        )
    print(format_summary(result, args.output))
    return 0


@contextmanager
def stage_progress(enabled: bool) -> Iterator[ProgressCallback | None]:
    """A rich progress line on a terminal; nothing when stderr is a pipe or file (quiet in pipes)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description:<20}"), BarColumn(), TimeElapsedColumn(), console=Console(stderr=True)
    ) as bar:
        task = bar.add_task("loading models", total=1.0)

        def update(stage: str, done: float) -> None:
            bar.update(task, description=stage.replace("_", " "), completed=done)

        yield update
        bar.update(task, description="done", completed=1.0)
