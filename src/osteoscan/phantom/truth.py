"""Ground truth of a phantom case as a JSON-serialisable dict (written as ``truth.json``).

Analytic quantities (BMD, heights, fracture grade, disc heights) come from the subject's geometry;
quantities that depend on the grid (centroids, volumes, completeness, L3 tissue areas and mean HU)
are measured on the generated label map and image, so they are exact for the files written.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from osteoscan.io.volume import CTVolume
from osteoscan.labels import (
    BODY_OFFSET,
    DISC_OFFSET,
    MUSCLE_LABELS,
    POSTERIOR_OFFSET,
    Anatomy,
    Tissue,
    VertebraLevel,
    body_label,
    disc_label,
    posterior_label,
)
from osteoscan.phantom.anatomy import Spine
from osteoscan.phantom.params import SubjectParams
from osteoscan.phantom.raster import Grid

#: Genant grade from a height-loss fraction (REFERENCE.md: 20-25 / 25-40 / > 40 %).
GENANT_LIMITS = (0.20, 0.25, 0.40)


def genant_grade(loss: float) -> int:
    """Semi-quantitative Genant grade (0..3) of a height-loss fraction."""
    return int(sum(loss >= lim for lim in GENANT_LIMITS))


def _to_lps(grid: Grid, z_offset: float, p: np.ndarray) -> list[float]:
    xs, ys = grid.to_scanner_xy(p[0], p[1])
    return [round(float(xs), 3), round(float(ys), 3), round(float(p[2] + z_offset), 3)]


def _dir_to_lps(grid: Grid, d: np.ndarray) -> list[float]:
    c, s = np.cos(np.deg2rad(grid.roll_deg)), np.sin(np.deg2rad(grid.roll_deg))
    return [round(float(c * d[0] + s * d[1]), 6), round(float(-s * d[0] + c * d[1]), 6), round(float(d[2]), 6)]


def build_truth(s: SubjectParams, spine: Spine, grid: Grid, volume: CTVolume, labels: np.ndarray) -> dict[str, Any]:
    sc = s.scanner
    zoff = sc.z_offset_mm
    # one pass over the volume for every label's bounding box; centroids are computed inside the boxes
    boxes = ndimage.find_objects(labels)
    present = [0] + [i + 1 for i, b in enumerate(boxes) if b is not None]
    present_set = set(present)
    coms, counts = _spine_centroids(labels, boxes)
    vox_ml = float(np.prod(grid.spacing)) / 1000.0

    def idx_to_lps(k: np.ndarray) -> list[float]:
        return [round(float(x), 3) for x in volume.index_to_lps(k)]

    vertebrae = []
    for vg in spine.vertebrae:
        lev = vg.level
        bl, pl = body_label(lev), posterior_label(lev)
        n_body = counts.get(bl, 0)
        n_post = counts.get(pl, 0)
        in_view = n_body > 0
        heights = vg.heights()
        # complete: the body's analytic bounding box lies inside the grid (a cut body has no BMD/heights)
        complete = bool(in_view and grid.shape[0] > 1 and _body_inside(grid, vg))
        loss = 1.0 - min(heights.values()) / vg.expected_height
        entry: dict[str, Any] = {
            "level": lev.name,
            "label_body": bl,
            "label_posterior": pl,
            "in_view": bool(in_view),
            "complete": complete,
            "bmd_mg_cm3": round(vg.spec.bmd_mg_cm3, 2),
            "heights_mm": {k: round(v, 3) for k, v in heights.items()},
            "expected_height_mm": round(vg.expected_height, 3),
            "height_loss_fraction": round(float(max(loss, 0.0)), 4),
            "fracture_grade": int(vg.spec.fracture_grade),
            "fracture_shape": vg.spec.fracture_shape,
            "center_lps_mm": _to_lps(grid, zoff, vg.center),
            "axis_si_lps": _dir_to_lps(grid, vg.frame[:, 2]),
            "axis_ap_lps": _dir_to_lps(grid, vg.frame[:, 1]),
            "axis_lr_lps": _dir_to_lps(grid, vg.frame[:, 0]),
            "body_depth_mm": round(vg.depth, 3),
            "body_width_mm": round(2 * vg.a, 3),
            "body_volume_ml": round(n_body * vox_ml, 3),
            "vertebra_volume_ml": round((n_body + n_post) * vox_ml, 3),
            "body_centroid_lps_mm": idx_to_lps(coms[bl]) if bl in coms else None,
            "centroid_lps_mm": None,
        }
        if bl in coms or pl in coms:
            tot = n_body + n_post
            c = (coms.get(bl, np.zeros(3)) * n_body + coms.get(pl, np.zeros(3)) * n_post) / max(tot, 1)
            entry["centroid_lps_mm"] = idx_to_lps(c)
        vertebrae.append(entry)
    discs = []
    for d in spine.discs:
        lab = disc_label(d.upper)
        discs.append({
            "upper": d.upper.name,
            "lower": "S1" if d.lower == VertebraLevel.SACRUM else d.lower.name,
            "label": lab,
            "in_view": lab in present_set,
            "heights_mm": {k: round(v, 3) for k, v in d.heights.items()},
            "degeneration_fraction": round(next(v.spec.disc_degeneration for v in spine.vertebrae if v.level == d.upper), 4),
        })
    return {
        "generator": "osteoscan.phantom",
        "generator_version": s.generator_version,
        "seed": s.seed,
        "preset": s.preset,
        "grid": {
            "shape": list(grid.shape),
            "spacing_mm": [round(x, 6) for x in grid.spacing],
            "orientation": "SPL",
            "affine_lps": np.round(volume.affine, 6).tolist(),
        },
        "subject": {
            "sex": s.sex,
            "age_years": round(s.age_years, 1),
            "height_m": round(s.height_m, 3),
            "weight_kg": round(s.weight_kg, 1),
            "bmi": round(s.bmi, 2),
            "habitus": s.habitus,
            "sat_thickness_mm": round(s.sat_mm, 1),
            "vat_factor": round(s.vat_factor, 3),
            "muscle_factor": round(s.muscle_factor, 3),
            "myosteatosis": round(s.myosteatosis, 3),
            "marrow_fat_fraction": round(s.marrow_fat_fraction, 3),
            "mean_bmd_l1_l2_mg_cm3": _mean_bmd(spine, ("L1", "L2")),
        },
        "spine": {
            "rib_pairs": s.rib_pairs,
            "lumbar_rib": s.rib_pairs == 13,
            "transitional": s.transitional,
            "levels": [v.level.name for v in spine.vertebrae],
            "sacral_slope_deg": round(s.sacral_slope_deg, 2),
            "lordosis_deg": round(s.lordosis_deg, 2),
            "kyphosis_deg": round(s.kyphosis_deg, 2),
            "scoliosis_deg": round(s.scoliosis_deg, 2),
        },
        "scanner": {
            "kvp": sc.kvp,
            "pixel_spacing_mm": round(sc.pixel_spacing_mm, 4),
            "slice_thickness_mm": sc.slice_thickness_mm,
            "slice_spacing_mm": round(sc.slice_spacing_mm, 4),
            "kernel": sc.kernel,
            "kernel_name": sc.kernel_name,
            "manufacturer_style": sc.manufacturer,
            "blur_sigma_mm": round(sc.blur_sigma_mm, 3),
            "noise_sd_hu": round(sc.noise_sd_hu, 2),
            "contrast_phase": sc.contrast_phase,
            "hu_offset": round(sc.hu_offset, 2),
            "hu_gain": round(sc.hu_gain, 4),
            "circle_padding": sc.circle_padding,
            "table": sc.table,
            "roll_deg": round(sc.roll_deg, 2),
        },
        "vertebrae": vertebrae,
        "discs": discs,
        "l3": l3_tissue(spine, grid, volume, labels),
        "labels_present": sorted(int(v) for v in present),
    }


def _spine_centroids(labels: np.ndarray, boxes: list) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """Index-space centre of mass and voxel count of every spine label (>= BODY_OFFSET), computed in
    each label's bounding box (one pass over the volume for the boxes)."""
    coms: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for lab0, box in enumerate(boxes):
        lab = lab0 + 1
        if box is None or lab < BODY_OFFSET:
            continue
        m = labels[box] == lab
        n = int(m.sum())
        if n == 0:
            continue
        idx = np.nonzero(m)
        coms[lab] = np.array([float(i.mean()) + b.start for i, b in zip(idx, box)])
        counts[lab] = n
    return coms, counts


