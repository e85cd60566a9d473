"""Body composition on a synthetic slice with known areas and HU, flags and the mid-L3 slice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from osteoscan.analysis import bmi_kg_m2, composition_at_slice, find_mid_l3_slice
from osteoscan.errors import GeometryError
from osteoscan.io.volume import affine_from_spacing
from osteoscan.labels import Tissue, VertebraLevel, body_label, disc_label, posterior_label

PS = (0.8, 0.7)
PX_CM2 = 0.8 * 0.7 / 100.0


def _slice(with_imat_label: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Concentric slice: SAT ring, muscle ring (with fatty pixels), VAT core; known pixel counts."""
    n = 200
    j, i = np.indices((n, n))
    r = np.hypot(j - 100, i - 100)
    tissue = np.zeros((n, n), dtype=np.uint8)
    hu = np.full((n, n), -1000.0)
    tissue[r <= 90] = Tissue.SAT
    hu[r <= 90] = -100.0
    muscle = (r <= 70) & (r > 55)
    tissue[muscle] = Tissue.MUSCLE
    hu[muscle] = 40.0
    imat_zone = muscle & (j < 45) & (i >= 60)
    fatty = muscle & (i < 60) & ~imat_zone  # fat-range pixels labelled muscle
    hu[fatty] = -80.0
    hot = muscle & (j > 160)  # calcification / contrast in muscle: not muscle attenuation
    hu[hot] = 400.0
    hu[imat_zone] = -60.0
    if with_imat_label:
        tissue[imat_zone] = Tissue.IMAT
    tissue[r <= 55] = Tissue.VAT
    hu[r <= 55] = -90.0
    bowel = r <= 10
    hu[bowel] = 30.0  # labelled VAT, soft-tissue HU (only the threshold-based areas drop it)
    skin = (r <= 90) & (r > 88)
    hu[skin] = 20.0  # labelled SAT, soft-tissue HU
    counts = {
        "muscle_label": int((muscle & ~imat_zone).sum()) if with_imat_label else int(muscle.sum()),
        "fatty": int(fatty.sum()),
        "hot": int((hot & ~fatty).sum()),
        "imat_label": int(imat_zone.sum()),
        "sat": int(((r <= 90) & (r > 70)).sum()),
        "sat_fat": int(((r <= 88) & (r > 70)).sum()),
        "vat": int((r <= 55).sum()),
        "vat_fat": int(((r <= 55) & (r > 10)).sum()),
    }
    return hu, tissue, counts


def test_areas_from_the_map_with_an_imat_class() -> None:
    hu, tissue, n = _slice()
    res = composition_at_slice(hu, tissue, PS, slice_index=42, slice_z_mm=-310.5)
    assert res.sma_cm2 == pytest.approx(n["muscle_label"] * PX_CM2)
    assert res.imat_cm2 == pytest.approx(n["imat_label"] * PX_CM2)
    assert res.sat_cm2 == pytest.approx(n["sat"] * PX_CM2)
    assert res.vat_cm2 == pytest.approx(n["vat"] * PX_CM2)
    # muscle HU only over -29..150: the fatty (-80) and hot (400) pixels are left out
    assert res.muscle_hu == pytest.approx(40.0)
    assert res.vat_sat_ratio == pytest.approx(n["vat"] / n["sat"])
    assert (res.level, res.slice_index, res.slice_z_mm) == ("L3", 42, -310.5)
    assert res.smi_cm2_m2 is None
    assert "SMI not assessable: patient height unknown" in res.flags
    assert "sarcopenia not assessable: SMI unknown" in res.flags
    assert "myosteatosis not assessable: BMI unknown" in res.flags


def test_imat_by_hu_when_the_map_has_no_imat_class() -> None:
    hu, tissue, n = _slice(with_imat_label=False)
    res = composition_at_slice(hu, tissue, PS)
    imat = n["fatty"] + n["imat_label"]  # every fat-range pixel of the muscle compartment
    assert res.imat_cm2 == pytest.approx(imat * PX_CM2)
    assert res.sma_cm2 == pytest.approx((n["muscle_label"] - imat) * PX_CM2)
    assert res.muscle_hu == pytest.approx(40.0)
    forced = composition_at_slice(hu, tissue, PS, imat_from_hu=False)
    assert forced.imat_cm2 == 0.0 and forced.sma_cm2 == pytest.approx(n["muscle_label"] * PX_CM2)


def test_threshold_based_areas() -> None:
    hu, tissue, n = _slice()
    res = composition_at_slice(hu, tissue, PS, hu_windows=True)
    assert res.sma_cm2 == pytest.approx((n["muscle_label"] - n["fatty"] - n["hot"]) * PX_CM2)
    assert res.sat_cm2 == pytest.approx(n["sat_fat"] * PX_CM2)
    assert res.vat_cm2 == pytest.approx(n["vat_fat"] * PX_CM2)
    assert res.imat_cm2 == pytest.approx(n["imat_label"] * PX_CM2)


def _height_for_smi(sma_cm2: float, smi: float) -> float:
    return math.sqrt(sma_cm2 / smi)


