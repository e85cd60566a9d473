"""Planning worker slots over the devices of a machine: CPU slots and every GPU, by index.

A *slot* is one worker (local process or Ray actor) with its own warm models. Every GPU gets
``per_gpu`` slots (default 2): while one slot decodes and pre-processes a study on the CPU, the
other keeps the GPU busy (DESIGN.md: on a GPU, decoding and CPU pre-processing, not the networks,
bound the time per study). CPU slots run the models on the CPU.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from osteoscan.errors import InputError

log = logging.getLogger(__name__)

#: Slots per GPU by default (one computing while the other decodes).
DEFAULT_SLOTS_PER_GPU = 2
#: Seconds allowed for ``nvidia-smi -L`` when counting GPUs.
_NVIDIA_SMI_TIMEOUT_S = 20


@dataclass(frozen=True)
class DeviceSlot:
    """One worker: its name, the device string given to the pipeline, and its resource share."""

    name: str
    device: str  # "cpu" or "cuda:<index>"
    gpu_index: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0


def usable_cpu_count() -> int:
    """Cores this process may run on (affinity-aware, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def visible_gpu_indices() -> list[int]:
    """Indices of the NVIDIA GPUs this process may use ([] when there are none).

    ``CUDA_VISIBLE_DEVICES`` is honoured (indices then count within the visible set, as CUDA
    numbers them); otherwise ``nvidia-smi -L`` is asked. No CUDA library is imported.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        entries = [e for e in env.split(",") if e.strip() and e.strip() != "-1"]
        return list(range(len(entries)))
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=_NVIDIA_SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi failed (%s); using no GPU", exc)
        return []
    return [i for i, line in enumerate(ln for ln in out.stdout.splitlines() if ln.startswith("GPU "))]


def parse_gpus(text: str) -> list[int] | None:
    """``--gpus`` value: "auto" -> None (detect), "none" -> [], "0,2" -> [0, 2].

    Raises:
        InputError: not "auto", "none" or a comma list of non-negative integers.
    """
    value = text.strip().lower()
    if value == "auto":
        return None
    if value in ("none", ""):
        return []
    try:
        indices = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--gpus {text!r}: give 'auto', 'none' or GPU indices such as 0,1") from None
    if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        raise InputError(f"--gpus {text!r}: indices must be distinct and >= 0")
    return indices


def plan_slots(cpu_workers: int, gpu_indices: Sequence[int], per_gpu: int = DEFAULT_SLOTS_PER_GPU) -> list[DeviceSlot]:
    """Slots for ``cpu_workers`` CPU workers plus ``per_gpu`` workers on each listed GPU.

    Raises:
        InputError: no slot at all, or a negative count.
    """
    if cpu_workers < 0 or per_gpu < 1:
        raise InputError(f"worker counts must be >= 0 (CPU) and >= 1 per GPU; got {cpu_workers}, {per_gpu}")
    slots = [
        DeviceSlot(name=f"gpu{g}-{j}", device=f"cuda:{g}", gpu_index=g, num_cpus=1.0, num_gpus=1.0 / per_gpu)
        for g in gpu_indices
        for j in range(per_gpu)
    ]
    slots += [DeviceSlot(name=f"cpu-{i}", device="cpu") for i in range(cpu_workers)]
    if not slots:
        raise InputError("no worker to run: give --workers >= 1 or at least one GPU")
    return slots


def default_local_slots(
    workers: int | None, gpus: list[int] | None, per_gpu: int = DEFAULT_SLOTS_PER_GPU
) -> list[DeviceSlot]:
    """The local pool's slots: every visible GPU (``per_gpu`` each) and CPU workers.

    With GPUs, CPU workers are only added when asked (``workers``); without, ``workers`` defaults to
    the usable core count.
    """
    indices = visible_gpu_indices() if gpus is None else list(gpus)
    if workers is None:
        workers = 0 if indices else usable_cpu_count()
    return plan_slots(workers, indices, per_gpu)
