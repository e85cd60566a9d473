"""``osteoscan demo``: generate the built-in phantom case and screen it, end to end."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "screen a built-in demo case (a procedural phantom CT written as DICOM) and print the summary"
log = logging.getLogger(__name__)

#: The demo case: a chest-abdomen-pelvis phantom with a known fracture and low BMD.
DEMO_SEED = 7
DEMO_PRESET = "cap"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, default=Path("demo_output"), help="output folder")
    p.add_argument("--backend", default="auto", choices=["auto", "openvino", "onnxruntime", "torch"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"])


def run(args: argparse.Namespace) -> int:
    from osteoscan.io import write_dicom_series
    from osteoscan.phantom import generate_case
    from osteoscan.pipeline import Pipeline, PipelineConfig
    from osteoscan.pipeline.summary import format_summary

    out: Path = args.output
    case_dir = out / "input_dicom"
    if not case_dir.is_dir() or not any(case_dir.iterdir()):
        log.info("generating the demo phantom (seed %d, preset %s)", DEMO_SEED, DEMO_PRESET)
        case = generate_case(DEMO_SEED, DEMO_PRESET)
        write_dicom_series(case.volume, case_dir)
    pipeline = Pipeline(PipelineConfig(backend=args.backend, precision=args.precision))
    result = pipeline.run_study(case_dir, out / "result")
    print(format_summary(result, out / "result"))
    return 0
