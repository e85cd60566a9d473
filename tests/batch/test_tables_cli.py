"""Table columns match the documentation; the CLI lists studies and rejects bad options."""

from __future__ import annotations

import re
from pathlib import Path

import batch_testlib as lib
import pytest

from osteoscan.batch.tables import FAILURE_COLUMNS, STUDY_COLUMNS, vertebra_columns
from osteoscan.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs" / "batch.md"


def _documented(section: str) -> set[str]:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(section)
    end = text.find("\n### ", start + 1)
    rows = [ln for ln in text[start:end if end > 0 else None].splitlines() if ln.startswith("| `")]
    return {name for ln in rows for name in re.findall(r"`([a-z0-9_]+)`", ln.split("|")[1])}


@pytest.mark.parametrize(
    ("section", "columns"),
    [
        ("### results.parquet", STUDY_COLUMNS),
        ("### vertebrae.parquet", vertebra_columns()),
        ("### failures.csv", FAILURE_COLUMNS),
    ],
)
def test_every_table_column_is_documented(section: str, columns: tuple[str, ...]) -> None:
    documented = _documented(section)
    assert set(columns) == documented, (set(columns) - documented, documented - set(columns))


def test_vertebra_columns_follow_the_result_schema() -> None:
    cols = vertebra_columns()
    assert {"level", "bmd_mg_cm3", "height_anterior_mm", "centroid_z_lps_mm", "genant_grade"} <= set(cols)
    assert "heights_mm" not in cols and "centroid_lps_mm" not in cols


def test_cli_lists_studies(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lib.make_cases(tmp_path / "a", [1, 2])
    assert main(["batch", str(tmp_path / "a"), "-o", str(tmp_path / "out"), "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["case_001", "case_002"]
    assert not (tmp_path / "out").exists()
    assert main(["batch", str(tmp_path / "nothing_here"), "-o", str(tmp_path / "out")]) == 2
    assert main(["batch", str(tmp_path / "a"), "-o", str(tmp_path / "out"), "--gpus", "first"]) == 2
