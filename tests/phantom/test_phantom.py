"""The procedural phantom: determinism, presets, ground-truth consistency, physics, grids, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from osteoscan.labels import BODY_OFFSET, VertebraLevel, body_label, posterior_label
from osteoscan.phantom import PRESETS, generate_case, sample_subject
from osteoscan.phantom.truth import genant_grade, tissue_map
from osteoscan.physics import (
    bmd_from_hu_120kv,
    contrast_enhancement_hu,
    mineral_density,
    mineral_hu_per_mg,
    tissue_hu,
    trabecular_hu,
)

FRACTURES = {"L1": (2, "wedge"), "L2": (1, "biconcave"), "L3": (3, "crush"), "L4": (2, "biconcave")}


@pytest.fixture(scope="module")
def lumbar_fracture_case():
    """A 1 mm lumbar crop with one fracture of each shape, no scanner noise."""
    s = sample_subject(11, "lumbar", fracture=FRACTURES, scoliosis_deg=6.0, scanner_circle_padding=None)
    coarse = generate_case(11, "lumbar", spacing_mm=4.0, subject=s, noise=False)
    centres = [v["center_lps_mm"] for v in coarse.truth["vertebrae"] if v["level"] in FRACTURES]
    return generate_case(11, "lumbar", subject=s, spacing_mm=1.0, crop_center_lps_mm=np.mean(centres, axis=0),
                         crop_size_mm=(170, 100, 90), noise=False)


def _local(case, entry, mask):
    """Voxel centres of ``mask`` in the vertebra's local frame (u: LR, v: AP, w: SI), mm."""
    idx = np.argwhere(mask).astype(float)
    pts = case.volume.index_to_lps(idx)
    d = pts - np.asarray(entry["center_lps_mm"])
    return d @ np.asarray(entry["axis_lr_lps"]), d @ np.asarray(entry["axis_ap_lps"]), d @ np.asarray(entry["axis_si_lps"])


def measured_heights(case, entry, vox: float) -> dict[str, float]:
    """Heights at 15/50/85 % of the AP extent on the mid-sagittal plane, measured on the label map."""
    u, v, w = _local(case, entry, case.labels == entry["label_body"])
    mid = np.abs(u) < vox * 0.75
    v0, v1 = v[mid].min(), v[mid].max()
    out = {}
    for name, t in (("anterior", 0.15), ("middle", 0.5), ("posterior", 0.85)):
        vt = v0 + t * (v1 - v0)
        sel = mid & (np.abs(v - vt) < vox * 0.75)
        out[name] = float(w[sel].max() - w[sel].min() + vox)
    return out


def test_sample_subject_is_deterministic_and_varied():
    a, b, c = sample_subject(5), sample_subject(5), sample_subject(6)
    assert a == b
    assert a != c
    kvps = {sample_subject(i).scanner.kvp for i in range(40)}
    assert len(kvps) >= 3
    assert {sample_subject(i).scanner.contrast_phase for i in range(40)} == {"none", "arterial", "portal_venous"}


def test_generate_case_is_deterministic():
    a = generate_case(3, "lumbar", spacing_mm=4.0)
    b = generate_case(3, "lumbar", spacing_mm=4.0)
    np.testing.assert_array_equal(a.volume.array, b.volume.array)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.truth == b.truth
    assert json.dumps(a.truth, sort_keys=True) == json.dumps(b.truth, sort_keys=True)
    c = generate_case(4, "lumbar", spacing_mm=4.0)
    assert c.volume.shape != a.volume.shape or not np.array_equal(c.volume.array, a.volume.array)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_generates(preset):
    spacing = None if preset == "l3_slice" else 4.0
    case = generate_case(21, preset, spacing_mm=spacing)
    vol = case.volume
    assert vol.orientation == ("S", "P", "L")
    assert vol.array.dtype == np.int16 and case.labels.dtype == np.uint16
    assert case.labels.shape == vol.shape
    json.dumps(case.truth)  # serialisable
    levels = {v["level"] for v in case.truth["vertebrae"] if v["in_view"]}
    # air outside, fat and soft tissue inside
    assert np.percentile(vol.array, 1) < -900
    if preset == "chest":
        assert "T6" in levels and (case.labels == 20).any()  # lungs
    if preset in ("abdomen", "lumbar", "l3_slice"):
        assert "L3" in levels and case.truth["l3"] is not None
    if preset == "l3_slice":
        assert vol.shape[0] == 1 and case.truth["l3"]["slice_index"] == 0
    if preset == "cap":
        assert {"T1", "L5"} <= levels and (case.labels == body_label(VertebraLevel.SACRUM)).any()


