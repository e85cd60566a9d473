"""``osteoscan phantom``: generate one phantom case (or a cohort) to disk."""

from __future__ import annotations

import argparse

HELP = "generate a synthetic CT phantom case with exact ground truth (DICOM/NIfTI + labels + truth.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="case seed (deterministic)")
    parser.add_argument("--preset", default="cap", help="cap, chest, abdomen, lumbar or l3_slice")
    parser.add_argument("--format", default="both", choices=["nifti", "dicom", "both"], help="output format")
    parser.add_argument("--spacing", type=float, default=None, help="isotropic voxel size in mm (default: scanner geometry)")
    parser.add_argument("--cohort", default=None,
                        help="generate a named cohort (e.g. 'benchmark', 'test') or a cohort YAML file into OUT/<case id>/")
    parser.add_argument("--limit", type=int, default=None, help="with --cohort: only the first N cases")


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    from osteoscan.phantom import generate_case
    from osteoscan.phantom.params import PRESETS
    from osteoscan.phantom.writers import save_case

    log = logging.getLogger("osteoscan.phantom")
    if args.cohort:
        from osteoscan.phantom.cohort import generate_cohort

        n = generate_cohort(args.cohort, args.out, fmt=args.format, limit=args.limit)
        print(f"cohort {args.cohort}: {n} cases written to {args.out}")
        return 0
    if args.preset not in PRESETS:
        from osteoscan.errors import InputError

        raise InputError(f"unknown preset {args.preset!r}; use one of {', '.join(PRESETS)}")
    t0 = time.perf_counter()
    case = generate_case(args.seed, args.preset, spacing_mm=args.spacing)
    t1 = time.perf_counter()
    save_case(case, args.out, args.format)
    log.info("generated in %.2f s, written in %.2f s", t1 - t0, time.perf_counter() - t1)
    print(f"phantom seed {args.seed} ({args.preset}): {case.volume.summary()} -> {args.out}")
    return 0
