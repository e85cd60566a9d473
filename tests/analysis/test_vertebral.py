"""Trabecular ROI and HU, phantomless calibration, calibrated BMD, ACR and Pickhardt categories."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from osteoscan import physics
from osteoscan.analysis import (
    Calibration,
    acr_category,
    calibrated_bmd,
    mean_bmd_for_acr,
    phantomless_calibration,
    pickhardt_l1_flag,
    roi_hu_stats,
    trabecular_roi,
    vertebra_volume_ml,
)
from osteoscan.analysis.vertebral import (
    anterior_air_roi,
    body_outline_mask,
    outside_reconstruction_circle,
    pickhardt_thresholds,
)
from osteoscan.result import AcrCategory

ISO = (1.0, 1.0, 1.0)


def test_volume_ml() -> None:
    m = np.zeros((20, 30, 40), dtype=bool)
    m[2:12, 5:25, 10:40] = True  # 10 x 20 x 30 voxels
    assert vertebra_volume_ml(m, (2.0, 1.0, 0.5)) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="spacing"):
        vertebra_volume_ml(m, (1.0, 0.0, 1.0))


def _ct_with_cortex_and_vein(body: np.ndarray, trabecular_hu: float = 150.0) -> np.ndarray:
    """Body interior at ``trabecular_hu``, a 1-voxel cortex at 900 HU, a posterior midline vein at 20 HU."""
    ct = np.full(body.shape, 40.0, dtype=np.float32)
    ct[body] = trabecular_hu
    cortex = body & ~ndimage.binary_erosion(body)
    ct[cortex] = 900.0
    # basivertebral vein: the posterior 30 % of the AP extent, +-4 voxels around the LR midline
    idx = np.argwhere(body)
    j_lo, j_hi = idx[:, 1].min(), idx[:, 1].max()
    i_mid = round(idx[:, 2].mean())
    vein = np.zeros_like(body)
    vein[:, int(j_hi - 0.3 * (j_hi - j_lo)) :, i_mid - 4 : i_mid + 5] = True
    ct[vein & body & ~cortex] = 20.0
    return ct


def test_roi_avoids_cortex_and_vein(synth) -> None:
    body = synth.voxelise(synth.Body(), (60, 70, 70), ISO, (30.0, 35.0, 35.0))
    ct = _ct_with_cortex_and_vein(body)
    roi = trabecular_roi(body, ISO)
    stats = roi_hu_stats(ct, roi)
    assert stats.n > 500
    assert stats.mean == pytest.approx(150.0) and stats.sd == pytest.approx(0.0)
    # inside the body eroded by 2 voxels, within +-2.5 mm of the centroid slice
    assert not (roi & ~ndimage.binary_erosion(body, iterations=2)).any()
    ks = np.flatnonzero(roi.any(axis=(1, 2)))
    assert ks.min() >= 30 - 2.5 and ks.max() <= 30 + 2.5 and len(ks) == 5
    # centred at 58 % of the AP extent from the posterior wall (j grows posteriorly)
    j = np.argwhere(roi)[:, 1]
    bj = np.argwhere(body[30])[:, 0]
    posterior, anterior = bj.max() + 0.5, bj.min() - 0.5
    assert (posterior - j.mean()) / (posterior - anterior) == pytest.approx(0.58, abs=0.03)


def test_roi_follows_a_shifted_body_and_thick_slices(synth) -> None:
    spacing = (3.0, 0.8, 0.8)
    body = synth.voxelise(synth.Body(), (20, 90, 110), spacing, (30.0, 30.0, 50.0))
    roi = trabecular_roi(body, spacing)
    assert roi.any()
    # thick slices: 1-voxel erosion; at most 2 slices within +-2.5 mm
    assert not (roi & ~ndimage.binary_erosion(body, iterations=1)).any()
    assert len(np.flatnonzero(roi.any(axis=(1, 2)))) <= 2
    ic = np.argwhere(roi)[:, 2].mean() * spacing[2]
    assert ic == pytest.approx(50.0, abs=1.0)


def test_roi_noise_and_small_rois(synth) -> None:
    body = synth.voxelise(synth.Body(), (60, 70, 70), ISO, (30.0, 35.0, 35.0))
    rng = np.random.default_rng(0)
    ct = _ct_with_cortex_and_vein(body, 120.0) + rng.normal(0, 10, body.shape).astype(np.float32)
    s = roi_hu_stats(ct, trabecular_roi(body, ISO))
    assert s.mean == pytest.approx(120.0, abs=1.5) and s.sd == pytest.approx(10.0, abs=1.0)
    tiny = np.zeros(body.shape, dtype=bool)
    tiny[30, 35, 35:40] = True
    assert roi_hu_stats(ct, tiny) == (None, None, 5)
    assert not trabecular_roi(np.zeros((5, 5, 5), dtype=bool), ISO).any()
    with pytest.raises(ValueError, match="same shape"):
        roi_hu_stats(ct, tiny[:-1])


def _torso(distort: tuple[float, float] = (1.0, 0.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A cylinder torso in air: soft tissue, a VAT region, a bone core; HU distorted linearly."""
    shape = (12, 120, 120)
    k, j, i = np.indices(shape)
    r2 = (j - 60) ** 2 + (i - 60) ** 2
    truth = np.full(shape, -1000.0) + ((j + i) % 3 - 1.0)  # air is never constant; median -1000
    truth[r2 <= 45**2] = 40.0
    vat = ((j - 50) ** 2 + (i - 60) ** 2 <= 15**2) & (k >= 3) & (k <= 8)
    truth[vat] = -95.0
    bone = (j - 80) ** 2 + (i - 60) ** 2 <= 6**2
    truth[bone] = 200.0
    slope, intercept = distort
    ct = (slope * truth + intercept).astype(np.float32)
    air = (r2 > 52**2) & (j < 30)
    return ct, vat, air, bone