def test_heights_from_labels_match_truth_within_one_voxel(lumbar_fracture_case):
    case = lumbar_fracture_case
    vox = 1.0
    by_level = {v["level"]: v for v in case.truth["vertebrae"]}
    for level in ("L1", "L2", "L3", "L4"):
        entry = by_level[level]
        assert entry["complete"], level
        m = measured_heights(case, entry, vox)
        for k, stated in entry["heights_mm"].items():
            assert abs(m[k] - stated) <= vox + 1e-6, (level, k, m[k], stated)


def test_disc_heights_from_labels_match_truth(lumbar_fracture_case):
    """Disc heights on the mid-sagittal plane, in the frame between the two neighbours (discs next
    to the biconcave fractures fill the depressed endplates: their middle height grows)."""
    case = lumbar_fracture_case
    vox = 1.0
    by = {v["level"]: v for v in case.truth["vertebrae"]}
    checked = 0
    for d in case.truth["discs"]:
        if d["upper"] not in ("L1", "L2", "L3") or not d["in_view"]:
            continue
        up, lo = by[d["upper"]], by[d["lower"]]
        si = np.add(up["axis_si_lps"], lo["axis_si_lps"])
        si /= np.linalg.norm(si)
        ap = np.add(up["axis_ap_lps"], lo["axis_ap_lps"])
        ap -= si * (ap @ si)
        ap /= np.linalg.norm(ap)
        lr = np.cross(ap, si)
        centre = (np.asarray(up["center_lps_mm"]) + np.asarray(lo["center_lps_mm"])) / 2
        pts = case.volume.index_to_lps(np.argwhere(case.labels == d["label"]).astype(float)) - centre
        u, v, w = pts @ lr, pts @ ap, pts @ si
        mid = np.abs(u) < 0.75 * vox
        v0, v1 = v[mid].min(), v[mid].max()
        for name, t in (("anterior", 0.15), ("middle", 0.5), ("posterior", 0.85)):
            sel = mid & (np.abs(v - (v0 + t * (v1 - v0))) < 0.75 * vox)
            measured = float(w[sel].max() - w[sel].min() + vox)
            assert abs(measured - d["heights_mm"][name]) <= 1.5 * vox, (d["upper"], name, measured, d["heights_mm"])
        checked += 1
    assert checked == 3


def test_fracture_grade_matches_height_loss(lumbar_fracture_case):
    case = lumbar_fracture_case
    by_level = {v["level"]: v for v in case.truth["vertebrae"]}
    for level, (grade, shape) in FRACTURES.items():
        e = by_level[level]
        assert e["fracture_grade"] == grade and e["fracture_shape"] == shape
        h = e["heights_mm"]
        loss = 1.0 - min(h.values()) / e["expected_height_mm"]
        assert genant_grade(loss) == grade, (level, loss)
        assert abs(loss - e["height_loss_fraction"]) < 1e-3
        if shape == "wedge":
            assert min(h, key=h.get) == "anterior"
        if shape == "biconcave":
            assert min(h, key=h.get) == "middle"
        # measured on the labels, the same grade (1 mm voxels; grade limits have a margin)
        m = measured_heights(case, e, 1.0)
        assert genant_grade(1.0 - min(m.values()) / e["expected_height_mm"]) == grade
    # an unfractured neighbour stays grade 0 with the Genant 1 - min/max criterion
    t12 = by_level["T12"]
    assert t12["fracture_grade"] == 0
    assert 1.0 - min(t12["heights_mm"].values()) / max(t12["heights_mm"].values()) < 0.2


