"""What hardware and back-ends are present, and which one ``backend="auto"``/``device="auto"`` picks.

Detection must be cheap and must never import torch on a machine without an NVIDIA driver (the
edge install has no torch): torch is only imported when an NVIDIA driver is visible and torch is
installed, or when the caller asked for the torch back-end explicitly.

Preference on ``auto`` (fastest first, from the measurements in DESIGN.md / docs/BENCHMARKS.md):
1. NVIDIA GPU: ONNX Runtime TensorRT EP > PyTorch CUDA > ONNX Runtime CUDA EP;
2. Intel GPU with a working OpenCL runtime (OpenVINO lists ``GPU``): OpenVINO GPU;
3. CPU: OpenVINO CPU > ONNX Runtime CPU > PyTorch CPU.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass

from osteoscan.errors import BackendError

log = logging.getLogger(__name__)

ORT_TRT = "TensorrtExecutionProvider"
ORT_CUDA = "CUDAExecutionProvider"
ORT_CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class Inventory:
    """Back-ends installed and devices each one can use on this machine."""

    openvino_installed: bool
    onnxruntime_installed: bool
    torch_installed: bool
    openvino_devices: tuple[str, ...]
    ort_providers: tuple[str, ...]
    nvidia_driver: bool

    @property
    def openvino_gpus(self) -> tuple[str, ...]:
        return tuple(d for d in self.openvino_devices if d.startswith("GPU"))


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def nvidia_driver_present() -> bool:
    """An NVIDIA kernel driver is loaded (no CUDA/torch import needed to tell)."""
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def openvino_devices() -> tuple[str, ...]:
    """OpenVINO's device list. Its GPU plugin lists ``GPU`` only when an OpenCL runtime works;
    a plugin that fails to load is logged and treated as absent instead of crashing."""
    if not _installed("openvino"):
        return ()
    from osteoscan.runtime.openvino_backend import get_core

    try:
        return tuple(get_core().available_devices)
    except RuntimeError as exc:
        log.warning("OpenVINO device discovery failed (%s); assuming CPU only", exc)
        return ("CPU",)


@functools.lru_cache(maxsize=1)
def inventory() -> Inventory:
    """Detect once per process (device plugins are slow to enumerate)."""
    ort_providers: tuple[str, ...] = ()
    if _installed("onnxruntime"):
        import onnxruntime as ort

        ort_providers = tuple(ort.get_available_providers())
    inv = Inventory(
        openvino_installed=_installed("openvino"),
        onnxruntime_installed=_installed("onnxruntime"),
        torch_installed=_installed("torch"),
        openvino_devices=openvino_devices(),
        ort_providers=ort_providers,
        nvidia_driver=nvidia_driver_present(),
    )
    log.debug("runtime inventory: %s", inv)
    return inv


@functools.lru_cache(maxsize=1)
def torch_cuda_available() -> bool:
    """torch CUDA usable; imports torch only when an NVIDIA driver is present."""
    inv = inventory()
    if not (inv.torch_installed and inv.nvidia_driver):
        return False
    import torch

    return bool(torch.cuda.is_available())


@functools.lru_cache(maxsize=1)
def torch_xpu_available() -> bool:
    """torch Intel XPU usable (imports torch: call only for the torch back-end)."""
    if not inventory().torch_installed:
        return False
    import torch

    return bool(hasattr(torch, "xpu") and torch.xpu.is_available())


@dataclass(frozen=True)
class Choice:
    """A back-end/device pair and the reason it was chosen (recorded in SessionInfo.reason)."""

    backend: str
    device: str
    reason: str


GPU_WORDS = ("gpu", "cuda", "xpu")


def is_openvino_device(device: str) -> bool:
    """OpenVINO-style device names: CPU, GPU, GPU.1, AUTO:..., MULTI:..., HETERO:..., NPU."""
    head = device.split(":", 1)[0].split(".", 1)[0]
    return head in ("CPU", "GPU", "NPU", "AUTO", "MULTI", "HETERO")


def choose(backend: str, device: str, *, can_torch: bool, can_onnx: bool, inv: Inventory | None = None) -> Choice:
    """Pick back-end and device for ``create_session``.

    ``can_torch``/``can_onnx``: whether the model can run on torch (spec/builder/TorchScript) and
    on ONNX Runtime (an ONNX file; an OpenVINO-only artifact cannot).
    """
    inv = inv or inventory()
    dev = device.strip()
    low = dev.lower()
    if backend != "auto":
        return Choice(backend, dev, f"back-end {backend!r} requested")
    if is_openvino_device(dev):
        return Choice("openvino", dev, f"OpenVINO device name {dev!r} requested")
    if low.startswith("cuda") or low in ("auto", "gpu"):
        if inv.nvidia_driver:
            if can_onnx and ORT_TRT in inv.ort_providers:
                return Choice("onnxruntime", "cuda", "NVIDIA GPU with ONNX Runtime TensorRT provider (fastest)")
            if can_torch and torch_cuda_available():
                return Choice("torch", "cuda", "NVIDIA GPU with PyTorch CUDA")
            if can_onnx and ORT_CUDA in inv.ort_providers:
                return Choice("onnxruntime", "cuda", "NVIDIA GPU with ONNX Runtime CUDA provider")
        if low.startswith("cuda"):
            log.warning("device %r requested but no CUDA back-end is usable here; falling back to CPU", dev)
            return _cpu_choice(inv, can_torch, can_onnx, f"{dev!r} unavailable (no usable CUDA back-end)")
    if low in ("auto", "gpu", "xpu") and inv.openvino_gpus:
        return Choice("openvino", "GPU", f"Intel GPU via OpenVINO ({', '.join(inv.openvino_gpus)})")
    if low == "xpu" and can_torch and torch_xpu_available():
        return Choice("torch", "xpu", "Intel GPU via PyTorch XPU")
    if low in ("gpu", "xpu"):
        log.warning("device %r requested but no GPU is usable here; falling back to CPU", dev)
        return _cpu_choice(inv, can_torch, can_onnx, f"{dev!r} unavailable (no usable GPU)")
    if low not in ("auto", "cpu"):
        raise BackendError(f"unknown device {device!r}; use auto, cpu, cuda[:N], gpu, xpu or an OpenVINO name (GPU.0, AUTO:GPU,CPU)")
    return _cpu_choice(inv, can_torch, can_onnx, "no GPU found" if low == "auto" else "CPU requested")


def _cpu_choice(inv: Inventory, can_torch: bool, can_onnx: bool, why: str) -> Choice:
    if inv.openvino_installed:
        return Choice("openvino", "CPU", f"{why}; OpenVINO is the fastest CPU back-end")
    if inv.onnxruntime_installed and can_onnx:
        return Choice("onnxruntime", "cpu", f"{why}; OpenVINO not installed, using ONNX Runtime")
    if inv.torch_installed and can_torch:
        return Choice("torch", "cpu", f"{why}; neither OpenVINO nor ONNX Runtime installed, using PyTorch")
    raise BackendError("no inference back-end installed: pip install 'osteoscan[openvino]' (or [onnx], [torch])")
