"""Export a trained model: ONNX (opset 17) + PyTorch state dict + JSON spec with sha256.

The TorchScript-based exporter (``dynamo=False``) is used: it needs no onnxscript, gives the same
graph on the training machine and here, and handles dynamic batch/spatial axes of these plain conv
nets. The exported graph is checked against the PyTorch output with ONNX Runtime when available.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from osteoscan.errors import ModelError
from osteoscan.models.spec import ModelSpec, sha256_file
from osteoscan.train.flops import count_flops, count_params

log = logging.getLogger(__name__)

ONNX_OPSET = 17


def _dynamic_axes(spec: ModelSpec) -> dict[str, dict[int, str]]:
    spatial_names = ["D", "H", "W"][-len(spec.patch_size):]
    axes: dict[str, dict[int, str]] = {}
    for name in spec.input_names:
        a = {0: "N"}
        if spec.dynamic_spatial:
            a.update({i + 2: n for i, n in enumerate(spatial_names)})
        axes[name] = a
    for name in spec.output_names:
        a = {0: "N"}
        if spec.dynamic_spatial and len(spec.output_names) == 1:
            a.update({i + 2: n for i, n in enumerate(spatial_names)})
        axes[name] = a
    return axes


def export_model(
    model: torch.nn.Module,
    spec: ModelSpec,
    out_dir: str | Path,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    check: bool = True,
) -> ModelSpec:
    """Write ``<name>.onnx``, ``<name>.pt`` and ``<name>.json`` into ``out_dir``; return the spec.

    The spec gets params, flops per patch, file names, sha256, training and metrics filled in.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    example = torch.zeros((1, spec.in_channels, *spec.patch_size), dtype=torch.float32)
    flops = count_flops(model, example)
    params = count_params(model)
    onnx_path = out / f"{spec.name}.onnx"
    pt_path = out / f"{spec.name}.pt"
    # float16 halves the shipped size; enough to resume or fine-tune (load_torch_model upcasts)
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}, pt_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(onnx_path),
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            opset_version=ONNX_OPSET,
            dynamic_axes=_dynamic_axes(spec),
            do_constant_folding=True,
            dynamo=False,
        )
    if check:
        _check_onnx(model, spec, onnx_path)
    final = spec.replace(
        params=params,
        flops_per_patch=flops,
        onnx_file=onnx_path.name,
        torch_state_file=pt_path.name,
        sha256=sha256_file(onnx_path),
        training=dict(training or spec.training),
        metrics=dict(metrics or spec.metrics),
        weights_dir=str(out.resolve()),
    )
    final.to_json(out / f"{spec.name}.json")
    log.info("exported %s: %d params, %.2f GFLOP/patch -> %s", spec.name, params, flops / 1e9, onnx_path)
    return final


def _check_onnx(model: torch.nn.Module, spec: ModelSpec, path: Path) -> None:
    """Compare ONNX Runtime with PyTorch on a random batch of 2 (skipped without onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        log.warning("onnxruntime not installed: exported %s not checked", path)
        return
    rng = np.random.default_rng(0)
    x = rng.random((2, spec.in_channels, *spec.patch_size), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    refs = ref if isinstance(ref, tuple) else (ref,)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(list(spec.output_names), {spec.input_names[0]: x})
    for name, r, o in zip(spec.output_names, refs, outs):
        r = r.numpy()
        err = float(np.abs(r - o).max() / (np.abs(r).max() + 1e-6))
        if not np.isfinite(err) or err > 1e-3:
            raise ModelError(f"ONNX export of {spec.name} differs from PyTorch on output {name}: rel err {err:.2e}")
