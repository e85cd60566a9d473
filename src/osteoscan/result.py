"""The result of screening one study: frozen dataclasses that serialise to ``result.json``.

The schema is versioned (``SCHEMA_VERSION``) and documented in ``docs/result_schema.md``. Field names
carry their unit as a suffix (``_mm``, ``_ml``, ``_cm2``, ``_hu``, ``_mg_cm3`` ...). A value that could
not be measured is ``None`` and the reason is in ``qc.not_reported`` - never a made-up number.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1.0"


class AcrCategory(str, Enum):
    """ACR QCT categories of trabecular BMD (mean of L1-L2); see REFERENCE.md."""

    NORMAL = "normal"
    OSTEOPENIA = "osteopenia"
    OSTEOPOROSIS = "osteoporosis"


class FractureShape(str, Enum):
    NONE = "none"
    WEDGE = "wedge"
    BICONCAVE = "biconcave"
    CRUSH = "crush"


@dataclass(frozen=True)
class Heights:
    anterior: float | None = None  # mm
    middle: float | None = None  # mm
    posterior: float | None = None  # mm


@dataclass(frozen=True)
class VertebraResult:
    level: str  # "T12", "L1", ... (osteoscan.labels.VertebraLevel names)
    complete: bool  # fully inside the field of view
    centroid_lps_mm: tuple[float, float, float] | None = None
    volume_ml: float | None = None
    body_volume_ml: float | None = None
    hu_trabecular: float | None = None
    hu_trabecular_sd: float | None = None
    bmd_mg_cm3: float | None = None
    bmd_uncertainty_mg_cm3: float | None = None
    bmd_calibrated_mg_cm3: float | None = None
    heights_mm: Heights = field(default_factory=Heights)
    height_ratio_min: float | None = None  # min/max of the three heights (1 = no loss)
    height_loss_percent: float | None = None  # the loss that decided the Genant grade (own heights or neighbours)
    genant_grade: int | None = None  # 0..3
    fracture_shape: FractureShape | None = None


@dataclass(frozen=True)
class DiscResult:
    upper: str
    lower: str
    height_mm: float | None = None


@dataclass(frozen=True)
class FractureFinding:
    level: str
    genant_grade: int
    shape: FractureShape
    height_loss_percent: float


@dataclass(frozen=True)
class Summary:
    bmd_l1_l2_mg_cm3: float | None = None
    acr_category: AcrCategory | None = None
    l1_hu: float | None = None
    l1_hu_flag: str | None = None  # "likely osteoporosis (<=110 HU)", "low BMD likely (<160 HU)", "normal"
    fractures: tuple[FractureFinding, ...] = ()
    lordosis_deg: float | None = None
    contrast_phase: str | None = None


@dataclass(frozen=True)
class CompositionResult:
    level: str = "L3"
    slice_index: int | None = None  # index along axis 0 of the canonical volume
    slice_z_mm: float | None = None
    sma_cm2: float | None = None
    sat_cm2: float | None = None
    vat_cm2: float | None = None
    imat_cm2: float | None = None
    muscle_hu: float | None = None
    vat_sat_ratio: float | None = None
    smi_cm2_m2: float | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class QualityControl:
    coverage: tuple[str, ...] = ()  # levels in view, cranial to caudal
    lumbar_covered: bool = False
    l3_covered: bool = False
    warnings: tuple[str, ...] = ()
    not_reported: dict[str, str] = field(default_factory=dict)  # field -> reason


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class ResultProvenance:
    osteoscan_version: str
    input: dict[str, Any]  # osteoscan.io.Provenance.to_dict()
    geometry: dict[str, Any]  # shape, spacing_mm, orientation
    models: tuple[ModelInfo, ...] = ()
    backend: str = ""
    device: str = ""
    precision: str = ""


@dataclass(frozen=True)
class StudyResult:
    vertebrae: tuple[VertebraResult, ...]
    discs: tuple[DiscResult, ...]
    summary: Summary
    composition: CompositionResult | None
    qc: QualityControl
    provenance: ResultProvenance
    timings_s: dict[str, float]
    schema_version: str = SCHEMA_VERSION

    def vertebra(self, level: str) -> VertebraResult | None:
        return next((v for v in self.vertebrae if v.level == level), None)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyResult:
        def vert(v: dict[str, Any]) -> VertebraResult:
            v = dict(v)
            v["heights_mm"] = Heights(**v.get("heights_mm") or {})
            if v.get("fracture_shape") is not None:
                v["fracture_shape"] = FractureShape(v["fracture_shape"])
            if v.get("centroid_lps_mm") is not None:
                v["centroid_lps_mm"] = tuple(v["centroid_lps_mm"])
            return VertebraResult(**v)

        s = dict(d["summary"])
        s["acr_category"] = AcrCategory(s["acr_category"]) if s.get("acr_category") else None
        s["fractures"] = tuple(
            FractureFinding(**{**f, "shape": FractureShape(f["shape"])}) for f in s.get("fractures", ())
        )
        comp = d.get("composition")
        if comp is not None:
            comp = CompositionResult(**{**comp, "flags": tuple(comp.get("flags", ()))})
        qc = d["qc"]
        prov = dict(d["provenance"])
        prov["models"] = tuple(ModelInfo(**m) for m in prov.get("models", ()))
        return cls(
            vertebrae=tuple(vert(v) for v in d["vertebrae"]),
            discs=tuple(DiscResult(**x) for x in d["discs"]),
            summary=Summary(**s),
            composition=comp,
            qc=QualityControl(
                coverage=tuple(qc.get("coverage", ())),
                lumbar_covered=qc.get("lumbar_covered", False),
                l3_covered=qc.get("l3_covered", False),
                warnings=tuple(qc.get("warnings", ())),
                not_reported=dict(qc.get("not_reported", {})),
            ),
            provenance=ResultProvenance(**prov),
            timings_s=dict(d["timings_s"]),
            schema_version=d.get("schema_version", SCHEMA_VERSION),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> StudyResult:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return round(obj, 4)
    return obj
