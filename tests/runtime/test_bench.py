"""run_model_bench: rows for every combination, refusals as n/a rows, speed-up over torch fp32."""

from __future__ import annotations

from osteoscan.runtime import ModelSource
from osteoscan.runtime.bench import (
    format_bench_table,
    format_stream_table,
    run_model_bench,
    run_stream_bench,
    speedups,
)


def test_bench_rows_and_table(tiny3d, rt_config):
    path, factory = tiny3d
    src = ModelSource.from_onnx(path, torch_factory=factory)
    rows = run_model_bench([src], backends=("openvino", "onnxruntime", "torch"), precisions=("fp32", "bf16"),
                           repeats=2, input_shapes={"tiny3d": (2, 1, 16, 16, 16)}, config=rt_config)
    assert len(rows) == 6  # a torch_factory closure cannot be pickled: measured in-process
    by = {(r.backend, r.precision): r for r in rows}
    assert by[("onnxruntime", "bf16")].status.startswith("n/a") and "openvino" in by[("onnxruntime", "bf16")].status
    for key in [("openvino", "fp32"), ("openvino", "bf16"), ("onnxruntime", "fp32"), ("torch", "fp32"), ("torch", "bf16")]:
        r = by[key]
        assert r.status == "ok" and r.median_ms > 0 and r.first_call_s > 0 and r.n_runs == 2, key
        assert abs(r.throughput_per_s - 2 / (r.median_ms / 1e3)) < 1e-6
    sp = speedups(rows)
    torch_idx = rows.index(by[("torch", "fp32")])
    assert abs(sp[torch_idx] - 1.0) < 1e-9
    table = format_bench_table(rows)
    assert "x vs torch fp32" in table and table.count("\n") == 7 and "| 1.00 |" in table


def test_bench_isolated_rows(tiny3d, rt_config):
    """Picklable models run each row in a fresh process; the row comes back intact."""
    path, _ = tiny3d
    rows = run_model_bench([path], backends=("onnxruntime",), precisions=("fp32", "bf16"), repeats=1,
                           input_shapes={"tiny3d": (1, 1, 16, 16, 16)}, config=rt_config, isolate=True)
    assert rows[0].status == "ok" and rows[0].backend == "onnxruntime" and rows[0].peak_mem_mb is not None
    assert rows[1].status.startswith("n/a")


def test_stream_bench_compares_modes(tiny3d, rt_config):
    path, _ = tiny3d
    import numpy as np

    rows = run_stream_bench(path, np.zeros((1, 1, 16, 16, 16), np.float32), n_jobs=4, config=rt_config)
    assert [r.n_jobs for r in rows] == [4, 4, 4] and all(r.jobs_per_s > 0 for r in rows)
    assert "2 streams" in format_stream_table(rows)
