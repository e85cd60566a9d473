"""``report.pdf``: the clinician's report, laid out with ReportLab (a real PDF engine, pure Python).

Same content as the HTML (both read :mod:`osteoscan.report.content`), arranged for A4: page 1 holds
the header, intended use, key findings, the per-level table and the BMD chart - what a radiologist
reads first; page 2 the images, body composition, QC notes and provenance. Text uses DejaVu Sans
(shipped with matplotlib) so that units like mg/cm³ and ± render and extract as real characters.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import escape

import matplotlib
from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    Flowable,
    Image,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from osteoscan.report import constants as C
from osteoscan.report.content import LEVEL_TABLE_NOTE, ReportContent, not_reported_reason
from osteoscan.report.identity import PatientStudyInfo
from osteoscan.result import StudyResult

FONT = "DejaVuSans"
FONT_BOLD = "DejaVuSans-Bold"
NAVY = colors.HexColor("#1f3b73")
PAGE_W, PAGE_H = A4
MARGIN = 14 * mm
CONTENT_W = PAGE_W - 2 * MARGIN


def _register_fonts() -> None:
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    pdfmetrics.registerFont(TTFont(FONT, str(ttf / "DejaVuSans.ttf")))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, str(ttf / "DejaVuSans-Bold.ttf")))
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=FONT_BOLD, italic=FONT, boldItalic=FONT_BOLD)


def _styles() -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("base", fontName=FONT, fontSize=8.5, leading=11, alignment=TA_LEFT)
    return {
        "base": base,
        "small": ParagraphStyle("small", parent=base, fontSize=7, leading=8.8, textColor=colors.HexColor("#555555")),
        "title": ParagraphStyle("title", parent=base, fontName=FONT_BOLD, fontSize=14, leading=17, textColor=NAVY),
        "h2": ParagraphStyle(
            "h2", parent=base, fontName=FONT_BOLD, fontSize=10.5, leading=13, textColor=NAVY, spaceBefore=7,
            spaceAfter=3,
        ),
        "bold": ParagraphStyle("bold", parent=base, fontName=FONT_BOLD),
        "cell": ParagraphStyle("cell", parent=base, fontSize=7.5, leading=9),
        "cellhead": ParagraphStyle("cellhead", parent=base, fontName=FONT_BOLD, fontSize=7.5, leading=9,
                                   textColor=colors.white),
        "banner": ParagraphStyle(
            "banner", parent=base, fontSize=7.8, leading=10, backColor=colors.HexColor("#fff4d6"),
            borderColor=colors.HexColor("#e8a317"), borderWidth=0.6, borderPadding=4,
        ),
    }


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape(text), style)


def _image(png: bytes, width: float | None = None, height: float | None = None) -> Image:
    """A flowable of a PNG scaled to ``width`` or ``height`` (points), aspect ratio kept."""
    w, h = ImageReader(io.BytesIO(png)).getSize()
    if width is not None and height is not None:
        scale = min(width / w, height / h)
    elif width is not None:
        scale = width / w
    elif height is not None:
        scale = height / h
    else:
        scale = 72.0 / 150.0
    return Image(io.BytesIO(png), width=w * scale, height=h * scale)


def _grid(rows: list[list[Flowable | str]], col_widths: list[float], header: bool = True) -> Table:
    table = Table(rows, colWidths=col_widths, repeatRows=1 if header else 0)
    style = [
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#d8d8d8")),
        ("ROWBACKGROUNDS", (0, 1 if header else 0), (-1, -1), [colors.white, colors.HexColor("#f3f5f9")]),
    ]
    if header:
        style.append(("BACKGROUND", (0, 0), (-1, 0), NAVY))
    table.setStyle(TableStyle(style))
    return table


def _header(info: PatientStudyInfo, result: StudyResult, st: dict[str, ParagraphStyle]) -> Table:
    ident = [
        ("Patient", info.display_name),
        ("Patient ID", info.patient_id or "-"),
        ("Sex / age", f"{info.sex or '-'} / {info.age or '-'}"),
        ("Birth date", info.format_date(info.birth_date) or "-"),
        ("Study date", info.format_date(info.study_date) or "-"),
        ("Accession", info.accession_number or "-"),
    ]
    id_rows = [[_p(k, st["small"]), _p(v, st["cell"])] for k, v in ident]
    id_table = Table(id_rows, colWidths=[20 * mm, 48 * mm])
    id_table.setStyle(TableStyle([("TOPPADDING", (0, 0), (-1, -1), 0), ("BOTTOMPADDING", (0, 0), (-1, -1), 0.5)]))
    left = [
        _p("Opportunistic CT screening report", st["title"]),
        _p("Bone mineral density · vertebral fractures · body composition", st["base"]),
        _p(
            f"{info.study_description or info.series_description or 'CT'} · osteoscan "
            f"{result.provenance.osteoscan_version}",
            st["small"],
        ),
    ]
    table = Table([[left, id_table]], colWidths=[CONTENT_W - 70 * mm, 70 * mm])
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, 0), 1.5, NAVY),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
            ]
        )
    )
    return table


def _findings(content: ReportContent, st: dict[str, ParagraphStyle]) -> Table:
    rows = [
        ["", _p(f.title, st["bold"]),
         [_p(f.text, st["base"])] + ([_p(f.note, st["small"])] if f.note else []) + [_p(f.reference, st["small"])]]
        for f in content.findings
    ]
    table = Table(rows, colWidths=[2.5 * mm, 38 * mm, CONTENT_W - 40.5 * mm])
    style = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 3),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
        ("LINEBELOW", (0, 0), (-1, -1), 0.4, colors.white),
        ("BACKGROUND", (1, 0), (-1, -1), colors.HexColor("#f7f7f7")),
    ]
    for i, f in enumerate(content.findings):
        style.append(("BACKGROUND", (0, i), (0, i), colors.HexColor(f.color)))
    table.setStyle(TableStyle(style))
    return table


def _levels(content: ReportContent, st: dict[str, ParagraphStyle]) -> Table:
    head = [_p(h, st["cellhead"]) for h in content.level_header]
    rows = [head] + [[_p(c, st["cell"]) for c in row] for row in content.level_rows]
    widths = [20, 26, 22, 24, 30, 16, 22, 18]
    scale = CONTENT_W / (sum(widths) * mm)
    return _grid(rows, [w * mm * scale for w in widths])


def _footer(info: PatientStudyInfo):
    def draw(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 6.8)
        canvas.setFillColor(colors.HexColor("#666666"))
        canvas.drawString(MARGIN, 8 * mm, f"{info.display_name} · {info.patient_id or 'no ID'} · {C.INTENDED_USE_SHORT}")
        canvas.drawRightString(PAGE_W - MARGIN, 8 * mm, f"osteoscan · page {doc.page}")
        canvas.restoreState()

    return draw


def render_pdf(
    path: Path,
    result: StudyResult,
    content: ReportContent,
    info: PatientStudyInfo,
    images: Mapping[str, bytes | None],
) -> Path:
    """Write the report PDF; ``images`` keys: sagittal, axial, chart, render (None = left out)."""
    _register_fonts()
    st = _styles()
    story: list[Flowable] = [
        _header(info, result, st),
        Spacer(1, 4),
        _p(C.INTENDED_USE, st["banner"]),
        Spacer(1, 4),
        _p("Key findings", st["h2"]),
        _findings(content, st),
        _p("Per-level measurements", st["h2"]),
        _levels(content, st),
    ]
    notes = [LEVEL_TABLE_NOTE]
    if content.disc_rows or result.summary.lordosis_deg is not None:
        discs = "; ".join(f"{d} {h}" for d, h in content.disc_rows)
        text = f"Disc heights: {discs or 'not measured'}."
        if result.summary.lordosis_deg is not None:
            text += f" Lumbar lordosis {result.summary.lordosis_deg:.1f}°."
        notes.append(text)
    story.append(Spacer(1, 2))
    story += [_p(n, st["small"]) for n in notes]
    if images.get("chart"):
        story += [Spacer(1, 4), _image(images["chart"], width=CONTENT_W, height=70 * mm)]  # type: ignore[arg-type]
    qc_block: list[Flowable] = [_p("Quality control", st["h2"])]
    qc_block += [_p(f"• {note}", st["cell"]) for note in content.qc_notes or ("No warnings.",)]
    story.append(KeepTogether(qc_block))
    story.append(PageBreak())

    story.append(_p("Images", st["h2"]))
    pics = [
        _image(images[k], height=112 * mm, width=CONTENT_W / 2 - 6)  # type: ignore[arg-type]
        for k in ("sagittal", "render")
        if images.get(k)
    ]
    if pics:
        t = Table([pics], colWidths=[CONTENT_W / len(pics)] * len(pics))
        t.setStyle(TableStyle([("ALIGN", (0, 0), (-1, -1), "CENTER"), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
        story.append(t)

    comp_block: list[Flowable] = [_p("Body composition", st["h2"])]
    if content.composition_rows:
        rows = [[_p(h, st["cellhead"]) for h in ("Measure", "Value", "Reference")]]
        rows += [[_p(a, st["cell"]), _p(b, st["cell"]), _p(c, st["small"])] for a, b, c in content.composition_rows]
        img_w = 66 * mm
        table_w = CONTENT_W - img_w - 4 * mm if images.get("axial") else CONTENT_W
        comp_table = _grid(rows, [table_w * 0.38, table_w * 0.27, table_w * 0.35])
        if images.get("axial"):
            row = Table([[_image(images["axial"], width=img_w, height=80 * mm), comp_table]],  # type: ignore[arg-type]
                        colWidths=[img_w + 4 * mm, table_w])
            row.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
            comp_block.append(row)
        else:
            comp_block.append(comp_table)
    else:
        reason = not_reported_reason(result, "composition", "sma_cm2") or "see quality control"
        comp_block.append(_p(f"Not reported: {reason}.", st["base"]))
    story.append(KeepTogether(comp_block))

    story.append(_p("Method and provenance", st["h2"]))
    story.append(
        _grid([[_p(k, st["cell"]), _p(v, st["cell"])] for k, v in content.provenance_rows],
              [32 * mm, CONTENT_W - 32 * mm], header=False)
    )
    story.append(Spacer(1, 4))
    story.append(
        _p(
            "BMD: QCT-equivalent trabecular volumetric BMD from a neural-network regressor and from phantomless "
            "calibration with internal references. Heights on the mid-sagittal plane of each vertebra; Genant "
            "semi-quantitative grading. " + C.INTENDED_USE,
            st["small"],
        )
    )

    doc = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN + 2 * mm,
        title="osteoscan screening report",
        author="osteoscan",
        subject=C.INTENDED_USE_SHORT,
        creator=f"osteoscan {result.provenance.osteoscan_version}",
    )
    footer = _footer(info)
    # Images are Flate-compressed binary streams; ReportLab's default extra ASCII85 layer is pure
    # Python without its optional C accelerator (seconds per report) and makes the file 25 % larger.
    use_a85 = rl_config.useA85
    rl_config.useA85 = 0
    try:
        doc.build(story, onFirstPage=footer, onLaterPages=footer)
    finally:
        rl_config.useA85 = use_a85
    return path
