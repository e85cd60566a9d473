"""``report.html``: one self-contained page (figures inline as base64 PNG), from a Jinja2 template."""

from __future__ import annotations

import base64
from collections.abc import Mapping

import jinja2

from osteoscan.report import constants as C
from osteoscan.report.content import LEVEL_TABLE_NOTE, ReportContent
from osteoscan.report.identity import PatientStudyInfo
from osteoscan.result import StudyResult

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("osteoscan.report", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,  # a missing field is an error, not an empty cell
)


def render_html(
    result: StudyResult,
    content: ReportContent,
    info: PatientStudyInfo,
    images: Mapping[str, bytes | None],
) -> str:
    """The report page. ``images`` keys: sagittal, axial, chart, render (None/absent = not shown)."""
    encoded = {
        key: base64.b64encode(images[key]).decode("ascii") if images.get(key) else None
        for key in ("sagittal", "axial", "chart", "render")
    }
    return _ENV.get_template("report.html").render(
        result=result,
        content=content,
        info=info,
        images=encoded,
        intended_use=C.INTENDED_USE,
        intended_use_short=C.INTENDED_USE_SHORT,
        level_table_note=LEVEL_TABLE_NOTE,
    )
