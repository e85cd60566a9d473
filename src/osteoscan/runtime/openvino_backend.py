"""OpenVINO back-end: the default on x86 CPUs and Intel GPUs.

* The IR is derived from the shipped ONNX once and cached on disk, keyed by the model's sha256,
  the OpenVINO version, the device and the precision; OpenVINO's own ``CACHE_DIR`` additionally
  caches compiled blobs so a warm start skips compilation.
* ``INFERENCE_PRECISION_HINT`` is always set explicitly: OpenVINO's CPU default on CPUs with
  native bf16 (AVX512-BF16/AMX, e.g. this machine) is bf16, which would silently change results.
* A GPU that OpenVINO cannot use (no OpenCL runtime) is detected and replaced by the CPU with a
  warning; a GPU compile failure falls back the same way.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from osteoscan.errors import BackendError, ModelError
from osteoscan.runtime.config import RuntimeConfig
from osteoscan.runtime.model_source import ModelSource
from osteoscan.runtime.session import Feed, InferenceSession, check_io_names, to_float32, unsupported
from osteoscan.runtime.types import SessionInfo

log = logging.getLogger(__name__)

_CORE: Any = None
_CORE_LOCK = threading.Lock()

#: our precision names -> OpenVINO element type names
OV_TYPES = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
#: largest batch sent in one request when the model's batch axis is dynamic (latency, throughput)
DEFAULT_BATCH = {"CPU": (4, 1), "GPU": (8, 8)}


def get_core() -> Any:
    """One ``ov.Core`` per process (plugins load once)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            import openvino as ov

            _CORE = ov.Core()
        return _CORE


def ov_version() -> str:
    import openvino as ov

    return ov.get_version().split("-")[0]


def physical_devices(device: str) -> list[str]:
    """``AUTO:GPU.0,CPU`` -> ``["GPU.0", "CPU"]``; ``CPU`` -> ``["CPU"]``; bare ``AUTO`` -> all."""
    head, _, rest = device.partition(":")
    if head in ("AUTO", "MULTI", "HETERO"):
        return [d.strip() for d in rest.split(",") if d.strip()] or list(get_core().available_devices)
    return [device]


def resolve_device(device: str, available: Sequence[str]) -> tuple[str, str]:
    """Map our device words to an OpenVINO device string usable here; returns (device, note).

    GPUs that are not listed (no OpenCL runtime) are dropped with a warning, never an error.
    """
    low = device.lower()
    if low in ("auto",):
        dev = "GPU" if any(d.startswith("GPU") for d in available) else "CPU"
        return dev, f"auto -> {dev}"
    if low == "cpu":
        return "CPU", ""
    if low in ("gpu", "xpu"):
        device = "GPU"
    if low.startswith("cuda"):
        raise BackendError(
            f"openvino: NVIDIA device {device!r} is not supported; use backend='onnxruntime' or 'torch' for CUDA"
        )
    head, _, rest = device.partition(":")
    if head in ("AUTO", "MULTI", "HETERO"):
        wanted = [d.strip() for d in rest.split(",") if d.strip()]
        usable = [d for d in wanted if _listed(d, available)]
        dropped = [d for d in wanted if d not in usable]
        if dropped:
            log.warning("OpenVINO devices %s are not available here (available: %s); dropping them", dropped, list(available))
        if wanted and not usable:
            return "CPU", f"{device} unavailable -> CPU"
        if len(usable) == 1 and head != "AUTO":
            return usable[0], f"{device}: only {usable[0]} available"
        return (f"{head}:{','.join(usable)}" if wanted else head), ""
    if _listed(device, available):
        return device, ""
    log.warning(
        "OpenVINO device %r is not available here (available: %s; a GPU needs an OpenCL runtime); "
        "falling back to CPU",
        device,
        list(available),
    )
    return "CPU", f"{device} unavailable -> CPU"


def _listed(device: str, available: Sequence[str]) -> bool:
    if device in available:
        return True
    return device == "GPU" and any(d.startswith("GPU") for d in available)


def resolve_precision(precision: str, device: str, native: str | None) -> str:
    """'auto' -> bf16 on CPUs with native bf16, fp16 on GPUs, else fp32; validate explicit requests."""
    core = get_core()
    phys = physical_devices(device)
    if native == "int8":
        if precision not in ("auto", "int8"):
            raise BackendError(f"openvino: the model is an int8 artifact; ask for precision 'int8', not {precision!r}")
        return "int8"
    if precision == "int8":
        raise BackendError(
            "openvino: no int8 artifact for this model; create one with `osteoscan models quantize NAME`"
        )
    caps = {d: _capabilities(core, d) for d in phys}
    if precision == "auto":
        if all(d.startswith("GPU") for d in phys):
            return "fp16"
        if all("BF16" in c for c in caps.values()):
            return "bf16"
        return "fp32"
    if precision == "fp32":
        return precision
    need = {"bf16": "BF16", "fp16": "FP16"}[precision]
    lacking = [d for d, c in caps.items() if need not in c]
    if lacking:
        alt = "fp32 (or bf16 on CPUs with AVX512-BF16/AMX)" if precision == "fp16" else "fp32 (or fp16 on a GPU)"
        raise unsupported("openvino", f"precision {precision} on {', '.join(lacking)} (no native {need})", alt)
    return precision