def test_label_volumes_and_centroids_match_truth(lumbar_fracture_case):
    case = lumbar_fracture_case
    vox_ml = float(np.prod(case.volume.spacing)) / 1000.0
    for e in case.truth["vertebrae"]:
        n_body = int((case.labels == e["label_body"]).sum())
        assert e["body_volume_ml"] == pytest.approx(n_body * vox_ml, abs=1e-3)
        if n_body:
            c = case.volume.index_to_lps(np.argwhere(case.labels == e["label_body"]).mean(0))
            np.testing.assert_allclose(c, e["body_centroid_lps_mm"], atol=0.01)
    l3 = next(e for e in case.truth["vertebrae"] if e["level"] == "L3")
    # an L3 body of an adult: 25-60 ml (crushed one is smaller but > 15 ml)
    assert 15.0 < l3["body_volume_ml"] < 60.0
    # the body centroid lies close to the analytic centre (within a few mm even when crushed)
    assert np.linalg.norm(np.subtract(l3["body_centroid_lps_mm"], l3["center_lps_mm"])) < 5.0


def test_l3_tissue_truth_matches_labels():
    case = generate_case(8, "l3_slice")
    t = case.truth["l3"]
    tm = tissue_map(case.labels[t["slice_index"]])
    px = float(np.prod(case.volume.spacing[1:])) / 100.0
    img = case.volume.array[t["slice_index"]]
    for name, cls in (("muscle", 1), ("sat", 2), ("vat", 3), ("imat", 4)):
        assert t[f"{name}_area_cm2"] == pytest.approx((tm == cls).sum() * px, abs=1e-3)
        if (tm == cls).any():
            assert t[f"{name}_mean_hu"] == pytest.approx(float(img[tm == cls].mean()), abs=0.01)
    assert 50 < t["muscle_area_cm2"] < 350
    assert t["sat_mean_hu"] < -40 and t["muscle_mean_hu"] > 0


def test_trabecular_hu_follows_bmd():
    """Noise-free 120 kV non-contrast: the core of each lumbar body reads trabecular_hu(BMD)."""
    s = sample_subject(31, "lumbar", scanner_kvp=120.0, scanner_contrast_phase="none", scanner_hu_offset=0.0,
                       scanner_hu_gain=1.0, scanner_circle_padding=None, bmd_mg_cm3=70.0)
    coarse = generate_case(31, "lumbar", subject=s, spacing_mm=4.0, noise=False)
    by = {e["level"]: e for e in coarse.truth["vertebrae"]}
    centre = np.mean([by["L2"]["center_lps_mm"], by["L3"]["center_lps_mm"]], axis=0)
    case = generate_case(31, "lumbar", subject=s, spacing_mm=1.0, crop_center_lps_mm=centre, crop_size_mm=(80, 60, 60),
                         noise=False)
    from scipy import ndimage

    checked = 0
    for e in case.truth["vertebrae"]:
        if not e["complete"] or not e["level"].startswith("L"):
            continue
        checked += 1
        core = ndimage.binary_erosion(case.labels == e["label_body"], iterations=4)
        mean = float(case.volume.array[core].mean())
        expected = trabecular_hu(e["bmd_mg_cm3"], 120.0)
        assert abs(mean - expected) < 6.0, (e["level"], mean, expected)
        assert abs(bmd_from_hu_120kv(mean) - e["bmd_mg_cm3"]) < 5.0
    assert checked >= 2


