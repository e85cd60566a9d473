"""ONNX Runtime back-end: CPU everywhere; CUDA and TensorRT execution providers with onnxruntime-gpu.

Precision: fp32 on every provider; fp16 on TensorRT (``trt_fp16_enable``) and on CUDA (an fp16
copy of the ONNX with fp32 inputs/outputs, made once and cached). ONNX Runtime has no bf16 path
and runs our int8 artifact (an OpenVINO IR) not at all: those raise a BackendError naming the
back-end that can.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from osteoscan.errors import BackendError, ModelError
from osteoscan.runtime.config import RuntimeConfig
from osteoscan.runtime.devices import ORT_CPU, ORT_CUDA, ORT_TRT
from osteoscan.runtime.model_source import ModelSource
from osteoscan.runtime.session import Feed, InferenceSession, check_io_names, to_float32, unsupported
from osteoscan.runtime.types import SessionInfo

log = logging.getLogger(__name__)

#: largest batch per run when the batch axis is dynamic
DEFAULT_BATCH = {"cpu": 4, "cuda": 8}


def parse_cuda_device(device: str) -> int:
    """'cuda' / 'gpu' -> 0, 'cuda:1' -> 1."""
    _, _, idx = device.partition(":")
    if idx and not idx.isdigit():
        raise BackendError(f"onnxruntime: bad CUDA device {device!r}; use cuda or cuda:N")
    return int(idx or 0)


def plan_providers(
    available: Sequence[str], device: str, precision: str, trt_cache: Path
) -> tuple[list[Any], str, str, str]:
    """Execution providers for a request, from the providers this onnxruntime build has.

    Returns (providers for InferenceSession, resolved device, resolved precision, note). A GPU
    request without GPU providers falls back to CPU with a warning; unsupported precisions raise.
    """
    low = device.lower()
    want_gpu = low.startswith("cuda") or low in ("gpu", "auto")
    has_gpu = ORT_CUDA in available or ORT_TRT in available
    note = ""
    if precision == "int8":
        raise unsupported("onnxruntime", "int8 (the int8 artifact is an OpenVINO IR)", "backend='openvino' precision='int8'")
    if precision == "bf16":
        raise unsupported("onnxruntime", "bf16", "backend='openvino' precision='bf16' (CPU) or backend='torch' precision='bf16'")
    if low not in ("auto", "cpu", "gpu") and not low.startswith("cuda"):
        raise BackendError(f"onnxruntime: unknown device {device!r}; use cpu, cuda or cuda:N")
    if want_gpu and not has_gpu:
        if low != "auto":
            log.warning("onnxruntime has no CUDA/TensorRT provider here (providers: %s); falling back to CPU", list(available))
            note = f"{device} unavailable -> cpu"
        want_gpu = False
    if not want_gpu:
        if precision == "fp16":
            raise unsupported(
                "onnxruntime", "fp16 on CPU (no fp16 convolution kernels)",
                "precision='fp32', or backend='openvino' precision='bf16'",
            )
        return [ORT_CPU], "cpu", "fp32", note
    dev_id = parse_cuda_device(device if low.startswith("cuda") else "cuda")
    prec = "fp16" if precision == "auto" and ORT_TRT in available else ("fp32" if precision == "auto" else precision)
    providers: list[Any] = []
    if ORT_TRT in available:
        providers.append((ORT_TRT, {
            "device_id": dev_id,
            "trt_fp16_enable": prec == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(trt_cache),
        }))
    if ORT_CUDA in available:
        providers.append((ORT_CUDA, {"device_id": dev_id}))
    providers.append(ORT_CPU)
    return providers, f"cuda:{dev_id}", prec, note


def fp16_onnx(source: ModelSource, config: RuntimeConfig) -> Path:
    """An fp16 copy of the model (fp32 inputs/outputs kept) for the CUDA provider, cached by sha256."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    assert source.onnx_path is not None
    out = config.onnx_dir / f"{source.name}-{source.sha256[:16]}-fp16.onnx"
    if out.is_file():
        return out
    model = convert_float_to_float16(onnx.load(str(source.onnx_path)), keep_io_types=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=out.parent)
    os.close(fd)
    onnx.save(model, tmp)
    os.replace(tmp, out)
    return out


class OnnxRuntimeSession(InferenceSession):
    """ONNX Runtime ``InferenceSession`` behind the common interface (thread-safe ``run``)."""

    def __init__(
        self,
        source: ModelSource,
        device: str = "cpu",
        precision: str = "auto",
        hint: str = "latency",
        *,
        config: RuntimeConfig | None = None,
        max_batch: int | None = None,
        num_threads: int | None = None,
        reason: str = "",
    ) -> None:
        import onnxruntime as ort

        config = config or RuntimeConfig()
        if source.onnx_path is None:
            raise unsupported(
                "onnxruntime", f"model {source.label} without an ONNX file (OpenVINO-only artifact)", "backend='openvino'"
            )
        t0 = time.perf_counter()
        providers, dev, prec, note = plan_providers(
            ort.get_available_providers(), device, precision, config.onnx_dir / "tensorrt"
        )
        path = source.onnx_path
        uses_trt = any(isinstance(p, tuple) and p[0] == ORT_TRT for p in providers)
        if prec == "fp16" and not uses_trt:
            path = fp16_onnx(source, config)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            opts.intra_op_num_threads = int(num_threads)
        if hint != "latency":
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise ModelError(f"onnxruntime could not load {path}: {exc}") from exc
        active = self._sess.get_providers()
        if dev.startswith("cuda") and not any(p in active for p in (ORT_CUDA, ORT_TRT)):
            log.warning("onnxruntime: CUDA providers failed to initialise (active: %s); running on CPU", active)
            note, dev = f"{dev} provider init failed -> cpu", "cpu"
        self.compile_time_s = time.perf_counter() - t0
        self.providers = tuple(active)
        self.input_names = tuple(i.name for i in self._sess.get_inputs())
        self.output_names = tuple(o.name for o in self._sess.get_outputs())
        check_io_names(source.label, "input", self.input_names, source.input_names)
        check_io_names(source.label, "output", self.output_names, source.output_names)
        self.input_ranks = {i.name: len(i.shape) for i in self._sess.get_inputs()}
        first = self._sess.get_inputs()[0].shape[0]
        kind = "cuda" if dev.startswith("cuda") else "cpu"
        self.batch_size = int(first) if isinstance(first, int) else int(max_batch or DEFAULT_BATCH[kind])
        reason_text = "; ".join(s for s in (reason, note, f"providers {','.join(active)}") if s)
        self.info = SessionInfo(
            backend="onnxruntime",
            device=dev,
            precision=prec,
            model_name=source.name,
            model_version=source.version,
            model_sha256=source.sha256,
            compile_time_s=round(self.compile_time_s, 4),
            hint=hint,
            batch_size=self.batch_size,
            library_version=ort.__version__,
            reason=reason_text,
        )
        log.info("ONNX Runtime session %s on %s, %s, batch %d (%.2f s; %s)",
                 source.label, dev, prec, self.batch_size, self.compile_time_s, reason_text)

    def _run_batch(self, feed: Feed) -> Feed:
        outs = self._sess.run(list(self.output_names), feed)
        return {n: to_float32(o) for n, o in zip(self.output_names, outs)}

    def close(self) -> None:
        self._sess = None