def _capabilities(core: Any, device: str) -> set[str]:
    try:
        return set(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except RuntimeError as exc:
        log.warning("cannot read OPTIMIZATION_CAPABILITIES of %s (%s)", device, exc)
        return {"FP32"}


def ir_cache_key(source: ModelSource, device: str, precision: str) -> str:
    """Folder name of a cached IR: model sha256 + OpenVINO version + device + precision."""
    safe_dev = "".join(c if c.isalnum() or c in ".-" else "_" for c in device)
    return f"{source.name}-{source.sha256[:16]}-ov{ov_version()}-{safe_dev}-{precision}"


def load_model(source: ModelSource, device: str, precision: str, config: RuntimeConfig) -> tuple[Any, str]:
    """The ``ov.Model``: from an IR artifact, from the IR cache, or converted from ONNX (and cached).

    Returns the model and a note on where it came from.
    """
    import openvino as ov

    core = get_core()
    if source.ir_path is not None:
        return core.read_model(str(source.ir_path)), f"IR {source.ir_path.name}"
    if source.onnx_path is None:
        raise ModelError(f"model {source.label} has no ONNX or OpenVINO IR artifact; the openvino back-end needs one")
    if not config.use_cache:
        return core.read_model(str(source.onnx_path)), "ONNX (cache off)"
    final = config.ir_dir / ir_cache_key(source, device, precision)
    xml = final / "model.xml"
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return core.read_model(str(xml)), "cached IR"
    model = core.read_model(str(source.onnx_path))
    config.ir_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=config.ir_dir))
    try:
        # fp16 weights halve the IR for GPU fp16; CPU paths keep fp32 weights (bf16 converts at load)
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=precision == "fp16")
        try:
            os.replace(tmp, final)  # atomic: a concurrent process either sees all of it or none
        except OSError:
            if not xml.is_file():  # lost a race with another process that wrote the same key
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("cached OpenVINO IR of %s in %s", source.label, final)
    return model, "ONNX converted to IR"


def compile_config(device: str, precision: str, hint: str, config: RuntimeConfig,
                   num_streams: int | None, num_threads: int | None) -> dict[str, Any]:
    """Compile properties; the precision hint is always explicit (per device for AUTO/MULTI)."""
    import openvino as ov

    ov_type = getattr(ov.Type, OV_TYPES.get(precision, "f32"))  # int8 artifacts: other ops in f32
    mode = {"latency": "LATENCY", "throughput": "THROUGHPUT", "cumulative_throughput": "CUMULATIVE_THROUGHPUT"}[hint]
    phys = physical_devices(device)
    multi = device.split(":", 1)[0] in ("AUTO", "MULTI", "HETERO")
    if mode == "CUMULATIVE_THROUGHPUT" and not device.startswith("AUTO"):
        mode = "THROUGHPUT"  # CUMULATIVE_THROUGHPUT is an AUTO-plugin mode
    per_device: dict[str, Any] = {"INFERENCE_PRECISION_HINT": ov_type}
    if num_threads and not multi:
        per_device["INFERENCE_NUM_THREADS"] = int(num_threads)
    if num_streams and not multi:
        per_device["NUM_STREAMS"] = int(num_streams)
    cfg: dict[str, Any] = {"PERFORMANCE_HINT": mode}
    if multi:
        cfg["DEVICE_PROPERTIES"] = {d: dict(per_device) for d in phys}
    else:
        cfg.update(per_device)
    if config.use_cache:
        config.ov_blob_dir.mkdir(parents=True, exist_ok=True)
        cfg["CACHE_DIR"] = str(config.ov_blob_dir)
    return cfg