def test_calibration_recovers_a_linear_distortion() -> None:
    ct, vat, air, bone = _torso((1.08, 25.0))
    cal = phantomless_calibration(ct, vat, air_mask=air)
    assert cal.valid, cal.reason
    assert cal.slope == pytest.approx(1 / 1.08) and cal.intercept == pytest.approx(-25 / 1.08)
    assert cal.apply(float(ct[bone].mean())) == pytest.approx(200.0)
    # the air ROI placed automatically in front of the body gives the same map
    auto = phantomless_calibration(ct, vat, spacing=(2.0, 1.0, 1.0))
    assert auto.valid and auto.slope == pytest.approx(cal.slope) and auto.intercept == pytest.approx(cal.intercept)
    assert auto.n_air > 1000


def test_calibration_with_a_kvp_specific_fat_reference() -> None:
    ct, vat, air, _ = _torso((1.0, 0.0))
    ct[vat] = -108.0  # fat at 100 kV (physics.tissue_hu), scanner otherwise perfect
    default = phantomless_calibration(ct, vat, air_mask=air)
    assert default.slope == pytest.approx(905.0 / 892.0)  # -108 forced to -95: a few HU of bias
    exact = phantomless_calibration(ct, vat, air_mask=air, fat_reference_hu=physics.tissue_hu("fat", 100.0))
    assert exact.slope == pytest.approx(1.0) and exact.intercept == pytest.approx(0.0, abs=1e-9)


def test_padding_outside_the_reconstruction_circle_is_not_air() -> None:
    ct, vat, _, bone = _torso((1.05, 30.0))  # scanner air reads -1020, fat -69.75
    _, j, i = np.indices(ct.shape)
    ct[(j - 60) ** 2 + (i - 60) ** 2 > 58**2] = -1024.0  # corners padded, untouched by the offset
    ct[:, 4, 59:61] = -1024.0  # clipped air pixels inside the circle are kept
    assert outside_reconstruction_circle(ct[0]).sum() == ((j[0] - 60) ** 2 + (i[0] - 60) ** 2 > 58**2).sum()
    cal = phantomless_calibration(ct, vat, spacing=(2.0, 1.0, 1.0))
    assert cal.valid and cal.air_hu == pytest.approx(-1020.0)
    assert cal.apply(float(ct[bone].mean())) == pytest.approx(200.0)


