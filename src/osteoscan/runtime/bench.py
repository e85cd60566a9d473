"""Model benchmarks: model x back-end x device x precision -> latency, throughput, memory, first call.

``osteoscan bench --models`` (pipeline CLI) calls :func:`run_model_bench` and prints
:func:`format_bench_table`. Combinations a back-end cannot run (e.g. ONNX Runtime bf16) become
rows with ``status`` "n/a: <reason>" instead of aborting the table. Each row starts from a cold
cache by default, so ``first_call_s`` includes ONNX->IR conversion and compilation.
"""

from __future__ import annotations

import gc
import logging
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osteoscan.errors import BackendError, ModelError
from osteoscan.runtime.config import RuntimeConfig
from osteoscan.runtime.model_source import ModelSource, resolve_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchRow:
    """One measured (or refused) combination."""

    model: str
    backend: str
    device: str
    precision: str
    input_shape: tuple[int, ...]
    median_ms: float | None = None
    min_ms: float | None = None
    throughput_per_s: float | None = None
    peak_mem_mb: float | None = None
    first_call_s: float | None = None
    n_runs: int = 0
    status: str = "ok"


class _PeakRSS:
    """Peak resident memory above the starting level, sampled every few ms in a thread."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.base = _rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval_s)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def _rss() -> int:
    """Current resident set size in bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def default_input_shape(source: ModelSource, batch_size: int) -> tuple[int, ...]:
    """(batch, in_channels, *patch_size) from the model's spec."""
    if source.in_channels is None or source.patch_size is None:
        raise ModelError(f"model {source.label}: no spec patch size; pass input_shapes={{name: shape}}")
    return (batch_size, int(source.in_channels), *source.patch_size)


def run_model_bench(
    models: Sequence[Any] | None = None,
    backends: Sequence[str] = ("openvino", "onnxruntime", "torch"),
    devices: Sequence[str] | None = None,
    precisions: Sequence[str] = ("fp32", "bf16", "int8"),
    *,
    device: str | None = None,
    repeats: int = 5,
    n_warmup: int = 1,
    batch_size: int = 1,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    config: RuntimeConfig | None = None,
    cold_cache: bool = True,
    isolate: bool = True,
    hint: str = "latency",
    num_threads: int | None = None,
    seed: int = 0,
) -> list[BenchRow]:
    """Benchmark every combination; returns rows in loop order (model, back-end, device, precision).

    Args:
        models: specs / names / paths / ModelSources; default: every shipped model with weights.
        devices: devices to try (default ``[device or "cpu"]``).
        repeats: timed runs per row (after ``n_warmup`` untimed ones, the first of which is the
            timed first call).
        input_shapes: input shape per model name (default ``(batch_size, in_channels, *patch)``).
        cold_cache: compile each row from scratch in a fresh cache folder (int8 artifacts are still
            looked up in ``config.model_dir``), so ``first_call_s`` includes ONNX->IR + compile.
        isolate: run each row in a fresh process (spawned, back-end libraries imported before the
            clock starts), so one row's memory and warm caches do not leak into the next row's
            peak memory and first call. Models that cannot be pickled (a ``torch_factory``
            closure) are measured in-process, with a log line saying so.
    """
    base = config or RuntimeConfig()
    if models is None:
        models = shipped_models()
    devices = list(devices) if devices else [device or "cpu"]
    _preload(backends)  # library import cost must not land in the first row's memory/first call
    rng = np.random.default_rng(seed)
    rows: list[BenchRow] = []
    for model in models:
        source = resolve_model(model, base)
        shape = tuple(int(v) for v in (input_shapes or {}).get(source.name, ()) or default_input_shape(source, batch_size))
        x = rng.random(shape, dtype=np.float32)
        for backend in backends:
            for dev in devices:
                for precision in precisions:
                    with tempfile.TemporaryDirectory(prefix="osteoscan-bench-") as tmp:
                        cfg = RuntimeConfig(cache_dir=Path(tmp), model_dir=base.model_dir) if cold_cache else base
                        job = (source, backend, dev, precision, hint, cfg, x, repeats, n_warmup, num_threads)
                        rows.append(_isolated(job) if isolate and _picklable(source) else _bench_one(*job))
                    log.info("bench %s", rows[-1])
    return rows


