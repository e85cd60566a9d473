"""``osteoscan evaluate``: the model-card metrics from the shipped (or given) weights."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "evaluate the four models on a held-out phantom cohort and the real reference scans"

_DEFAULT_REALCT = Path(__file__).resolve().parents[3].parent / "shared" / "realct"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights-dir", type=Path, default=None, help="default: the shipped weights")
    parser.add_argument("--realct", type=Path, default=_DEFAULT_REALCT, help="folder of the real reference scans")
    parser.add_argument("--no-realct", action="store_true", help="phantom cohort only")
    parser.add_argument("--id-cases", type=int, default=8, help="whole phantom scans for level identification")
    parser.add_argument("--fine-cases", type=int, default=6, help="phantom subjects for fine Dice and BMD (T11..L5 each)")
    parser.add_argument("--tissue-cases", type=int, default=8, help="phantom mid-L3 slices for tissue Dice")
    parser.add_argument("--backend", default=None,
                        help="inference back-end (osteoscan.runtime); default onnxruntime, with --pipeline auto")
    parser.add_argument("--device", default=None, help="default cpu, with --pipeline auto")
    parser.add_argument("--json", type=Path, default=None, help="write all results to this JSON file")
    parser.add_argument("--pipeline", action="store_true",
                        help="validate the whole pipeline instead (phantom truth + TotalSegmentator on ts_example)")
    parser.add_argument("--cohort", default="validation", help="--pipeline: phantom cohort (default: validation)")
    parser.add_argument("--cases", type=int, default=None, help="--pipeline: first N cases of the cohort")
    parser.add_argument("--precision", default="auto", help="--pipeline: inference precision")


def run(args: argparse.Namespace) -> int:
    import json

    from osteoscan.train.evaluate import evaluate_all, summary_table

    realct = None if args.no_realct else args.realct
    if args.pipeline:
        from osteoscan.pipeline import PipelineConfig
        from osteoscan.pipeline.validate import format_markdown, validate

        config = PipelineConfig(backend=args.backend or "auto", device=args.device or "auto",
                                precision=args.precision, weights_dir=args.weights_dir, outputs=("json",))
        report = validate(config, args.cohort, args.cases, realct)
        text = format_markdown(report)
        if args.json:
            args.json.write_text(json.dumps(report.phantom | {"ts_example": report.ts_example}, indent=1, default=float) + "\n")
        print(text)
        return 0
    args.backend, args.device = args.backend or "onnxruntime", args.device or "cpu"
    results = evaluate_all(args.weights_dir, realct, args.id_cases, args.fine_cases, args.tissue_cases,
                           backend=args.backend, device=args.device)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(summary_table(results))
    print(f"({results['seconds']:.0f} s; backend {args.backend}/{args.device})")
    return 0