def test_anterior_air_roi_is_in_front_of_the_body() -> None:
    ct, _, _, _ = _torso()
    body = body_outline_mask(ct)
    air = anterior_air_roi(ct, body, (2.0, 1.0, 1.0))
    assert air.any() and (np.abs(ct[air] + 1000) <= 1).all()
    j_front = np.argwhere(body)[:, 1].min()
    assert np.argwhere(air)[:, 1].max() < j_front - 9  # >= 10 mm margin


def test_invalid_calibrations_say_why() -> None:
    ct, vat, air, bone = _torso()
    bad = phantomless_calibration(ct, vat, air_mask=bone)  # "air" that is bone
    assert not bad.valid and "air" in bad.reason
    few = np.zeros_like(vat)
    few[5, 50, 60] = True
    c = phantomless_calibration(ct, few, air_mask=air)
    assert not c.valid and "fat" in c.reason
    assert calibrated_bmd(150.0, c, 120.0) is None
    crazy = phantomless_calibration((ct * 1.6).astype(np.float32), vat, air_mask=air)
    assert not crazy.valid


IDENTITY = Calibration(1.0, 0.0, -1000.0, -95.0, True)


@pytest.mark.parametrize("kvp", [80.0, 100.0, 120.0, 140.0])
def test_calibrated_bmd_inverts_the_physics(kvp: float) -> None:
    hu = physics.trabecular_hu(95.0, kvp, 0.5)
    assert calibrated_bmd(hu, IDENTITY, kvp) == pytest.approx(95.0, abs=1e-6)
    hu_pv = physics.trabecular_hu(95.0, kvp, 0.5, "portal_venous")
    assert calibrated_bmd(hu_pv, IDENTITY, kvp, contrast_phase="portal_venous") == pytest.approx(95.0, abs=1e-6)


def test_calibrated_bmd_through_a_distorted_scanner() -> None:
    ct, vat, air, _ = _torso((0.95, -30.0))
    cal = phantomless_calibration(ct, vat, air_mask=air)
    measured = 0.95 * physics.trabecular_hu(70.0, 120.0) - 30.0
    assert calibrated_bmd(measured, cal, 120.0) == pytest.approx(70.0, abs=1e-3)
    assert calibrated_bmd(measured, IDENTITY, 120.0) != pytest.approx(70.0, abs=5.0)  # uncorrected is off


@pytest.mark.parametrize(
    ("bmd", "cat"),
    [
        (120.01, AcrCategory.NORMAL),
        (120.0, AcrCategory.OSTEOPENIA),
        (80.0, AcrCategory.OSTEOPENIA),
        (79.99, AcrCategory.OSTEOPOROSIS),
        (-5.0, AcrCategory.OSTEOPOROSIS),
    ],
)
def test_acr_boundaries(bmd: float, cat: AcrCategory) -> None:
    assert acr_category(bmd) is cat


def test_mean_bmd_for_acr() -> None:
    assert mean_bmd_for_acr({"L1": 100.0, "L2": 110.0, "L3": 0.0}) == pytest.approx(105.0)
    assert mean_bmd_for_acr({"L1": 100.0, "L2": None}) is None
    with pytest.raises(ValueError):
        acr_category(float("nan"))


@pytest.mark.parametrize(
    ("hu", "phase", "flag"),
    [
        (110.0, "native", "likely osteoporosis (<=110 HU)"),
        (110.01, "native", "low BMD likely (<160 HU)"),
        (159.99, "native", "low BMD likely (<160 HU)"),
        (160.0, "native", "normal"),
        (124.75, "portal_venous", "likely osteoporosis (<=124.75 HU, portal_venous)"),
        (124.76, "portal venous", "low BMD likely (<174.75 HU, portal_venous)"),
        (179.99, "arterial", "low BMD likely (<180 HU, arterial)"),
        (180.0, "arterial", "normal (arterial)"),
        (105.0, None, "likely osteoporosis (<=110 HU, phase unknown)"),
        (200.0, "none", "normal"),
    ],
)
def test_pickhardt_flags(hu: float, phase: str | None, flag: str) -> None:
    assert pickhardt_l1_flag(hu, phase) == flag


def test_pickhardt_rejects_unknown_phase() -> None:
    assert pickhardt_thresholds("arterial") == (130.0, 180.0)
    with pytest.raises(ValueError, match="contrast phase"):
        pickhardt_l1_flag(100.0, "delayed-ish")
