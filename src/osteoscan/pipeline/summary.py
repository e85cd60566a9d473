"""The short human summary printed by ``osteoscan run`` / ``demo`` (the full story is in the report)."""

from __future__ import annotations

from pathlib import Path

from osteoscan.result import StudyResult


def _fmt(value: float | None, unit: str, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}"


def format_summary(result: StudyResult, outdir: Path | None = None) -> str:
    s = result.summary
    lines = ["osteoscan result", "================"]
    lines.append(f"coverage: {', '.join(result.qc.coverage) or 'no vertebra found'}")
    cat = s.acr_category.value if s.acr_category else "not assessable"
    lines.append(f"BMD L1-L2 (mean): {_fmt(s.bmd_l1_l2_mg_cm3, 'mg/cm3')}  ->  ACR: {cat}")
    lines.append(f"L1 attenuation: {_fmt(s.l1_hu, 'HU')}" + (f" ({s.l1_hu_flag})" if s.l1_hu_flag else ""))
    if s.fractures:
        for f in s.fractures:
            lines.append(
                f"fracture: {f.level} Genant grade {f.genant_grade} ({f.shape.value}, "
                f"{f.height_loss_percent:.0f} % height loss)"
            )
    else:
        lines.append("fractures: none detected")
    lines.append(f"lumbar lordosis: {_fmt(s.lordosis_deg, 'deg', 1)}")
    lines.append("")
    lines.append(f"{'level':<6} {'complete':<9} {'BMD mg/cm3':>14} {'calib. BMD':>11} {'HU':>6} {'ant/mid/post mm':>17} {'grade':>5}")
    for v in result.vertebrae:
        h = v.heights_mm
        heights = (
            "/".join("-" if x is None else f"{x:.1f}" for x in (h.anterior, h.middle, h.posterior))
            if h.middle is not None
            else "-"
        )
        bmd = "-" if v.bmd_mg_cm3 is None else f"{v.bmd_mg_cm3:.0f} +- {v.bmd_uncertainty_mg_cm3 or 0:.0f}"
        cal = "-" if v.bmd_calibrated_mg_cm3 is None else f"{v.bmd_calibrated_mg_cm3:.0f}"
        hu = "-" if v.hu_trabecular is None else f"{v.hu_trabecular:.0f}"
        grade = "-" if v.genant_grade is None else str(v.genant_grade)
        lines.append(f"{v.level:<6} {v.complete!s:<9} {bmd:>14} {cal:>11} {hu:>6} {heights:>17} {grade:>5}")
    c = result.composition
    lines.append("")
    if c is not None and c.sma_cm2 is not None:
        lines.append(
            f"body composition at {c.level} (slice {c.slice_index}): muscle {c.sma_cm2:.1f} cm2 "
            f"({_fmt(c.muscle_hu, 'HU')}), SAT {c.sat_cm2:.1f} cm2, VAT {c.vat_cm2:.1f} cm2, "
            f"IMAT {c.imat_cm2:.1f} cm2" + (f", SMI {c.smi_cm2_m2:.1f} cm2/m2" if c.smi_cm2_m2 else "")
        )
        for flag in c.flags:
            lines.append(f"  - {flag}")
    else:
        lines.append("body composition: not reported (" + result.qc.not_reported.get("composition", "") + ")")
    for w in result.qc.warnings:
        lines.append(f"warning: {w}")
    p = result.provenance
    lines.append("")
    lines.append(
        f"ran on {p.backend} / {p.device} / {p.precision} in {result.timings_s.get('total', 0):.2f} s "
        f"(AI inference {result.timings_s.get('inference', 0):.2f} s)"
    )
    if outdir is not None:
        lines.append(f"outputs in {outdir}")
    return "\n".join(lines)