def test_physics_relations():
    # at 120 kV the trabecular HU of a QCT-equivalent BMD does not depend on marrow fat; at 80 kV it
    # does (the hidden mineral weighs more); at equal mineral content, fat lowers the HU at every kV
    assert trabecular_hu(100, 120, 0.2) == pytest.approx(trabecular_hu(100, 120, 0.7))
    assert trabecular_hu(100, 80, 0.7) > trabecular_hu(100, 80, 0.2)
    assert mineral_density(100, 0.7) > 100 > mineral_density(100, 0.1)
    for kvp in (80, 100, 120, 140):
        lean = trabecular_hu(100, kvp, 0.2)
        fatty_same_mineral = trabecular_hu(100 - (mineral_density(100, 0.7) - mineral_density(100, 0.2)), kvp, 0.7)
        assert fatty_same_mineral < lean
    assert trabecular_hu(150, 80) > trabecular_hu(150, 120) > trabecular_hu(150, 140)
    assert mineral_hu_per_mg(80) > mineral_hu_per_mg(120)
    for bmd in (20.0, 80.0, 120.0, 250.0):
        assert bmd_from_hu_120kv(trabecular_hu(bmd, 120.0)) == pytest.approx(bmd)
        assert bmd_from_hu_120kv(trabecular_hu(bmd, 120.0, contrast_phase="portal_venous"), "portal_venous") == pytest.approx(bmd)
    assert tissue_hu("fat", 80) < tissue_hu("fat", 120) < -90
    assert contrast_enhancement_hu("blood", "arterial", 80) > contrast_enhancement_hu("blood", "arterial", 120) > 150
    assert contrast_enhancement_hu("liver", "none") == 0.0


def test_kvp_and_contrast_change_hu():
    base = {"scanner_circle_padding": None, "scanner_hu_offset": 0.0, "scanner_hu_gain": 1.0, "bmd_mg_cm3": 150.0}
    out = {}
    for key, kw in {"120": {"scanner_kvp": 120.0, "scanner_contrast_phase": "none"},
                    "80": {"scanner_kvp": 80.0, "scanner_contrast_phase": "none"},
                    "pv": {"scanner_kvp": 120.0, "scanner_contrast_phase": "portal_venous"}}.items():
        s = sample_subject(41, "l3_slice", **base, **kw)
        case = generate_case(41, "l3_slice", subject=s, noise=False)
        aorta = case.volume.array[case.labels == 29]
        bone = case.volume.array[case.labels == body_label(VertebraLevel.L3)]
        out[key] = (float(np.median(aorta)), float(np.median(bone)))
    assert out["pv"][0] > out["120"][0] + 80  # enhanced aorta
    assert out["80"][1] > out["120"][1] + 20  # bone brighter at 80 kV


def test_crop_samples_the_same_anatomy_as_the_full_grid():
    s = sample_subject(17, "lumbar", scanner_circle_padding=None, scanner_slice_thickness_mm=2.0,
                       scanner_slice_spacing_mm=2.0)
    full = generate_case(17, "lumbar", subject=s, spacing_mm=2.0, noise=False)
    k, j, i = (n // 2 for n in full.volume.shape)
    centre = full.volume.index_to_lps(np.array([k, j, i], dtype=float))
    crop = generate_case(17, "lumbar", subject=s, spacing_mm=2.0, crop_center_lps_mm=centre, crop_size_mm=(30, 62, 62),
                         noise=False)
    n = crop.volume.shape
    ref = full.labels[k - n[0] // 2 : k - n[0] // 2 + n[0], j - n[1] // 2 : j - n[1] // 2 + n[1], i - n[2] // 2 : i - n[2] // 2 + n[2]]
    np.testing.assert_allclose(crop.volume.affine[:3, 3], full.volume.index_to_lps(np.array([k - n[0] // 2, j - n[1] // 2, i - n[2] // 2], float)), atol=1e-6)
    spine = ref >= BODY_OFFSET
    assert spine.sum() > 100
    agree = (crop.labels[spine] == ref[spine]).mean()
    assert agree > 0.99


def test_generation_path_imports_numpy_scipy_only():
    code = (
        "import sys\n"
        "from osteoscan.phantom import generate_case\n"
        "generate_case(2, 'l3_slice', spacing_mm=(5.0, 4.0, 4.0))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pydicom', 'nibabel', 'torch', 'skimage', 'yaml', 'matplotlib'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_posterior_elements_and_ribs_present():
    case = generate_case(12, "chest", spacing_mm=3.0)
    labs = set(case.truth["labels_present"])
    for lvl in (VertebraLevel.T4, VertebraLevel.T8):
        assert body_label(lvl) in labs and posterior_label(lvl) in labs
    assert 40 in labs and 41 in labs  # ribs, sternum
