"""``osteoscan models``: list, export, quantise, verify and import models.

* ``list``      shipped models, user-imported models, int8 artifacts and the back-ends/devices here
* ``export``    a model's OpenVINO IR (fp32, or fp16 weights) to a folder, for deployments that ship IR
* ``quantize``  NNCF int8 calibrated on phantom cases run through the fp32 pipeline stages
* ``gate``      the pipeline-level accuracy gate of int8 artifacts, stored in their spec
* ``verify``    sha256 + parity of every back-end available here against PyTorch fp32 (or ORT)
* ``import``    bring your own model (ONNX, TorchScript, OpenVINO IR, TF SavedModel, Paddle)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "list, export, quantize, gate, verify and import models (bring your own model)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", type=Path, default=None, help="user model folder (default ~/.local/share/osteoscan/models)")
    p.add_argument("--cache-dir", type=Path, default=None, help="runtime cache folder (default ~/.cache/osteoscan)")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="models, int8 artifacts, back-ends and devices")
    e = sub.add_parser("export", help="write a model's OpenVINO IR")
    e.add_argument("name")
    e.add_argument("--out", type=Path, required=True, help="folder for <name>.xml/.bin")
    e.add_argument("--fp16-weights", action="store_true", help="store weights as fp16 (GPU deployments)")
    q = sub.add_parser("quantize", help="int8 via NNCF, calibrated on phantom cases")
    q.add_argument("name", nargs="+", help="model name(s), or 'all'")
    q.add_argument("--cases", type=int, default=8, help="phantom cases for calibration (default 8)")
    q.add_argument("--seed", type=int, default=None, help="first phantom seed (default: the calibration seeds)")
    q.add_argument("--out", type=Path, default=None, help="output folder (default: the user model folder)")
    q.add_argument("--weights-dir", type=Path, default=None, help="fp32 models to quantise (default: the shipped weights)")
    g = sub.add_parser("gate", help="accuracy gate of int8 artifacts, measured by the pipeline on phantom cases")
    g.add_argument("name", nargs="*", help="model name(s), or 'all' (each is swapped to int8 alone)")
    g.add_argument("--pipeline", action="store_true",
                   help="instead: the pipeline at --precision int8 (every gated artifact at once) vs auto; stores nothing")
    g.add_argument("--cases", type=int, default=8, help="validation-cohort phantom cases (default 8)")
    g.add_argument("--artifact-dir", type=Path, default=None,
                   help="folder of the <name>.int8.* artifacts (default: the user model folder)")
    g.add_argument("--cohort", default="validation", help="phantom cohort (default: validation, held out from calibration)")
    g.add_argument("--weights-dir", type=Path, default=None, help="fp32 models (default: the shipped weights)")
    g.add_argument("--no-write", action="store_true", help="print the figures without storing them in the specs")
    g.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    v = sub.add_parser("verify", help="sha256 and cross-back-end parity of models")
    v.add_argument("name", nargs="*", help="model names (default: all shipped and user models)")
    v.add_argument("--backends", default="openvino,onnxruntime,torch")
    i = sub.add_parser("import", help="import and register a model (ONNX, TorchScript, OpenVINO IR, TF SavedModel, Paddle)")
    i.add_argument("path", type=Path)
    i.add_argument("--as", dest="as_name", required=True, help="name to register it under")
    i.add_argument("--spec", type=Path, required=True, help="ModelSpec JSON (in/out channels, names, patch, spacing, normalisation)")


def _config(args: argparse.Namespace):  # -> RuntimeConfig
    from osteoscan.runtime.config import RuntimeConfig

    kw = {}
    if args.model_dir is not None:
        kw["model_dir"] = args.model_dir
    if args.cache_dir is not None:
        kw["cache_dir"] = args.cache_dir
    return RuntimeConfig(**kw)


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    action = {"list": _list, "export": _export, "quantize": _quantize, "gate": _gate, "verify": _verify, "import": _import}
    return action[args.models_command](args, config)


def _list(args: argparse.Namespace, config) -> int:
    from osteoscan.errors import ModelError
    from osteoscan.models.registry import MODEL_NAMES, get_spec
    from osteoscan.runtime.devices import inventory
    from osteoscan.runtime.int8 import Int8Spec, gate_verdict
    from osteoscan.runtime.model_source import WEIGHTS_DIR
    from osteoscan.runtime.user_models import list_user_models

    lines = ["shipped models:"]
    for name in MODEL_NAMES:
        try:
            spec = get_spec(name)
            lines.append(f"  {name:<15} {spec.version:<10} sha256 {spec.sha256[:12]}  {spec.onnx_path}")
        except ModelError as exc:
            lines.append(f"  {name:<15} missing ({str(exc).split(';')[0]})")
    lines.append(f"user models ({config.model_dir}):")
    users = list_user_models(config.model_dir)
    for m in users:
        lines.append(f"  {m.name:<15} {m.spec.version:<10} {m.record.get('format')}  parity {m.record.get('parity', {}).get('rel_l2')}")
    if not users:
        lines.append("  none")
    lines.append("int8 artifacts:")
    found = False
    for folder in (config.model_dir, WEIGHTS_DIR):
        for js in sorted(folder.glob("*.int8.json")) if folder.is_dir() else []:
            s = Int8Spec.load(js)
            found = True
            why = gate_verdict(s.gate)[1]
            lines.append(f"  {s.name:<15} {s.version:<14} base {s.base_sha256[:12]}  {js.parent}  gate: {why}")
    if not found:
        lines.append("  none")
    inv = inventory()
    lines.append("back-ends and devices here:")
    lines.append(f"  openvino: {'installed, devices ' + ','.join(inv.openvino_devices) if inv.openvino_installed else 'not installed'}")
    lines.append(f"  onnxruntime: {'providers ' + ','.join(inv.ort_providers) if inv.onnxruntime_installed else 'not installed'}")
    lines.append(f"  torch: {'installed' if inv.torch_installed else 'not installed'}; NVIDIA driver: {'yes' if inv.nvidia_driver else 'no'}")
    print("\n".join(lines))
    return 0


def _export(args: argparse.Namespace, config) -> int:
    import openvino as ov

    from osteoscan.runtime.model_source import resolve_model
    from osteoscan.runtime.openvino_backend import get_core

    source = resolve_model(args.name, config)
    if source.onnx_path is None:
        from osteoscan.errors import ModelError

        raise ModelError(f"model {source.label} has no ONNX artifact to export from")
    args.out.mkdir(parents=True, exist_ok=True)
    xml = args.out / f"{source.name}.xml"
    ov.save_model(get_core().read_model(str(source.onnx_path)), str(xml), compress_to_fp16=args.fp16_weights)
    print(f"wrote {xml} (+ .bin) from {source.onnx_path} (sha256 {source.sha256[:12]})")
    return 0


def _quantize(args: argparse.Namespace, config) -> int:
    from osteoscan.models.registry import MODEL_NAMES, get_spec
    from osteoscan.runtime.calibration import CALIBRATION_SEED0, phantom_calibration_inputs
    from osteoscan.runtime.quantize import quantize

    names = list(MODEL_NAMES) if args.name == ["all"] else args.name
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        from osteoscan.errors import InputError

        raise InputError(f"quantize: unknown model(s) {unknown}; calibration runs the cascade, so only {list(MODEL_NAMES)}")
    seed0 = CALIBRATION_SEED0 if args.seed is None else args.seed
    inputs = phantom_calibration_inputs(args.cases, seed0, config=config, weights_dir=args.weights_dir)
    for name in names:
        model = get_spec(name, weights_dir=args.weights_dir) if args.weights_dir else name
        res = quantize(model, inputs[name], args.out, config=config,
                       calibration_info={"source": "phantom", "n_cases": args.cases, "seed0": seed0})
        print(f"{name}: int8 artifact {res.xml} ({res.size_bytes / 1e6:.1f} MB, {len(inputs[name])} calibration samples, {res.seconds:.1f} s)")
    where = f" --artifact-dir {args.out}" if args.out is not None else ""
    print(f"the pipeline uses an int8 model only once it passed the accuracy gate: "
          f"osteoscan models gate {' '.join(names)}{where} (docs/runtime.md)")
    return 0


def _gate(args: argparse.Namespace, config) -> int:
    """Exit 0 when every named artifact passed, 1 otherwise (the figures are stored either way)."""
    import json

    from osteoscan.errors import InputError
    from osteoscan.models.registry import MODEL_NAMES
    from osteoscan.runtime.int8_gate import (
        format_gate_table,
        measure_gates,
        measure_int8_pipeline,
        write_gate,
    )

    names = list(MODEL_NAMES) if args.name == ["all"] else args.name
    folder = args.artifact_dir or config.model_dir
    if args.pipeline:
        if names:
            raise InputError("gate --pipeline measures the int8 pipeline as shipped/installed; give no model names")
        report = measure_int8_pipeline(cases=args.cases, cohort=args.cohort, weights_dir=args.weights_dir)
        reports = {report.name: report}
    elif not names:
        raise InputError("gate: name the model(s) to gate (or 'all'), or give --pipeline")
    else:
        reports = measure_gates(names, folder, cases=args.cases, cohort=args.cohort, weights_dir=args.weights_dir)
    if not args.no_write and not args.pipeline:
        for r in reports.values():
            log.info("gate of %s written to %s", r.name, write_gate(folder, r))
    if args.json is not None:
        args.json.write_text(json.dumps({n: r.to_gate() for n, r in reports.items()}, indent=2) + "\n")
    print(format_gate_table(reports))
    for r in reports.values():
        print(f"{r.name}: {'PASSED' if r.passed else 'FAILED'} ({r.why})")
    return 0 if all(r.passed for r in reports.values()) else 1


def _verify(args: argparse.Namespace, config) -> int:
    from osteoscan.runtime.verify import format_verify, verify_models

    rows = verify_models(args.name or None, backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()), config=config)
    if not rows:
        log.error("nothing to verify: no shipped weights and no user models (train or import one first)")
        return 1
    print(format_verify(rows))
    return 0 if all(r.passed for r in rows) else 1


def _import(args: argparse.Namespace, config) -> int:
    from osteoscan.runtime.user_models import import_model

    m = import_model(args.path, args.as_name, args.spec, config=config)
    print(f"imported {args.path} as {m.name} ({m.record['format']}) into {m.directory}; parity: {m.record['parity']['reference']}, "
          f"rel L2 {m.record['parity']['rel_l2']}")
    return 0
