"""Small value types shared by every back-end: names of back-ends/precisions and session provenance."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: back-ends implemented in this package, in the order ``backend="auto"`` prefers on a plain CPU
BACKENDS: tuple[str, ...] = ("openvino", "onnxruntime", "torch")
#: numeric precisions a session can be asked for ("auto" resolves to one of these)
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8")
#: performance hints: one request as fast as possible, or many requests in flight
HINTS: tuple[str, ...] = ("latency", "throughput", "cumulative_throughput")


@dataclass(frozen=True)
class SessionInfo:
    """Provenance of one inference session, recorded in results next to every model output.

    ``reason`` says why the back-end/device/precision were chosen (auto selection, fall-back).
    """

    backend: str
    device: str
    precision: str
    model_name: str
    model_version: str
    model_sha256: str
    compile_time_s: float
    hint: str
    batch_size: int
    library_version: str
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for ``result.json`` provenance)."""
        return asdict(self)
