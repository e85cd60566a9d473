"""Phantom outputs on disk: CLI files, DICOM round trip through osteoscan.io.load_ct, cohort specs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from osteoscan.cli import main
from osteoscan.io import load_ct, read_nifti, read_nifti_array
from osteoscan.phantom import generate_case
from osteoscan.phantom.cohort import case_subject, load_cohort
from osteoscan.phantom.writers import label_table, save_case


def test_cli_writes_dicom_nifti_labels_truth(tmp_path):
    out = tmp_path / "p"
    assert main(["phantom", "-o", str(out), "--seed", "1", "--preset", "lumbar", "--spacing", "4", "--format", "both"]) == 0
    for name in ("ct.nii.gz", "labels.nii.gz", "truth.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "ct").glob("*.dcm"))) > 10
    truth = json.loads((out / "truth.json").read_text())
    assert truth["seed"] == 1 and truth["preset"] == "lumbar"
    assert truth["label_table"]["116"] == "L3_body"
    dcm = load_ct(out / "ct")
    nii = read_nifti(out / "ct.nii.gz")
    assert dcm.shape == nii.shape == tuple(truth["grid"]["shape"])
    np.testing.assert_allclose(dcm.affine, nii.affine, atol=1e-3)
    np.testing.assert_array_equal(dcm.array.astype(np.int16), nii.array)
    lab, aff = read_nifti_array(out / "labels.nii.gz")  # labels are uint16 ids, not HU
    assert lab.dtype == np.uint16 and lab.shape == dcm.shape
    np.testing.assert_allclose(aff, dcm.affine, atol=1e-3)
    assert (lab == 116).any()  # L3 body


def test_dicom_round_trip_preserves_geometry_and_hu(tmp_path):
    case = generate_case(5, "abdomen", spacing_mm=(5.0, 3.0, 3.0))
    save_case(case, tmp_path, "dicom")
    back = load_ct(tmp_path / "ct")
    assert back.orientation == ("S", "P", "L")
    assert back.shape == case.volume.shape
    np.testing.assert_allclose(back.affine, case.volume.affine, atol=1e-3)
    np.testing.assert_array_equal(back.array.astype(np.int16), case.volume.array)
    assert back.provenance.kvp == pytest.approx(case.truth["scanner"]["kvp"])


def test_cohort_specs():
    bench = load_cohort("benchmark")
    assert len(bench) == 120
    assert len({c.seed for c in bench}) == 120 and len({c.case_id for c in bench}) == 120
    presets = {c.preset for c in bench}
    assert {"cap", "abdomen", "chest"} <= presets
    from osteoscan.phantom.generate import default_grid

    shapes = [default_grid(case_subject(c)).shape for c in bench]
    assert all(sh[1:] == (512, 512) and 60 <= sh[0] <= 600 for sh in shapes), shapes
    forced = [c for c in bench if "fracture" in c.overrides]
    assert forced and all(case_subject(c).vertebrae for c in forced[:2])
    test = load_cohort("test")
    assert 4 <= len(test) <= 10
    s = case_subject(test[0])
    assert any(v.fracture_grade == 2 for v in s.vertebrae)


def test_label_table_names_every_label():
    case = generate_case(2, "lumbar", spacing_mm=4.0)
    table = label_table()
    for v in case.truth["labels_present"]:
        assert v in table, v