def _body_inside(grid: Grid, vg) -> bool:
    """True when the 8 corners of the body's local bounding box map inside the grid's extent."""
    hmax = max(vg.ha, vg.hp) / 2.0 + 0.5
    corners = np.array([[su * vg.a, sv, sw * hmax] for su in (-1, 1) for sv in (-vg.b, vg.b) for sw in (-1, 1)])
    world = corners @ vg.frame.T + vg.center
    xs, ys = grid.to_scanner_xy(world[:, 0], world[:, 1])
    idx = [(world[:, 2] - grid.origin[2]) / grid.spacing[0], (ys - grid.origin[1]) / grid.spacing[1],
           (xs - grid.origin[0]) / grid.spacing[2]]
    return all(bool(np.all((i >= -0.5) & (i <= n - 0.5))) for i, n in zip(idx, grid.shape))


def _mean_bmd(spine: Spine, names: tuple[str, ...]) -> float:
    vals = [v.spec.bmd_mg_cm3 for v in spine.vertebrae if v.level.name in names]
    return round(float(np.mean(vals)), 2) if vals else float("nan")


def tissue_map(labels2d: np.ndarray) -> np.ndarray:
    """Body-composition classes (:class:`osteoscan.labels.Tissue`) from phantom labels of a slice."""
    t = np.zeros(labels2d.shape, np.uint8)
    t[np.isin(labels2d, [int(m) for m in MUSCLE_LABELS])] = Tissue.MUSCLE
    t[labels2d == Anatomy.SAT] = Tissue.SAT
    t[labels2d == Anatomy.VAT] = Tissue.VAT
    t[labels2d == Anatomy.IMAT] = Tissue.IMAT
    return t


