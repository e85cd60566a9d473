"""Finding studies: folders, DICOM series, manifests, globs; ids; duplicates."""

from __future__ import annotations

import logging
from pathlib import Path

import batch_testlib as lib
import pytest

from osteoscan.batch.discovery import discover, read_manifest
from osteoscan.errors import InputError
from osteoscan.io import write_dicom_series


def _dicom(folder: Path, seed: int, **kw) -> list[Path]:
    return write_dicom_series(lib.case_volume(seed, shape=(6, 12, 12)), folder, **kw)


def test_folder_of_studies(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "archive"
    _dicom(root / "patientA", 1)
    _dicom(root / "patientB" / "nested" / "deeper", 2)
    lib.make_cases(root, [3])
    (root / "scan.zip").write_bytes(b"PK")  # discovery looks at names only; the worker judges content
    (root / ".hidden").mkdir()
    (root / "notes.txt").write_text("not a study")
    tasks = discover([root])
    assert [(t.study_id, Path(t.input_path).name) for t in tasks] == [
        ("patientA", "patientA"), ("patientB", "patientB"), ("case_003", "case_003.nii.gz"), ("scan", "scan.zip"),
    ]
    # a folder that holds DICOM files directly is one study
    single = discover([root / "patientA"])
    assert [(t.study_id, t.input_path) for t in single] == [("patientA", str(root / "patientA"))]
    # loose DICOM next to study folders is reported, not silently mixed in
    _dicom(root, 4, file_prefix="LOOSE")
    with caplog.at_level(logging.WARNING):
        assert len(discover([root])) == 4
    assert "ignored" in caplog.text


def test_by_series_groups_dicom_files_whatever_the_layout(tmp_path: Path) -> None:
    root = tmp_path / "pacs_dump"
    a = _dicom(root / "mixed", 1, series_number=2, file_prefix="A")
    b = _dicom(root / "mixed", 2, series_number=5, file_prefix="B")
    c = _dicom(root / "other" / "x", 3, series_number=2)
    tasks = discover([root], by_series=True)
    assert sorted(t.study_id for t in tasks) == ["mixed_se2", "mixed_se5", "other_x_se2"]
    by_id = {t.study_id: t for t in tasks}
    assert sorted(by_id["mixed_se5"].files) == sorted(str(p) for p in b)
    assert sorted(by_id["mixed_se2"].files) == sorted(str(p) for p in a)
    assert by_id["mixed_se2"].input_path == str(root / "mixed")
    assert by_id["other_x_se2"].files == tuple(sorted(str(p) for p in c))
    import pydicom

    assert by_id["mixed_se5"].series_uid == pydicom.dcmread(b[0]).SeriesInstanceUID


def test_manifest(tmp_path: Path) -> None:
    lib.make_cases(tmp_path / "data", [1, 2])
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "input,study_id,patient_sex,patient_height_cm,patient_age,site\n"
        "data/case_001.nii.gz,subj-01,f,165,70,A\n"
        f"{tmp_path / 'data' / 'case_002.nii.gz'},,M,,,B\n"
    )
    tasks = read_manifest(manifest)
    assert tasks[0].study_id == "subj-01" and tasks[0].input_path == str(tmp_path / "data" / "case_001.nii.gz")
    assert (tasks[0].patient_sex, tasks[0].patient_height_cm, tasks[0].patient_age) == ("F", 165.0, 70.0)
    assert tasks[1].study_id == "case_002" and tasks[1].patient_height_cm is None
    bad = tmp_path / "bad.csv"
    bad.write_text("input,patient_height_cm\ndata/case_001.nii.gz,tall\n")
    with pytest.raises(InputError, match="line 2.*patient_height_cm"):
        read_manifest(bad)
    with pytest.raises(InputError, match="'input' column"):
        (tmp_path / "nocol.csv").write_text("path\nx\n")
        read_manifest(tmp_path / "nocol.csv")
    dup = tmp_path / "dup.csv"
    dup.write_text("input,study_id\ndata/case_001.nii.gz,s\ndata/case_002.nii.gz,s\n")
    with pytest.raises(InputError, match="unique"):
        discover([dup])


def test_globs_and_duplicate_names(tmp_path: Path) -> None:
    lib.make_cases(tmp_path / "site1", [1, 2])
    lib.make_cases(tmp_path / "site2", [1])
    tasks = discover([str(tmp_path / "site*" / "*.nii.gz"), tmp_path / "site1"])
    ids = [t.study_id for t in tasks]
    # the same file named twice is screened once; two files with one name get distinct ids
    assert len(tasks) == 3 and len(set(ids)) == 3
    assert ids[0] == "case_001" and ids[2].startswith("case_001-")
    with pytest.raises(InputError, match="matches nothing"):
        discover([str(tmp_path / "nowhere" / "*.nii")])
    with pytest.raises(InputError, match="no such file"):
        discover([tmp_path / "missing_folder"])