@pytest.mark.parametrize(
    ("sex", "smi", "bmi", "expect"),
    [
        ("M", 52.3, 27.0, ["sarcopenia (Prado 2008)", "sarcopenia (Martin 2013)"]),
        ("M", 52.5, 27.0, ["no sarcopenia (Prado 2008)", "sarcopenia (Martin 2013)"]),
        ("M", 53.0, 25.0, ["no sarcopenia (Prado 2008)", "no sarcopenia (Martin 2013)"]),
        ("M", 52.5, None, ["no sarcopenia (Prado 2008)", "sarcopenia (Martin 2013) not assessable: BMI unknown"]),
        ("M", 44.0, 24.0, ["sarcopenia (Prado 2008)", "no sarcopenia (Martin 2013)"]),
        ("M", 42.9, 24.0, ["sarcopenia (Prado 2008)", "sarcopenia (Martin 2013)"]),
        ("female", 38.4, None, ["sarcopenia (Prado 2008)", "sarcopenia (Martin 2013)"]),
        ("F", 40.0, None, ["no sarcopenia (Prado 2008)", "sarcopenia (Martin 2013)"]),
        ("F", 41.1, 30.0, ["no sarcopenia (Prado 2008)", "no sarcopenia (Martin 2013)"]),
    ],
)
def test_sarcopenia_cutoffs(sex: str, smi: float, bmi: float | None, expect: list[str]) -> None:
    hu, tissue, _ = _slice()
    sma = composition_at_slice(hu, tissue, PS).sma_cm2
    res = composition_at_slice(hu, tissue, PS, height_m=_height_for_smi(sma, smi), sex=sex, bmi=bmi)
    assert res.smi_cm2_m2 == pytest.approx(smi)
    for prefix in expect:
        assert any(f.startswith(prefix) for f in res.flags), (prefix, res.flags)


def test_sex_unknown_is_explained() -> None:
    hu, tissue, _ = _slice()
    res = composition_at_slice(hu, tissue, PS, height_m=1.7, sex="O")
    assert "sarcopenia not assessable: no cut-off for sex 'O'" in res.flags
    res = composition_at_slice(hu, tissue, PS, height_m=1.7)
    assert "sarcopenia not assessable: patient sex unknown" in res.flags


@pytest.mark.parametrize(
    ("muscle_hu", "bmi", "myo"),
    [(40.9, 24.9, True), (41.0, 24.9, False), (32.9, 25.0, True), (33.0, 25.0, False), (35.0, 30.0, False)],
)
def test_myosteatosis_cutoffs(muscle_hu: float, bmi: float, myo: bool) -> None:
    hu, tissue, _ = _slice()
    hu = np.where(hu == 40.0, muscle_hu, hu)
    res = composition_at_slice(hu, tissue, PS, bmi=bmi)
    assert res.muscle_hu == pytest.approx(muscle_hu)
    found = [f for f in res.flags if "myosteatosis (Martin 2013)" in f]
    assert len(found) == 1 and found[0].startswith("myosteatosis") is myo


def test_myosteatosis_caveats_for_kvp_and_contrast() -> None:
    hu, tissue, _ = _slice()
    res = composition_at_slice(hu, tissue, PS, bmi=22.0, kvp=100.0, contrast_phase="portal_venous")
    assert any("120 kV" in f for f in res.flags)
    assert any("contrast phase is portal_venous" in f for f in res.flags)


def test_bad_inputs() -> None:
    hu, tissue, _ = _slice()
    with pytest.raises(ValueError, match="same shape"):
        composition_at_slice(hu, tissue[:-1], PS)
    with pytest.raises(ValueError, match="pixel_spacing"):
        composition_at_slice(hu, tissue, (0.8,))
    assert bmi_kg_m2(80.0, 2.0) == pytest.approx(20.0) and bmi_kg_m2(None, 1.8) is None


def test_empty_slice_flags() -> None:
    hu = np.full((20, 20), -1000.0)
    res = composition_at_slice(hu, np.zeros((20, 20), dtype=np.uint8), PS, height_m=1.8, sex="M", bmi=22.0)
    assert res.sma_cm2 == 0.0 and res.muscle_hu is None and res.vat_sat_ratio is None
    assert any(f.startswith("SMI not assessable: no skeletal muscle") for f in res.flags)


def test_find_mid_l3_slice() -> None:
    labels = np.zeros((100, 10, 10), dtype=np.int16)
    labels[40:70, 2:6, 2:8] = body_label(VertebraLevel.L3)  # body slices 40..69 -> middle 54.5
    labels[35:75, 6:9, 2:8] = posterior_label(VertebraLevel.L3)  # ignored
    labels[30:40, 2:6, 2:8] = disc_label(VertebraLevel.L3)  # ignored (disc below L3... any disc)
    labels[70:95, 2:6, 2:8] = body_label(VertebraLevel.L2)
    assert find_mid_l3_slice(labels) == 55
    coarse = np.zeros((100, 10, 10), dtype=np.uint8)
    coarse[10:31] = VertebraLevel.L3
    assert find_mid_l3_slice(coarse, affine_from_spacing((1.0, 1.0, 1.0))) == 20
    assert find_mid_l3_slice(coarse == VertebraLevel.L3) == 20
    assert find_mid_l3_slice(np.zeros((5, 5, 5), dtype=np.uint8)) is None
    sagittal_first = affine_from_spacing((1.0, 1.0, 1.0))[:, [2, 1, 0, 3]]
    with pytest.raises(GeometryError, match="to_canonical"):
        find_mid_l3_slice(coarse, sagittal_first)
