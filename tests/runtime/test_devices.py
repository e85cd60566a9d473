"""Device and back-end selection: auto picks, GPU fall-backs (never a crash), provider plans."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from osteoscan.errors import BackendError
from osteoscan.runtime import create_session, inventory
from osteoscan.runtime.devices import Inventory, choose
from osteoscan.runtime.onnxruntime_backend import plan_providers
from osteoscan.runtime.openvino_backend import resolve_device

CPU_ONLY = Inventory(True, True, True, ("CPU",), ("CPUExecutionProvider",), nvidia_driver=False)


def inv(**kw) -> Inventory:
    base = dict(openvino_installed=True, onnxruntime_installed=True, torch_installed=True,
                openvino_devices=("CPU",), ort_providers=("CPUExecutionProvider",), nvidia_driver=False)
    base.update(kw)
    return Inventory(**base)


def test_auto_prefers_tensorrt_then_intel_gpu_then_openvino_cpu():
    nv = inv(nvidia_driver=True, ort_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"))
    c = choose("auto", "auto", can_torch=True, can_onnx=True, inv=nv)
    assert (c.backend, c.device) == ("onnxruntime", "cuda") and "TensorRT" in c.reason
    cuda_only = inv(nvidia_driver=True, ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    c = choose("auto", "auto", can_torch=False, can_onnx=True, inv=cuda_only)
    assert (c.backend, c.device) == ("onnxruntime", "cuda")
    intel = inv(openvino_devices=("CPU", "GPU.0", "GPU.1"))
    c = choose("auto", "auto", can_torch=True, can_onnx=True, inv=intel)
    assert (c.backend, c.device) == ("openvino", "GPU")
    c = choose("auto", "auto", can_torch=True, can_onnx=True, inv=CPU_ONLY)
    assert (c.backend, c.device) == ("openvino", "CPU") and "no GPU" in c.reason


def test_auto_cpu_order_without_openvino():
    c = choose("auto", "cpu", can_torch=True, can_onnx=True, inv=inv(openvino_installed=False))
    assert c.backend == "onnxruntime"
    c = choose("auto", "cpu", can_torch=True, can_onnx=False, inv=inv(openvino_installed=False))
    assert c.backend == "torch"
    with pytest.raises(BackendError, match="pip install"):
        choose("auto", "cpu", can_torch=False, can_onnx=True, inv=inv(openvino_installed=False, onnxruntime_installed=False))


def test_requested_gpu_without_gpu_falls_back_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        c = choose("auto", "cuda", can_torch=False, can_onnx=True, inv=CPU_ONLY)
    assert (c.backend, c.device) == ("openvino", "CPU") and "unavailable" in c.reason
    assert "falling back to CPU" in caplog.text
    c = choose("auto", "gpu", can_torch=False, can_onnx=True, inv=CPU_ONLY)
    assert c.device == "CPU"
    assert choose("auto", "AUTO:GPU,CPU", can_torch=False, can_onnx=True, inv=CPU_ONLY).backend == "openvino"


def test_openvino_device_resolution():
    assert resolve_device("GPU.1", ["CPU", "GPU.0"])[0] == "CPU"
    assert resolve_device("gpu", ["CPU", "GPU.0"])[0] == "GPU"
    assert resolve_device("AUTO:GPU,CPU", ["CPU", "GPU"])[0] == "AUTO:GPU,CPU"
    assert resolve_device("AUTO:GPU,CPU", ["CPU"])[0] == "AUTO:CPU"
    assert resolve_device("MULTI:GPU.0,GPU.1", ["CPU"])[0] == "CPU"
    assert resolve_device("auto", ["CPU", "GPU.0"])[0] == "GPU"
    with pytest.raises(BackendError, match="onnxruntime"):
        resolve_device("cuda:0", ["CPU"])


def test_ort_provider_plans(tmp_path: Path):
    full = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    prov, dev, prec, _ = plan_providers(full, "cuda:1", "fp16", tmp_path)
    assert dev == "cuda:1" and prec == "fp16"
    assert prov[0][0] == "TensorrtExecutionProvider" and prov[0][1]["trt_fp16_enable"] is True
    assert prov[0][1]["device_id"] == 1 and prov[1] == ("CUDAExecutionProvider", {"device_id": 1})
    assert prov[-1] == "CPUExecutionProvider"
    prov, dev, prec, _ = plan_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], "auto", "auto", tmp_path)
    assert dev == "cuda:0" and prec == "fp32"
    prov, dev, prec, note = plan_providers(["CPUExecutionProvider"], "cuda", "fp32", tmp_path)
    assert prov == ["CPUExecutionProvider"] and dev == "cpu" and "unavailable" in note
    with pytest.raises(BackendError, match="openvino"):
        plan_providers(["CPUExecutionProvider"], "cpu", "fp16", tmp_path)


@pytest.mark.skipif(any(d.startswith("GPU") for d in inventory().openvino_devices), reason="an Intel GPU is present")
def test_openvino_gpu_request_runs_on_cpu_here(tiny3d, rt_config, caplog):
    """No OpenCL runtime here: asking for the GPU must warn and run on the CPU, not crash."""
    path, _ = tiny3d
    import numpy as np

    with caplog.at_level(logging.WARNING):
        s = create_session(path, backend="openvino", device="GPU", precision="fp32", config=rt_config)
    assert s.info.device == "CPU" and "unavailable" in s.info.reason
    assert "falling back to CPU" in caplog.text
    assert s.infer(np.zeros((1, 1, 16, 16, 16), np.float32))["logits"].shape == (1, 3, 16, 16, 16)


def test_openvino_auto_cumulative_throughput(tiny3d, rt_config):
    path, _ = tiny3d
    import numpy as np

    s = create_session(path, backend="openvino", device="AUTO:GPU,CPU", precision="fp32",
                       hint="cumulative_throughput", config=rt_config)
    assert s.info.device.startswith("AUTO")
    x = np.random.default_rng(0).random((6, 1, 16, 16, 16), dtype=np.float32)
    ref = create_session(path, backend="onnxruntime", config=rt_config).infer(x)["logits"]
    out = np.concatenate([o["logits"] for o in s.infer_many([x[:3], x[3:]])])
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-4


def test_real_inventory_is_consistent():
    inv_ = inventory()
    assert "CPU" in inv_.openvino_devices
    assert "CPUExecutionProvider" in inv_.ort_providers