class OpenVINOSession(InferenceSession):
    """Compiled OpenVINO model; thread-safe (one infer request per thread)."""

    def __init__(
        self,
        source: ModelSource,
        device: str = "CPU",
        precision: str = "auto",
        hint: str = "latency",
        *,
        config: RuntimeConfig | None = None,
        max_batch: int | None = None,
        num_streams: int | None = None,
        num_threads: int | None = None,
        reason: str = "",
    ) -> None:
        import openvino as ov

        config = config or RuntimeConfig()
        core = get_core()
        t0 = time.perf_counter()
        dev, note = resolve_device(device, core.available_devices)
        prec = resolve_precision(precision, dev, source.native_precision)
        model, origin = load_model(source, dev, prec, config)
        try:
            compiled = core.compile_model(model, dev, compile_config(dev, prec, hint, config, num_streams, num_threads))
        except RuntimeError as exc:
            if dev == "CPU":
                raise BackendError(f"openvino: compiling {source.label} on CPU failed: {exc}") from exc
            log.warning("OpenVINO could not compile %s on %s (%s); falling back to CPU", source.label, dev, exc)
            note = f"{dev} compile failed -> CPU"
            dev = "CPU"
            prec = resolve_precision(precision, dev, source.native_precision)
            model, origin = load_model(source, dev, prec, config)
            compiled = core.compile_model(model, dev, compile_config(dev, prec, hint, config, num_streams, num_threads))
        self.compile_time_s = time.perf_counter() - t0
        self._compiled = compiled
        self._local = threading.local()
        self.input_names = tuple(p.get_any_name() for p in compiled.inputs)
        self.output_names = tuple(p.get_any_name() for p in compiled.outputs)
        check_io_names(source.label, "input", self.input_names, source.input_names)
        check_io_names(source.label, "output", self.output_names, source.output_names)
        self.input_ranks = {
            p.get_any_name(): (p.get_partial_shape().rank.get_length() if p.get_partial_shape().rank.is_static else None)
            for p in compiled.inputs
        }
        batch_dim = compiled.inputs[0].get_partial_shape()[0]
        kind = "GPU" if all(d.startswith("GPU") for d in physical_devices(dev)) else "CPU"
        default = DEFAULT_BATCH[kind][0 if hint == "latency" else 1]
        self.batch_size = batch_dim.get_length() if batch_dim.is_static else int(max_batch or default)
        try:
            self.n_requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        except RuntimeError:
            self.n_requests = 1
        reason_text = "; ".join(s for s in (reason, note, origin) if s)
        self.info = SessionInfo(
            backend="openvino",
            device=dev,
            precision=prec,
            model_name=source.name,
            model_version=source.version,
            model_sha256=source.sha256,
            compile_time_s=round(self.compile_time_s, 4),
            hint=hint,
            batch_size=self.batch_size,
            library_version=ov.get_version(),
            reason=reason_text,
        )
        log.info(
            "OpenVINO session %s on %s, %s, hint %s, batch %d, %d requests (%.2f s; %s)",
            source.label, dev, prec, hint, self.batch_size, self.n_requests, self.compile_time_s, reason_text,
        )

    @property
    def compiled_model(self) -> Any:
        """The underlying ``ov.CompiledModel`` (read its properties, e.g. the actual precision)."""
        return self._compiled

    def _request(self) -> Any:
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self._compiled.create_infer_request()
        return req

    def _run_batch(self, feed: Feed) -> Feed:
        req = self._request()
        req.infer(feed)
        return {name: to_float32(req.get_output_tensor(i).data).copy() for i, name in enumerate(self.output_names)}

    def _async_requests(self) -> list[Any]:
        reqs = getattr(self._local, "async_requests", None)
        if reqs is None:
            reqs = self._local.async_requests = [self._compiled.create_infer_request() for _ in range(self.n_requests)]
        return reqs

    def _collect(self, request: Any) -> Feed:
        return {n: to_float32(request.get_output_tensor(i).data).copy() for i, n in enumerate(self.output_names)}

    def _run_many(self, feeds: Sequence[Feed]) -> list[Feed]:
        """Keep ``n_requests`` requests in flight (what ``ov.AsyncInferQueue`` does), with
        ``start_async``/``wait`` and no Python callbacks: AsyncInferQueue's callbacks and userdata
        are released on OpenVINO's stream threads, which deadlocked against the GIL when a
        compiled model was destroyed (OpenVINO 2026.4, seen in this project's tests)."""
        if self.n_requests <= 1 or len(feeds) <= 1:
            return [self._run_batch(f) for f in feeds]
        reqs = self._async_requests()
        results: list[Feed | None] = [None] * len(feeds)
        pending: dict[int, int] = {}  # request slot -> job index
        try:
            for i, feed in enumerate(feeds):
                k = i % len(reqs)
                if k in pending:
                    reqs[k].wait()
                    results[pending.pop(k)] = self._collect(reqs[k])
                reqs[k].start_async(feed)
                pending[k] = i
            for k, i in sorted(pending.items(), key=lambda kv: kv[1]):
                reqs[k].wait()
                results[i] = self._collect(reqs[k])
            pending.clear()
        finally:
            for k in pending:  # an exception left requests running: let them finish before reuse
                reqs[k].wait()
        return [r for r in results if r is not None]

    def close(self) -> None:
        self._local = threading.local()
        self._compiled = None
