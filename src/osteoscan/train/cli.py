"""``osteoscan train MODEL``: train one cascade model on the phantom and export it."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a cascade model on the procedural phantom and export ONNX + spec"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from osteoscan.models.registry import MODEL_NAMES

    parser.add_argument("model", choices=MODEL_NAMES, help="which model")
    parser.add_argument("--steps", type=int, default=1000, help="optimiser steps (upper bound)")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget; stops at steps or minutes")
    parser.add_argument("--batch-size", type=int, default=None, help="default: per model")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader worker processes (phantom synthesis)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--out", type=Path, default=Path("runs/train"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="training seed block (phantom seeds differ per block)")
    parser.add_argument("--tiny", action="store_true", help="tiny variant (CPU smoke runs, tests)")
    parser.add_argument("--init-from", type=Path, default=None, help="start from this state dict (.pt)")
    parser.add_argument("--val-cases", type=int, default=4, help="held-out phantom cases for the final check")
    parser.add_argument("--no-export", action="store_true", help="skip ONNX export")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--bn-batches", type=int, default=100,
                        help="batches to re-estimate batch-norm statistics over after training (0: keep the running ones)")


def run(args: argparse.Namespace) -> int:
    import json
    import logging

    from osteoscan.train.loop import TrainConfig, config_dict, train

    log = logging.getLogger("osteoscan.train")
    config = TrainConfig(
        model=args.model,
        out_dir=args.out,
        steps=args.steps,
        minutes=args.minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        device=args.device,
        seed=args.seed,
        tiny=args.tiny,
        init_from=args.init_from,
        val_cases=args.val_cases,
        export=not args.no_export,
        log_every=args.log_every,
        bn_batches=args.bn_batches,
    )
    log.info("training with %s", json.dumps(config_dict(config)))
    result = train(config)
    print(
        f"{args.model}: {result.steps} steps in {result.seconds:.0f} s, loss {result.first_loss:.4f} -> "
        f"{result.last_loss:.4f}, validation {json.dumps(result.val_metrics)}"
        + (f", exported to {result.spec.onnx_path}" if result.spec else "")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run without the top-level ``osteoscan`` CLI (e.g. on a training machine without pydicom)."""
    import logging
    import sys

    parser = argparse.ArgumentParser(prog="osteoscan-train", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