def l3_tissue(spine: Spine, grid: Grid, volume: CTVolume, labels: np.ndarray) -> dict[str, Any] | None:
    """Tissue areas (cm2) and mean HU at the axial slice nearest the mid-L3 body centre."""
    try:
        l3 = spine.by_level(VertebraLevel.L3)
    except KeyError:
        return None
    z_idx = (l3.center[2] - grid.origin[2]) / grid.spacing[0]
    k = int(round(z_idx))
    if k < 0 or k >= grid.shape[0] or abs(z_idx - k) > 0.5 + 1e-6:
        return None
    t = tissue_map(labels[k])
    px_cm2 = grid.spacing[1] * grid.spacing[2] / 100.0
    img = volume.array[k]
    out: dict[str, Any] = {"slice_index": k, "pixel_area_cm2": round(px_cm2, 6)}
    for name, cls in (("muscle", Tissue.MUSCLE), ("sat", Tissue.SAT), ("vat", Tissue.VAT), ("imat", Tissue.IMAT)):
        m = t == cls
        out[f"{name}_area_cm2"] = round(float(m.sum()) * px_cm2, 3)
        out[f"{name}_mean_hu"] = round(float(img[m].mean()), 2) if m.any() else None
    return out


__all__ = ["DISC_OFFSET", "POSTERIOR_OFFSET", "build_truth", "genant_grade", "l3_tissue", "tissue_map"]
