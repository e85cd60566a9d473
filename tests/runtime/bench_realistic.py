"""Model benchmark on this machine with the cascade's four networks at their real sizes.

Until trained weights are shipped, the networks are the models registry's full-size recipes with
random weights (speed does not depend on the weight values; int8 is calibrated on smooth random
inputs, so only its speed, not its accuracy, means anything here). With shipped weights present,
``osteoscan bench --models`` measures them instead.

    .venv/bin/python tests/runtime/bench_realistic.py [--repeats 3] [--out /tmp/osteoscan-bench]

Prints the model table (model x back-end x device x precision) and the 1-vs-2-streams table.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
from pathlib import Path

import numpy as np


def build_models(out: Path) -> list:
    import torch

    from osteoscan.models import registry
    from osteoscan.models.spec import sha256_file

    specs = []
    for name in registry.MODEL_NAMES:
        spec_path = out / f"{name}.json"
        if not spec_path.is_file():
            torch.manual_seed(0)
            recipe = registry.recipe(name)
            net = registry.build_torch_model(recipe).eval()
            torch.save(net.state_dict(), out / f"{name}.pt")
            spatial = {i + 2: f"s{i}" for i in range(len(recipe.patch_size))} if recipe.dynamic_spatial else {}
            dense = len(recipe.output_names) == 1
            axes = {n: {0: "N", **spatial} for n in recipe.input_names}
            axes.update({n: {0: "N", **(spatial if dense else {})} for n in recipe.output_names})
            onnx_path = out / f"{name}.onnx"
            torch.onnx.export(net, (torch.zeros(1, recipe.in_channels, *recipe.patch_size),), str(onnx_path),
                              input_names=list(recipe.input_names), output_names=list(recipe.output_names),
                              dynamic_axes=axes, opset_version=17, dynamo=False)
            recipe.replace(onnx_file=onnx_path.name, torch_state_file=f"{name}.pt",
                           sha256=sha256_file(onnx_path)).to_json(spec_path)
        specs.append(registry.get_spec(name, weights_dir=out))
    return specs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("/tmp/osteoscan-bench"))
    ap.add_argument("--models", default="spine_coarse,vertebra_fine,bmd_regressor,tissue_2d")
    ap.add_argument("--streams-jobs", type=int, default=8)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from osteoscan.runtime import RuntimeConfig
    from osteoscan.runtime.bench import (
        format_bench_table,
        format_stream_table,
        run_model_bench,
        run_stream_bench,
    )
    from osteoscan.runtime.quantize import quantize
    from osteoscan.runtime.verify import smooth_input

    args.out.mkdir(parents=True, exist_ok=True)
    config = RuntimeConfig(cache_dir=args.out / "cache", model_dir=args.out / "user_models")
    wanted = args.models.split(",")
    specs = [s for s in build_models(args.out) if s.name in wanted]
    for spec in specs:
        cal = [smooth_input((1, spec.in_channels, *spec.patch_size), seed=s) for s in range(8)]
        quantize(spec, cal, config=config, calibration_info={"source": "smooth random (speed only)"})
    load_before = os.getloadavg()
    rows = run_model_bench(specs, backends=("openvino", "onnxruntime", "torch"), precisions=("fp32", "bf16", "int8"),
                           repeats=args.repeats, config=config)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; load average before/after the model table: "
          f"{load_before[0]:.1f} / {os.getloadavg()[0]:.1f}")
    print(format_bench_table(rows))
    coarse = next(s for s in specs if s.name == specs[0].name)
    x = smooth_input((1, coarse.in_channels, *coarse.patch_size))
    fine = [s for s in specs if s.name == "vertebra_fine"]
    if fine:
        coarse, x = fine[0], smooth_input((1, fine[0].in_channels, *fine[0].patch_size))
    print(f"\nstreams ({coarse.name}, {args.streams_jobs} jobs of shape {x.shape}, OpenVINO CPU fp32):")
    print(format_stream_table(run_stream_bench(coarse, x, n_jobs=args.streams_jobs, config=config)))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    np.set_printoptions(precision=3)


if __name__ == "__main__":
    main()
