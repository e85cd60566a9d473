"""What the report says, as plain strings with units: one source for the HTML, the PDF and the tests.

Every number is formatted here with its unit; a value that was not measured reads "not measured"
with the reason from ``qc.not_reported`` where the pipeline gave one - never a blank that looks like 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from osteoscan.analysis import constants as _A
from osteoscan.report import constants as C
from osteoscan.result import AcrCategory, StudyResult, VertebraResult

NOT_MEASURED = "not measured"
#: Table cells use a dash for "not measured" (explained under the table), to keep the rows on one line.
DASH = "—"
MG_CM3 = "mg/cm³"
CM2 = "cm²"
CM2_M2 = "cm²/m²"

ACR_TEXT: dict[AcrCategory, str] = {
    AcrCategory.NORMAL: "normal bone density",
    AcrCategory.OSTEOPENIA: "low bone density (osteopenia)",
    AcrCategory.OSTEOPOROSIS: "osteoporosis",
}


def fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    """'95.3 mg/cm³', or 'not measured' for None (and for NaN/inf, which are not measurements)."""
    if value is None or not math.isfinite(value):
        return NOT_MEASURED
    text = f"{value:.{digits}f}"
    return f"{text} {unit}".strip()


def not_reported_reason(result: StudyResult, *fields: str) -> str | None:
    """The QC reason recorded for any of ``fields``: a qc key equal to it, ending in ``.field`` (e.g.
    ``summary.l1_hu``) or inside it (``composition.sma_cm2`` for ``composition``)."""
    for key, reason in result.qc.not_reported.items():
        if any(key == f or key.endswith(f".{f}") or key.startswith(f"{f}.") for f in fields):
            return reason
    return None


def bmd_color(bmd: float | None) -> str:
    """ACR band colour of one BMD value (grey when not measured)."""
    if bmd is None:
        return C.COLOR_NOT_MEASURED
    if bmd > C.ACR_NORMAL_ABOVE_MG_CM3:
        return C.COLOR_NORMAL
    if bmd >= C.ACR_OSTEOPOROSIS_BELOW_MG_CM3:
        return C.COLOR_OSTEOPENIA
    return C.COLOR_OSTEOPOROSIS


def category_color(category: AcrCategory | None) -> str:
    return {
        AcrCategory.NORMAL: C.COLOR_NORMAL,
        AcrCategory.OSTEOPENIA: C.COLOR_OSTEOPENIA,
        AcrCategory.OSTEOPOROSIS: C.COLOR_OSTEOPOROSIS,
    }.get(category, C.COLOR_NOT_MEASURED)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Finding:
    """One line of the key findings: a title, the statement, its reference range, a severity colour."""

    title: str
    text: str
    reference: str
    color: str
    note: str = ""  # secondary statements (negative or not-assessable flags), shown small


@dataclass(frozen=True)
class ReportContent:
    findings: tuple[Finding, ...]
    level_header: tuple[str, ...]
    level_rows: tuple[tuple[str, ...], ...]
    composition_rows: tuple[tuple[str, str, str], ...]  # (measure, value with unit, reference)
    qc_notes: tuple[str, ...]
    provenance_rows: tuple[tuple[str, str], ...]
    disc_rows: tuple[tuple[str, str], ...] = field(default_factory=tuple)


ACR_REFERENCE = (
    f"ACR QCT: normal > {C.ACR_NORMAL_ABOVE_MG_CM3:.0f}, osteopenia "
    f"{C.ACR_OSTEOPOROSIS_BELOW_MG_CM3:.0f}-{C.ACR_NORMAL_ABOVE_MG_CM3:.0f}, osteoporosis "
    f"< {C.ACR_OSTEOPOROSIS_BELOW_MG_CM3:.0f} {MG_CM3}"
)
PICKHARDT_REFERENCE = (
    f"Pickhardt 2013 (120 kV, non-contrast): <= {C.PICKHARDT_L1_SPECIFIC_HU:.0f} HU osteoporosis likely, "
    f"< {C.PICKHARDT_L1_SENSITIVE_HU:.0f} HU low BMD likely"
)
_G = (100 * _A.GENANT_MILD_LOSS, 100 * _A.GENANT_MODERATE_LOSS, 100 * _A.GENANT_SEVERE_LOSS)
GENANT_REFERENCE = (
    f"Genant height loss: grade 1 {_G[0]:.0f}-{_G[1]:.0f} %, grade 2 {_G[1]:.0f}-{_G[2]:.0f} %, grade 3 > {_G[2]:.0f} %"
)


def _bone_finding(result: StudyResult) -> Finding:
    s = result.summary
    if s.bmd_l1_l2_mg_cm3 is None or s.acr_category is None:
        reason = not_reported_reason(result, "bmd_l1_l2_mg_cm3", "acr_category") or "L1-L2 not measured"
        return Finding("Bone density (L1-L2)", f"not reported: {reason}", ACR_REFERENCE, C.COLOR_NOT_MEASURED)
    text = (
        f"{ACR_TEXT[s.acr_category]} - mean trabecular BMD L1-L2 "
        f"{fmt(s.bmd_l1_l2_mg_cm3, MG_CM3)}"
    )
    return Finding("Bone density (L1-L2)", text, ACR_REFERENCE, category_color(s.acr_category))


def _l1_finding(result: StudyResult) -> Finding:
    s = result.summary
    if s.l1_hu is None:
        reason = not_reported_reason(result, "l1_hu") or "L1 not measured"
        return Finding("L1 attenuation", f"not reported: {reason}", PICKHARDT_REFERENCE, C.COLOR_NOT_MEASURED)
    if s.l1_hu <= C.PICKHARDT_L1_SPECIFIC_HU:
        color = C.COLOR_OSTEOPOROSIS
    elif s.l1_hu < C.PICKHARDT_L1_SENSITIVE_HU:
        color = C.COLOR_OSTEOPENIA
    else:
        color = C.COLOR_NORMAL
    flag = f" - {s.l1_hu_flag}" if s.l1_hu_flag else ""
    phase = f" (contrast phase: {s.contrast_phase})" if s.contrast_phase else ""
    return Finding("L1 attenuation", f"{fmt(s.l1_hu, 'HU', 0)}{flag}{phase}", PICKHARDT_REFERENCE, color)


def _fracture_finding(result: StudyResult) -> Finding:
    fractures = result.summary.fractures
    graded = [v.level for v in result.vertebrae if v.genant_grade is not None]
    if fractures:
        parts = [
            f"{f.level} grade {f.genant_grade} ({C.GENANT_GRADE_NAMES.get(f.genant_grade, '?')}, "
            f"{f.shape.value}, {f.height_loss_percent:.0f} % height loss)"
            for f in fractures
        ]
        worst = max(f.genant_grade for f in fractures)
        color = C.COLOR_OSTEOPOROSIS if worst >= 2 else C.COLOR_OSTEOPENIA
        return Finding("Vertebral fractures", "; ".join(parts), GENANT_REFERENCE, color)
    if not graded:
        reason = not_reported_reason(result, "genant_grade", "fractures") or "no vertebra could be graded"
        return Finding("Vertebral fractures", f"not assessed: {reason}", GENANT_REFERENCE, C.COLOR_NOT_MEASURED)
    span = graded[0] if len(graded) == 1 else f"{graded[0]}-{graded[-1]}"
    return Finding("Vertebral fractures", f"none detected (graded {span})", GENANT_REFERENCE, C.COLOR_NORMAL)


#: How osteoscan.analysis.composition words a positive finding ("sarcopenia (Prado 2008): SMI ...");
#: negatives start with "no ", and "... not assessable: ..." says why a flag could not be decided.
POSITIVE_COMPOSITION_FLAGS: tuple[str, ...] = ("sarcopenia (", "myosteatosis (")


def _composition_finding(result: StudyResult) -> Finding:
    comp = result.composition
    ref = (
        f"SMI sarcopenia (Prado 2008): men < {C.SMI_PRADO_MEN_BELOW_CM2_M2}, women < "
        f"{C.SMI_PRADO_WOMEN_BELOW_CM2_M2} {CM2_M2}; myosteatosis (Martin 2013): muscle < "
        f"{C.MUSCLE_HU_MARTIN_BMI_LT25_BELOW:.0f} HU (BMI < 25) / < {C.MUSCLE_HU_MARTIN_BMI_GE25_BELOW:.0f} HU"
    )
    if comp is None or comp.sma_cm2 is None:
        reason = not_reported_reason(result, "composition", "sma_cm2") or "L3 not in view"
        return Finding("Body composition (L3)", f"not reported: {reason}", ref, C.COLOR_NOT_MEASURED)
    text = (
        f"muscle area {fmt(comp.sma_cm2, CM2)}, muscle {fmt(comp.muscle_hu, 'HU', 0)}, "
        f"VAT {fmt(comp.vat_cm2, CM2)}, SAT {fmt(comp.sat_cm2, CM2)}"
    )
    if comp.smi_cm2_m2 is not None:
        text += f", SMI {fmt(comp.smi_cm2_m2, CM2_M2)}"
    positive = [f for f in comp.flags if f.startswith(POSITIVE_COMPOSITION_FLAGS)]
    others = [f for f in comp.flags if f not in positive]
    if positive:
        text += ". " + "; ".join(positive)
    decided = positive or [f for f in comp.flags if f.startswith("no ")]
    color = C.COLOR_OSTEOPENIA if positive else C.COLOR_NORMAL if decided else C.COLOR_NOT_MEASURED
    return Finding(f"Body composition ({comp.level})", text, ref, color, note="; ".join(others))


def _heights(v: VertebraResult) -> str:
    h = v.heights_mm
    if h.anterior is None and h.middle is None and h.posterior is None:
        return DASH
    return " / ".join(_cell(x) for x in (h.anterior, h.middle, h.posterior))


def _grade(v: VertebraResult) -> str:
    if v.genant_grade is None:
        return DASH
    shape = v.fracture_shape.value if v.fracture_shape is not None and v.genant_grade > 0 else ""
    return f"{v.genant_grade} {shape}".strip()


LEVEL_TABLE_NOTE = (
    f"{DASH} = not measured (reason under Quality control). Partial = vertebra cut by the field of view. "
    "Height loss: the loss against the expected height (own heights or neighbours) that decides the Genant "
    "grade, shown with the fracture shape."
)
LEVEL_HEADER: tuple[str, ...] = (
    "Level",
    f"BMD ({MG_CM3})",
    f"BMD calibr. ({MG_CM3})",
    "Trab. HU (mean ± SD)",
    "Heights A/M/P (mm)",
    "Height loss (%)",
    "Genant grade",
    "Volume (ml)",
)


def _cell(value: float | None, digits: int = 1) -> str:
    return DASH if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _level_row(v: VertebraResult) -> tuple[str, ...]:
    level = v.level if v.complete else f"{v.level} (partial)"
    bmd = DASH
    if v.bmd_mg_cm3 is not None:
        bmd = f"{v.bmd_mg_cm3:.1f}"
        if v.bmd_uncertainty_mg_cm3 is not None:
            bmd += f" ± {v.bmd_uncertainty_mg_cm3:.1f}"
    hu = DASH
    if v.hu_trabecular is not None:
        hu = f"{v.hu_trabecular:.0f}"
        if v.hu_trabecular_sd is not None:
            hu += f" ± {v.hu_trabecular_sd:.0f}"
    return (
        level,
        bmd,
        _cell(v.bmd_calibrated_mg_cm3),
        hu,
        _heights(v),
        _cell(v.height_loss_percent, digits=0),
        _grade(v),
        _cell(v.volume_ml),
    )


def _composition_rows(result: StudyResult) -> tuple[tuple[str, str, str], ...]:
    comp = result.composition
    if comp is None:
        return ()
    where = comp.level if comp.slice_z_mm is None else f"{comp.level}, z = {comp.slice_z_mm:.1f} mm"
    return (
        ("Slice", where, ""),
        ("Skeletal muscle area (SMA)", fmt(comp.sma_cm2, CM2), ""),
        (
            "Muscle attenuation",
            fmt(comp.muscle_hu, "HU"),
            (
                f"myosteatosis < {C.MUSCLE_HU_MARTIN_BMI_LT25_BELOW:.0f} HU (BMI < 25) / "
                f"< {C.MUSCLE_HU_MARTIN_BMI_GE25_BELOW:.0f} HU"
            ),
        ),
        ("Subcutaneous fat (SAT)", fmt(comp.sat_cm2, CM2), ""),
        ("Visceral fat (VAT)", fmt(comp.vat_cm2, CM2), ""),
        ("Intermuscular fat (IMAT)", fmt(comp.imat_cm2, CM2), ""),
        ("VAT/SAT ratio", fmt(comp.vat_sat_ratio, digits=2), ""),
        (
            "Skeletal muscle index (SMI)",
            fmt(comp.smi_cm2_m2, CM2_M2) if comp.smi_cm2_m2 is not None else "not measured (height unknown)",
            f"sarcopenia: men < {C.SMI_PRADO_MEN_BELOW_CM2_M2}, women < {C.SMI_PRADO_WOMEN_BELOW_CM2_M2}",
        ),
    )


#: Longest QC list the report shows; the rest is counted (all of it is in result.json).
MAX_QC_NOTES = 10


def group_similar(notes: list[str]) -> list[str]:
    """Collapse notes that differ only in their numbers ("dropped a 3.2 cm3 component at ...") into
    the first one plus a count, so that a noisy case cannot push the report onto extra pages."""
    groups: dict[str, list[str]] = {}
    for note in notes:
        # numbers, but not the digits of level names (T12, L1), which must stay distinct
        groups.setdefault(re.sub(r"(?<![A-Za-z\d.])\d+(\.\d+)?", "#", note), []).append(note)
    out = []
    for members in groups.values():
        first = members[0]
        out.append(first if len(members) == 1 else f"{first} (and {len(members) - 1} similar)")
    return out


def _qc_notes(result: StudyResult) -> tuple[str, ...]:
    qc = result.qc
    notes = []
    if qc.coverage:
        notes.append(f"Levels in view: {', '.join(qc.coverage)}.")
    if not qc.lumbar_covered:
        notes.append("Lumbar spine (L1-L2) not covered: no ACR category.")
    if not qc.l3_covered:
        notes.append("L3 not covered: no body composition.")
    notes.extend(qc.warnings)
    notes.extend(f"{key}: {reason}" for key, reason in qc.not_reported.items())
    phase = result.summary.contrast_phase
    if phase and phase not in ("none", "native"):
        notes.append(
            f"Contrast phase '{phase}': contrast raises trabecular HU by about 10-20 HU"
            + (" (phase not determined)." if phase == "unknown" else ".")
        )
    notes = group_similar(notes)
    if len(notes) > MAX_QC_NOTES:
        hidden = len(notes) - (MAX_QC_NOTES - 1)
        notes = notes[: MAX_QC_NOTES - 1] + [f"... and {hidden} more notes (qc in result.json)."]
    return tuple(notes)


def _provenance_rows(result: StudyResult) -> tuple[tuple[str, str], ...]:
    p = result.provenance
    rows: list[tuple[str, str]] = [
        ("Software", f"osteoscan {p.osteoscan_version} (result schema {result.schema_version})"),
        ("Inference", f"backend {p.backend or '?'}, device {p.device or '?'}, precision {p.precision or '?'}"),
    ]
    if p.models:
        rows.append(("Models", "; ".join(f"{m.name} {m.version} (sha256 {m.sha256[:8]})" for m in p.models)))
    inp = p.input or {}
    scan = [
        f"{k} {inp[k]}"
        for k in ("source_format", "manufacturer", "kvp", "convolution_kernel", "slice_thickness_mm")
        if inp.get(k) not in (None, "")
    ]
    if scan:
        rows.append(("Input", ", ".join(scan)))
    geo = p.geometry or {}
    if geo:
        rows.append(("Geometry", ", ".join(f"{k} {v}" for k, v in geo.items())))
    total = result.timings_s.get("total")
    if total is not None:
        rows.append(("Processing time", f"{total:.1f} s"))
    return tuple(rows)


def build_content(result: StudyResult) -> ReportContent:
    """Everything the report shows, as text with units."""
    findings = (
        _bone_finding(result),
        _l1_finding(result),
        _fracture_finding(result),
        _composition_finding(result),
    )
    return ReportContent(
        findings=findings,
        level_header=LEVEL_HEADER,
        level_rows=tuple(_level_row(v) for v in result.vertebrae),
        composition_rows=_composition_rows(result),
        qc_notes=_qc_notes(result),
        provenance_rows=_provenance_rows(result),
        disc_rows=tuple((f"{d.upper}/{d.lower}", fmt(d.height_mm, "mm")) for d in result.discs),
    )
