"""Configuration of one screening run: what the user chose, frozen and recorded in the result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osteoscan.labels import VertebraLevel

#: Every output the pipeline can write (``--outputs``); see osteoscan.report.write_outputs.
ALL_OUTPUTS: tuple[str, ...] = ("json", "html", "pdf", "nifti", "seg", "sr", "sc", "mesh")

#: Levels that always get the fine model (the clinically used ones: T11 for context, L1-L2 for ACR,
#: L3 for body composition, and every lumbar level for fractures). Others only when asked, or when
#: the scan shows no lumbar spine (a chest CT), see ``levels_for_fine_model``.
DEFAULT_FINE_LEVELS: frozenset[VertebraLevel] = frozenset(
    {VertebraLevel.T11, VertebraLevel.T12}
    | {v for v in VertebraLevel if v.region == "lumbar"}
)

_BACKENDS = ("auto", "openvino", "onnxruntime", "torch")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


@dataclass(frozen=True)
class PatientInfo:
    """Patient data given on the command line; each overrides the DICOM header when set."""

    height_cm: float | None = None
    sex: str | None = None  # "M" or "F"
    age_years: float | None = None

    def __post_init__(self) -> None:
        if self.height_cm is not None and not 50 <= self.height_cm <= 250:
            raise ValueError(f"patient height {self.height_cm} cm is outside 50..250 cm; give it in centimetres")
        if self.sex is not None and self.sex.upper() not in ("M", "F"):
            raise ValueError(f"patient sex must be M or F, got {self.sex!r}")
        if self.age_years is not None and not 0 <= self.age_years <= 130:
            raise ValueError(f"patient age {self.age_years} is outside 0..130 years")


@dataclass(frozen=True)
class PipelineConfig:
    """How to run the cascade.

    ``backend``/``device``/``precision`` are passed to :func:`osteoscan.runtime.create_session`
    ("auto" lets the runtime pick and say why). ``weights_dir`` replaces the shipped weights
    (a folder with ``<name>.onnx`` + ``<name>.json`` specs).
    """

    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    outputs: tuple[str, ...] = ALL_OUTPUTS
    all_levels: bool = False
    weights_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.backend not in _BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {', '.join(_BACKENDS)}")
        if self.precision not in _PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(_PRECISIONS)}")
        unknown = set(self.outputs) - set(ALL_OUTPUTS)
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {', '.join(ALL_OUTPUTS)}")
        object.__setattr__(self, "outputs", tuple(self.outputs))