def shipped_models() -> list[Any]:
    """Specs of the shipped models whose weights are present (none -> ModelError)."""
    from osteoscan.models.registry import MODEL_NAMES, get_spec

    specs = []
    for name in MODEL_NAMES:
        try:
            specs.append(get_spec(name))
        except ModelError as exc:
            log.warning("bench: skipping %s (%s)", name, exc)
    if not specs:
        raise ModelError("no shipped model weights found to benchmark; train/export them first (osteoscan train)")
    return specs


def _preload(backends: Sequence[str]) -> None:
    import importlib

    modules = {"openvino": "openvino", "onnxruntime": "onnxruntime", "torch": "torch"}
    for b in backends:
        if b in modules:
            try:
                importlib.import_module(modules[b])
            except ImportError:
                log.info("bench: %s not installed; its rows will say n/a", b)


def _picklable(source: ModelSource) -> bool:
    import pickle

    try:
        pickle.dumps(source)
        return True
    except (pickle.PicklingError, AttributeError, TypeError):
        log.info("bench: %s cannot be sent to a subprocess; measuring in-process", source.label)
        return False


def _isolated(job: tuple[Any, ...]) -> BenchRow:
    """``_bench_one`` in a fresh spawned process."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(_child_bench, job).result()


def _child_bench(job: tuple[Any, ...]) -> BenchRow:
    _preload([job[1]])
    return _bench_one(*job)


def _bench_one(source: ModelSource, backend: str, device: str, precision: str, hint: str,
               cfg: RuntimeConfig, x: np.ndarray, n_runs: int, n_warmup: int, num_threads: int | None) -> BenchRow:
    from osteoscan.runtime.api import create_session

    shape = tuple(x.shape)
    gc.collect()
    try:
        with _PeakRSS() as mem:
            t0 = time.perf_counter()
            session = create_session(source, backend=backend, device=device, precision=precision, hint=hint,
                                      config=cfg, max_batch=shape[0], num_threads=num_threads)
            session.infer(x)
            first = time.perf_counter() - t0
            for _ in range(max(0, n_warmup - 1)):
                session.infer(x)
            times = []
            for _ in range(n_runs):
                t = time.perf_counter()
                session.infer(x)
                times.append(time.perf_counter() - t)
            info = session.info
            session.close()
    except (BackendError, ModelError) as exc:
        return BenchRow(source.name, backend, device, precision, shape, status=f"n/a: {exc}")
    med = statistics.median(times)
    return BenchRow(
        model=source.name,
        backend=info.backend,
        device=info.device,
        precision=info.precision,
        input_shape=shape,
        median_ms=med * 1e3,
        min_ms=min(times) * 1e3,
        throughput_per_s=shape[0] / med,
        peak_mem_mb=mem.delta_mb,
        first_call_s=first,
        n_runs=n_runs,
    )


def format_rows(rows: Sequence[BenchRow]) -> str:
    """Alias of :func:`format_bench_table` (the name ``osteoscan bench --models`` uses)."""
    return format_bench_table(rows)


def speedups(rows: Sequence[BenchRow], baseline: tuple[str, str] = ("torch", "fp32")) -> dict[int, float]:
    """Row index -> speed-up of its median latency over the baseline (back-end, precision) row of
    the same model and input shape measured in the same run."""
    ref = {
        (r.model, r.input_shape): r.median_ms
        for r in rows
        if r.status == "ok" and (r.backend, r.precision) == baseline and r.median_ms
    }
    out = {}
    for i, r in enumerate(rows):
        base = ref.get((r.model, r.input_shape))
        if r.status == "ok" and base and r.median_ms:
            out[i] = base / r.median_ms
    return out


def format_bench_table(rows: Sequence[BenchRow], baseline: tuple[str, str] = ("torch", "fp32")) -> str:
    """Markdown table of ``rows`` with a speed-up column over ``baseline`` (same run)."""
    sp = speedups(rows, baseline)
    head = ("| model | back-end | device | precision | input | median ms | throughput /s | peak mem MB "
            f"| first call s | x vs {baseline[0]} {baseline[1]} |")
    lines = [head, "|" + "---|" * 10]
    for i, r in enumerate(rows):
        shape = "x".join(str(v) for v in r.input_shape)
        if r.status != "ok":
            note = r.status.split(";")[0][:80]
            lines.append(f"| {r.model} | {r.backend} | {r.device} | {r.precision} | {shape} | {note} | | | | |")
            continue
        lines.append(
            f"| {r.model} | {r.backend} | {r.device} | {r.precision} | {shape} | {r.median_ms:.1f} | "
            f"{r.throughput_per_s:.2f} | {r.peak_mem_mb:.0f} | {r.first_call_s:.2f} | "
            f"{sp[i]:.2f} |" if i in sp else
            f"| {r.model} | {r.backend} | {r.device} | {r.precision} | {shape} | {r.median_ms:.1f} | "
            f"{r.throughput_per_s:.2f} | {r.peak_mem_mb:.0f} | {r.first_call_s:.2f} | - |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class StreamRow:
    """Throughput of one way of running a list of jobs on this machine."""

    mode: str
    n_jobs: int
    wall_s: float
    jobs_per_s: float


def run_stream_bench(model: Any, x: np.ndarray, n_jobs: int = 8, *, precision: str = "fp32",
                     config: RuntimeConfig | None = None) -> list[StreamRow]:
    """OpenVINO CPU: 1 stream (latency hint, jobs in sequence) vs 2 streams (throughput hint,
    ``infer_many``) vs a DevicePool of two 1-thread sessions; same jobs, same machine."""
    from osteoscan.runtime.api import create_session
    from osteoscan.runtime.pool import DevicePool

    jobs = [x] * n_jobs
    rows = []
    one = create_session(model, backend="openvino", device="CPU", precision=precision, hint="latency",
                         config=config, max_batch=x.shape[0])
    one.infer(x)
    t = time.perf_counter()
    for j in jobs:
        one.infer(j)
    rows.append(_stream_row("1 stream (latency hint), sequential", n_jobs, time.perf_counter() - t))
    two = create_session(model, backend="openvino", device="CPU", precision=precision, hint="throughput",
                         config=config, num_streams=2, max_batch=x.shape[0])
    two.infer_many(jobs[:2])
    t = time.perf_counter()
    two.infer_many(jobs)
    rows.append(_stream_row("2 streams (throughput hint), infer_many", n_jobs, time.perf_counter() - t))
    pool = DevicePool([create_session(model, backend="openvino", device="CPU", precision=precision,
                                      config=config, num_threads=1, num_streams=1, max_batch=x.shape[0])
                       for _ in range(2)])
    pool.map(jobs[:2])
    pool.map(jobs)
    assert pool.last_stats is not None
    rows.append(_stream_row("DevicePool: 2 sessions x 1 thread", n_jobs, pool.last_stats.wall_s))
    return rows


def _stream_row(mode: str, n: int, wall: float) -> StreamRow:
    return StreamRow(mode=mode, n_jobs=n, wall_s=wall, jobs_per_s=n / wall)


def format_stream_table(rows: Sequence[StreamRow]) -> str:
    lines = ["| mode | jobs | wall s | jobs/s | x vs first |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.mode} | {r.n_jobs} | {r.wall_s:.2f} | {r.jobs_per_s:.2f} | {r.jobs_per_s / rows[0].jobs_per_s:.2f} |")
    return "\n".join(lines)
