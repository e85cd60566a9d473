"""Evaluation on the real scans of ``../shared/realct`` against their TotalSegmentator references.

TotalSegmentator's masks are another tool's output, a reference to compare with, not truth.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from osteoscan.io import CANONICAL_ORIENTATION, read_nifti, read_nifti_array, reorient_array, to_canonical
from osteoscan.labels import Tissue, VertebraLevel
from osteoscan.train.inference import Runner, fine_segment, localise, tissue_predict

log = logging.getLogger(__name__)

#: TotalSegmentator v1/v2 vertebra ids used in ts_example's reference (realct/README.md).
TS_VERTEBRA_IDS: dict[int, VertebraLevel] = {
    26: VertebraLevel.SACRUM,
    27: VertebraLevel.L5,
    28: VertebraLevel.L4,
    29: VertebraLevel.L3,
    30: VertebraLevel.L2,
    31: VertebraLevel.L1,
    32: VertebraLevel.T12,
    33: VertebraLevel.T11,
}
#: A detection counts as the reference vertebra when its centroid is within this distance (VerSe).
ID_DISTANCE_MM = 20.0
EVALUATED_LEVELS = tuple(VertebraLevel(v) for v in range(VertebraLevel.T11, VertebraLevel.L5 + 1))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / denom if denom else float("nan")


def _canonical_labels(path: Path) -> np.ndarray:
    arr, aff = read_nifti_array(path)
    out, _ = reorient_array(arr, aff, CANONICAL_ORIENTATION)
    return out


def evaluate_ts_example(coarse: Runner, fine: Runner | None, realct: Path) -> dict[str, Any]:
    """Level identification and per-vertebra Dice on ts_example/ct.nii.gz."""
    from osteoscan.pipeline.grid import Grid, sample

    case = realct / "ts_example"
    volume = to_canonical(read_nifti(case / "ct.nii.gz"))
    ref = _canonical_labels(case / "ref" / "vertebrae.nii.gz")
    if ref.shape != volume.shape:
        raise ValueError(f"reference {ref.shape} and CT {volume.shape} differ in shape")
    decoding, low = localise(coarse, volume)
    ct_grid = Grid(volume.shape, volume.affine)
    coarse_on_ct = sample(decoding.level_map, low.affine, ct_grid, order=0, cval=0)
    fine_parts = fine_segment(fine, volume, decoding, low.affine) if fine is not None else {}
    per_level: dict[str, Any] = {}
    for ts_id, level in TS_VERTEBRA_IDS.items():
        mask = ref == ts_id
        if not mask.any():
            continue
        centroid = volume.index_to_lps(np.argwhere(mask).mean(axis=0))
        best, best_d = None, np.inf
        for v in decoding.vertebrae:
            d = float(np.linalg.norm(np.asarray(v.centroid_lps_mm) - centroid))
            if d < best_d:
                best, best_d = v, d
        found = best is not None and best_d <= ID_DISTANCE_MM
        entry: dict[str, Any] = {
            "reference_voxels": int(mask.sum()),
            "detected_level": best.level.name if found else None,
            "distance_mm": round(best_d, 1) if best is not None else None,
            "correct": bool(found and best.level is level),
            "coarse_dice": round(_dice(coarse_on_ct == int(level), mask), 4),
        }
        if level in fine_parts:
            g, parts = fine_parts[level]
            on_ct = sample((parts > 0).astype(np.uint8), g.affine, ct_grid, order=0, cval=0).astype(bool)
            entry["fine_dice"] = round(_dice(on_ct, mask), 4)
        per_level[level.name] = entry
    evaluated = [per_level[lv.name] for lv in EVALUATED_LEVELS if lv.name in per_level]
    fine_dices = [e["fine_dice"] for e in evaluated if "fine_dice" in e]
    return {
        "scan": "ts_example/ct.nii.gz",
        "detected": [v.level.name for v in decoding.vertebrae],
        "decoder_notes": list(decoding.notes),
        "levels": per_level,
        "t11_l5_correct": sum(e["correct"] for e in evaluated),
        "t11_l5_total": len(evaluated),
        "fine_dice_mean_t11_l5": round(float(np.mean(fine_dices)), 4) if fine_dices else None,
        "coarse_dice_mean_t11_l5": round(float(np.mean([e["coarse_dice"] for e in evaluated])), 4) if evaluated else None,
    }


def evaluate_ts_tissue(tissue: Runner, realct: Path) -> dict[str, Any]:
    """Tissue Dice on every slice of ts_example/ct_small.nii.gz vs TotalSegmentator's masks."""
    from scipy import ndimage

    case = realct / "ts_example"
    volume = to_canonical(read_nifti(case / "ct_small.nii.gz"))
    refs = {
        Tissue.MUSCLE: _canonical_labels(case / "ref" / "small_tissue" / "skeletal_muscle.nii.gz") > 0,
        Tissue.SAT: _canonical_labels(case / "ref" / "small_tissue" / "subcutaneous_fat.nii.gz") > 0,
        Tissue.VAT: _canonical_labels(case / "ref" / "small_tissue" / "torso_fat.nii.gz") > 0,
    }
    spec = tissue.spec
    target = np.asarray(spec.input_spacing_mm[-2:], dtype=float)
    patch = tuple(int(s) for s in spec.patch_size[-2:])
    spacing_in = np.asarray(volume.spacing[1:])
    zoom = spacing_in / target
    centre_in = (np.asarray(volume.shape[1:]) - 1) / 2
    centre_out = (np.asarray(patch) - 1) / 2
    rows = (np.arange(patch[0]) - centre_out[0]) / zoom[0] + centre_in[0]
    cols = (np.arange(patch[1]) - centre_out[1]) / zoom[1] + centre_in[1]
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    slices = np.stack([
        ndimage.map_coordinates(volume.array[k].astype(np.float32), [rr, cc], order=1, mode="constant", cval=-1024.0)
        for k in range(volume.shape[0])
    ])
    pred_model = tissue_predict(tissue, slices)
    back_r = (np.arange(volume.shape[1]) - centre_in[0]) * zoom[0] + centre_out[0]
    back_c = (np.arange(volume.shape[2]) - centre_in[1]) * zoom[1] + centre_out[1]
    br, bc = np.meshgrid(back_r, back_c, indexing="ij")
    pred = np.stack([ndimage.map_coordinates(p, [br, bc], order=0, mode="constant", cval=0) for p in pred_model])
    # TotalSegmentator's skeletal-muscle mask includes intermuscular fat; compare muscle+IMAT to it
    out = {
        "muscle": _dice((pred == Tissue.MUSCLE) | (pred == Tissue.IMAT), refs[Tissue.MUSCLE]),
        "sat": _dice(pred == Tissue.SAT, refs[Tissue.SAT]),
        "vat": _dice(pred == Tissue.VAT, refs[Tissue.VAT]),
    }
    return {"scan": "ts_example/ct_small.nii.gz", "slices": int(volume.shape[0]),
            **{k: round(float(v), 4) for k, v in out.items()}}
