"""A cached cohort case counts as done only with both its truth file and its DICOM series."""

from __future__ import annotations

from pathlib import Path

from osteoscan.pipeline.cohorts import CachedCase


def test_case_without_its_series_is_not_complete(tmp_path: Path) -> None:
    case = CachedCase("benchmark_0013", tmp_path / "benchmark_0013")
    case.folder.mkdir()
    case.truth_path.write_text("{}")
    assert not case.is_complete  # truth.json alone: the series went missing, so it is generated again
    case.dicom_dir.mkdir()
    assert not case.is_complete  # an empty series folder too
    (case.dicom_dir / "slice_0000.dcm").write_bytes(b"")
    assert case.is_complete
