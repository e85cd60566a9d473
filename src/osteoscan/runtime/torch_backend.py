"""PyTorch back-end: CPU, CUDA and Intel XPU; bf16/fp16 autocast; optional ``torch.compile``.

torch is imported only when this back-end is used (the edge install has no torch). The module
comes from, in order: the ModelSource's ``torch_factory``, its TorchScript file, or the models
registry: ``build_torch_model(spec)`` with the weights of the spec's sha256-verified ONNX file, so
all back-ends run identical numbers (falling back to ``load_torch_model(spec)``, the ``.pt``
training state, when the ONNX initialisers do not map one to one onto the state dict).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from osteoscan.errors import BackendError
from osteoscan.runtime.model_source import ModelSource
from osteoscan.runtime.session import Feed, InferenceSession, unsupported
from osteoscan.runtime.types import SessionInfo

log = logging.getLogger(__name__)

#: largest batch per forward pass when not told otherwise
DEFAULT_BATCH = {"cpu": 4, "cuda": 8, "xpu": 8}


def resolve_torch_device(device: str) -> tuple[str, str]:
    """'auto' -> cuda > xpu > cpu; unavailable GPUs fall back to CPU with a warning."""
    import torch

    low = device.lower()
    has_cuda = torch.cuda.is_available()
    has_xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    if low == "auto":
        return ("cuda" if has_cuda else "xpu" if has_xpu else "cpu"), ""
    if low == "cpu":
        return "cpu", ""
    if low.startswith("cuda") or low == "gpu":
        if has_cuda:
            return ("cuda" if low == "gpu" else low), ""
        if low == "gpu" and has_xpu:
            return "xpu", ""
    elif low.startswith("xpu"):
        if has_xpu:
            return low, ""
    else:
        raise BackendError(f"torch: unknown device {device!r}; use cpu, cuda[:N], xpu[:N] or gpu")
    log.warning("torch: device %r is not available here; falling back to CPU", device)
    return "cpu", f"{device} unavailable -> cpu"


def resolve_torch_precision(precision: str, device_type: str) -> str:
    """'auto' -> fp32 on CPU, fp16 on GPUs; fp16 on CPU and int8 anywhere are refused."""
    if precision == "int8":
        raise unsupported("torch", "int8 (the int8 artifact is an OpenVINO IR)", "backend='openvino' precision='int8'")
    if precision == "auto":
        return "fp32" if device_type == "cpu" else "fp16"
    if precision == "fp16" and device_type == "cpu":
        raise unsupported("torch", "fp16 on CPU", "precision='bf16' (autocast) or backend='openvino' precision='bf16'")
    return precision


def build_module(source: ModelSource) -> tuple[Any, str]:
    """The ``nn.Module`` for a source and where its weights came from ("factory", "torchscript",
    "onnx" or "pt"); see the module docstring for the order."""
    import torch

    if source.torch_factory is not None:
        return source.torch_factory(), "factory"
    if source.torchscript_path is not None:
        return torch.jit.load(str(source.torchscript_path), map_location="cpu"), "torchscript"
    if source.spec is not None:
        try:
            from osteoscan.models.registry import build_torch_model, load_torch_model
        except ImportError as exc:
            raise BackendError(f"torch: the models registry is unavailable ({exc}); cannot build {source.label}") from exc
        module = _module_with_onnx_weights(source, build_torch_model) if source.onnx_path is not None else None
        return (module, "onnx") if module is not None else (load_torch_model(source.spec), "pt")
    raise unsupported(
        "torch", f"model {source.label} without a spec, TorchScript file or torch_factory",
        "backend='openvino' or 'onnxruntime' for a bare ONNX file",
    )


def _module_with_onnx_weights(source: ModelSource, build: Any) -> Any | None:
    """The registry's architecture with the weights of the sha256-verified ONNX file.

    The ONNX is the distribution artifact every other back-end runs; taking the torch weights from
    it (instead of the ``.pt`` training state, which the models package stores in fp16) makes all
    back-ends run the same numbers. Returns None (caller falls back to the ``.pt``) when the ONNX
    initialisers do not cover the module's state dict one to one (e.g. folded batch norms).
    """
    import onnx
    import torch
    from onnx import numpy_helper

    module = build(source.spec)
    state = module.state_dict()
    graph = onnx.load(str(source.onnx_path)).graph
    inits = {i.name: i for i in graph.initializer}
    # batch-norm step counters are not used in eval mode and never exported
    needed = {k for k in state if not k.endswith("num_batches_tracked")}
    if not needed <= set(inits):
        log.info("torch: %s ONNX initialisers do not cover the state dict; loading the .pt weights", source.label)
        return None
    new_state = dict(state)
    for key in needed:
        ref = state[key]
        arr = numpy_helper.to_array(inits[key])
        if tuple(arr.shape) != tuple(ref.shape):
            log.info("torch: %s ONNX initialiser %s has shape %s, module %s; loading the .pt weights",
                     source.label, key, arr.shape, tuple(ref.shape))
            return None
        new_state[key] = torch.from_numpy(arr.copy()).to(ref.dtype)
    module.load_state_dict(new_state)
    return module.eval()


class TorchSession(InferenceSession):
    """``nn.Module`` in eval mode under ``torch.inference_mode`` (+ autocast for bf16/fp16)."""

    def __init__(
        self,
        source: ModelSource,
        device: str = "auto",
        precision: str = "auto",
        hint: str = "latency",
        *,
        max_batch: int | None = None,
        num_threads: int | None = None,
        torch_compile: bool = False,
        reason: str = "",
    ) -> None:
        import torch

        t0 = time.perf_counter()
        dev, note = resolve_torch_device(device)
        self._device = torch.device(dev)
        prec = resolve_torch_precision(precision, self._device.type)
        if num_threads:
            torch.set_num_threads(int(num_threads))  # process-wide: torch has no per-module setting
        # no cudnn.benchmark: the coarse model takes each scan's own window shape, and a per-shape
        # algorithm search (seconds for 3-D convolutions) on every new case costs more than it
        # saves (on the fixed 0.1.0 patches it gained nothing either: 184 vs 175 ms on the H100)
        module, self.weights_source = build_module(source)
        module = module.eval().to(self._device)
        if torch_compile:
            module = torch.compile(module)
        self._module = module
        self._dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
        self.compile_time_s = time.perf_counter() - t0
        spec = source.spec
        self.input_names = source.input_names or tuple(getattr(spec, "input_names", None) or ("input",))
        self.output_names = source.output_names or tuple(getattr(spec, "output_names", None) or ("output",))
        patch = source.patch_size or getattr(spec, "patch_size", None)
        rank = 2 + len(patch) if patch else None
        self.input_ranks = {n: rank for n in self.input_names}
        self.batch_size = int(max_batch or DEFAULT_BATCH.get(self._device.type, 4))
        reason_text = "; ".join(s for s in (reason, note, f"weights from {self.weights_source}",
                                            "torch.compile" if torch_compile else "") if s)
        self.info = SessionInfo(
            backend="torch",
            device=str(self._device),
            precision=prec,
            model_name=source.name,
            model_version=source.version,
            model_sha256=source.sha256,
            compile_time_s=round(self.compile_time_s, 4),
            hint=hint,
            batch_size=self.batch_size,
            library_version=torch.__version__,
            reason=reason_text,
        )
        log.info("torch session %s on %s, %s, batch %d (%.2f s)", source.label, dev, prec, self.batch_size, self.compile_time_s)

    def _forward(self, feed: Feed) -> Feed:
        import torch

        tensors = [torch.from_numpy(feed[n]).to(self._device) for n in self.input_names]
        with torch.inference_mode():
            if self._dtype is not None:
                with torch.autocast(device_type=self._device.type, dtype=self._dtype):
                    out = self._module(*tensors)
            else:
                out = self._module(*tensors)
        return self._name_outputs(out)

    def _name_outputs(self, out: Any) -> Feed:
        if isinstance(out, Mapping):
            items = list(out.items())
        elif isinstance(out, (tuple, list)):
            if len(out) != len(self.output_names):
                raise BackendError(
                    f"torch: model {self.info.model_name} returned {len(out)} outputs, spec names {list(self.output_names)}"
                )
            items = list(zip(self.output_names, out))
        else:
            items = [(self.output_names[0], out)]
        return {str(k): v.detach().float().cpu().numpy() for k, v in items}

    def _run_batch(self, feed: Feed) -> Feed:
        """Forward pass; on CUDA out-of-memory, halve the batch and retry (each downgrade logged)."""
        import torch

        try:
            return self._forward(feed)
        except torch.OutOfMemoryError:
            n = next(iter(feed.values())).shape[0]
            if n <= 1:
                raise
            torch.cuda.empty_cache() if self._device.type == "cuda" else None
            half = n // 2
            log.warning("torch: out of memory with batch %d on %s; retrying as %d + %d", n, self._device, half, n - half)
            self.batch_size = max(1, half)
            a = self._run_batch({k: v[:half] for k, v in feed.items()})
            b = self._run_batch({k: v[half:] for k, v in feed.items()})
            import numpy as np

            return {k: np.concatenate([a[k], b[k]]) for k in a}

    def close(self) -> None:
        self._module = None
