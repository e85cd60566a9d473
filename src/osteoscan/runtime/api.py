"""``create_session``: the one entry point the pipeline uses to run a model anywhere."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from osteoscan.errors import BackendError
from osteoscan.runtime.config import RuntimeConfig
from osteoscan.runtime.devices import choose
from osteoscan.runtime.int8 import find_int8_artifact
from osteoscan.runtime.model_source import ModelSource, resolve_model
from osteoscan.runtime.session import InferenceSession
from osteoscan.runtime.types import BACKENDS, HINTS, PRECISIONS

log = logging.getLogger(__name__)


def create_session(
    model: Any,
    backend: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    hint: str = "latency",
    *,
    config: RuntimeConfig | None = None,
    max_batch: int | None = None,
    num_streams: int | None = None,
    num_threads: int | None = None,
    torch_compile: bool = False,
) -> InferenceSession:
    """Compile ``model`` on a back-end and device and return a numpy-in/numpy-out session.

    Args:
        model: a ModelSpec, a model name (user-imported first, then shipped), a path to an
            ``.onnx`` / OpenVINO ``.xml`` / TorchScript file, or a :class:`ModelSource`.
        backend: "auto", "openvino", "onnxruntime" or "torch".
        device: "auto", "cpu", "cuda[:N]", "gpu", "xpu" or an OpenVINO name ("GPU.0",
            "AUTO:GPU,CPU"). Unavailable GPUs fall back to the CPU with a warning.
        precision: "auto", "fp32", "bf16", "fp16" or "int8" (int8 uses the quantised artifact
            made by ``osteoscan models quantize``; OpenVINO only). The resolved precision is in
            ``session.info.precision``.
        hint: "latency" (one request as fast as possible), "throughput" (several requests in
            flight: ``infer_many``) or "cumulative_throughput" (OpenVINO AUTO over several devices).
        config: cache and user-model folders (default: ``RuntimeConfig()``).
        max_batch: largest batch per request when the model's batch axis is dynamic.
        num_streams, num_threads: OpenVINO streams / threads (torch, ORT: threads only).
        torch_compile: wrap the torch module in ``torch.compile`` (pays off on GPUs).

    Raises:
        BackendError: unknown back-end/device/precision, or a precision the back-end cannot run
            (the message names the alternative).
        ModelError: missing or corrupt model artifact.
    """
    config = config or RuntimeConfig()
    _check_choice("backend", backend, ("auto", *BACKENDS))
    _check_choice("precision", precision, ("auto", *PRECISIONS))
    _check_choice("hint", hint, HINTS)
    source = resolve_model(model, config)
    if precision == "int8" and source.native_precision != "int8":
        if backend not in ("auto", "openvino"):
            raise BackendError(f"{backend}: int8 is only available on backend='openvino' (NNCF-quantised IR)")
        source = find_int8_artifact(source, config)
    if precision == "auto" and is_regression(source):
        precision = "fp32"
        log.info("%s: precision auto -> fp32 (regression outputs; bf16 shifts BMD by ~1 mg/cm3)", source.label)
    can_onnx = source.onnx_path is not None
    can_torch = source.native_precision != "int8" and (
        source.torch_factory is not None or source.torchscript_path is not None or source.spec is not None
    )
    forced = ""
    if source.native_precision == "int8" or (not can_onnx and source.ir_path is not None and not can_torch):
        if backend not in ("auto", "openvino"):
            raise BackendError(f"{backend}: model {source.label} is an OpenVINO-only artifact; use backend='openvino'")
        forced = "" if backend == "openvino" else "OpenVINO-only artifact (IR)"
        backend = "openvino"
    if not can_onnx and source.ir_path is None and backend == "auto":
        backend, forced = "torch", "TorchScript-only model"
    pick = choose(backend, device, can_torch=can_torch, can_onnx=can_onnx)
    if forced:
        pick = replace(pick, reason=forced)
    if backend == "auto" or device == "auto":
        log.info("runtime picked %s on %s for %s: %s", pick.backend, pick.device, source.label, pick.reason)
    return _open(source, pick.backend, pick.device, precision, hint, config, max_batch, num_streams,
                 num_threads, torch_compile, pick.reason)


def _open(source: ModelSource, backend: str, device: str, precision: str, hint: str, config: RuntimeConfig,
          max_batch: int | None, num_streams: int | None, num_threads: int | None, torch_compile: bool,
          reason: str) -> InferenceSession:
    if backend == "openvino":
        from osteoscan.runtime.openvino_backend import OpenVINOSession

        return OpenVINOSession(source, device, precision, hint, config=config, max_batch=max_batch,
                               num_streams=num_streams, num_threads=num_threads, reason=reason)
    if backend == "onnxruntime":
        from osteoscan.runtime.onnxruntime_backend import OnnxRuntimeSession

        return OnnxRuntimeSession(source, device, precision, hint, config=config, max_batch=max_batch,
                                  num_threads=num_threads, reason=reason)
    from osteoscan.runtime.torch_backend import TorchSession

    return TorchSession(source, device, precision, hint, max_batch=max_batch, num_threads=num_threads,
                        torch_compile=torch_compile, reason=reason)


def is_regression(source: ModelSource) -> bool:
    """A model with a spec but no class labels (the BMD regressor): its outputs are measurements."""
    spec = source.spec
    return spec is not None and hasattr(spec, "label_names") and not spec.label_names


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise BackendError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
