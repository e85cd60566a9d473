"""Model-level evaluation on a held-out phantom cohort (seeds never used in training).

Everything runs through the exported ONNX files (ONNX Runtime, fp32, CPU by default), fed exactly
as the pipeline feeds them (:mod:`osteoscan.train.inference`):

* level identification: whole scans of every coverage preset at the coarse spacing, coarse model +
  :func:`osteoscan.models.spine_decoding.decode_spine`; a vertebra counts as identified when the
  nearest decoded centroid is within 20 mm (VerSe's rule) and carries its level. Vertebrae fully in
  view are the main metric; cut ones (at the scan's edges) are reported apart.
* fine Dice: crops at the true centroids with coarse-like guidance masks (ground truth degraded
  by :func:`osteoscan.train.augment.degrade_mask`, fixed seed), Dice of the whole vertebra and of
  its body / posterior elements, per level.
* BMD: the regressor on crops centred on the *predicted* body (fine model output), as in the
  pipeline; MAE, Pearson r, and the fraction of errors within the predicted 2 sigma.
* tissue: mid-L3 slices at the spec pixel size; Dice per class.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from osteoscan.labels import BODY_OFFSET, POSTERIOR_OFFSET, Tissue, VertebraLevel, VertebraPart
from osteoscan.models.preprocess import extract_crop, normalise_hu
from osteoscan.train.augment import degrade_mask
from osteoscan.train.datasets import EVAL_SEED_BASE, render_crop, subject_geometry
from osteoscan.train.inference import Runner, bmd_predict, localise, tissue_predict

log = logging.getLogger(__name__)

ID_DISTANCE_MM = 20.0
FINE_LEVELS = tuple(VertebraLevel(v) for v in range(VertebraLevel.T11, VertebraLevel.L5 + 1))
ID_PRESETS = ("cap", "chest", "abdomen", "lumbar")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / denom if denom else float("nan")


def evaluate_level_id(coarse: Runner, n_cases: int, seed_base: int = EVAL_SEED_BASE) -> dict[str, Any]:
    from osteoscan.phantom import generate_case

    spacing = float(coarse.spec.input_spacing_mm[0])
    total = correct = cut_total = cut_correct = 0
    cases = []
    for i in range(n_cases):
        seed, preset = seed_base + i, ID_PRESETS[i % len(ID_PRESETS)]
        case = generate_case(seed, preset, spacing_mm=spacing)
        decoding, _ = localise(coarse, case.volume)
        dets = [(np.asarray(v.centroid_lps_mm), v.level) for v in decoding.vertebrae]
        errors = []
        for e in case.truth["vertebrae"]:
            if e["centroid_lps_mm"] is None:
                continue
            truth_c = np.asarray(e["centroid_lps_mm"])
            level = VertebraLevel.from_name(e["level"])
            d = [float(np.linalg.norm(c - truth_c)) for c, _ in dets]
            ok = bool(d) and min(d) <= ID_DISTANCE_MM and dets[int(np.argmin(d))][1] is level
            if e["complete"]:
                total += 1
                correct += ok
            else:
                cut_total += 1
                cut_correct += ok
            if not ok:
                errors.append(f"{level.name}->{dets[int(np.argmin(d))][1].name if d and min(d) <= ID_DISTANCE_MM else 'missed'}"
                              + ("" if e["complete"] else "(cut)"))
        cases.append({"seed": seed, "preset": preset, "detected": [lv.name for _, lv in dets], "errors": errors})
        log.info("level id %d/%d seed %d %s: errors %s", i + 1, n_cases, seed, preset, errors or "none")
    return {
        "n_cases": n_cases,
        "accuracy_complete": correct / total if total else float("nan"),
        "n_complete": total,
        "accuracy_cut": cut_correct / cut_total if cut_total else float("nan"),
        "n_cut": cut_total,
        "cases": cases,
    }


def evaluate_fine_and_bmd(fine: Runner, bmd: Runner | None, n_cases: int, seed_base: int = EVAL_SEED_BASE + 1000) -> dict[str, Any]:
    fspec = fine.spec
    patch = np.array(fspec.patch_size, dtype=int)
    margin = np.array([6, 8, 8])
    sp = tuple(float(s) for s in fspec.input_spacing_mm)
    per_level: dict[str, list[dict[str, float]]] = {}
    bmd_rows: list[tuple[str, float, float, float]] = []
    for i in range(n_cases):
        seed = seed_base + i
        subject, entries, _, _ = subject_geometry(seed, "cap")
        rng = np.random.default_rng([seed, 0xE7A1])
        for level in FINE_LEVELS:
            if level not in entries:
                continue
            e = entries[level]
            centre = np.asarray(e["center_lps_mm"], dtype=float) + np.array([0.0, 15.0, 0.0])
            hu, labels, affine = render_crop(seed, subject, centre, sp, tuple(int(v) for v in patch + 2 * margin))
            target = (labels == BODY_OFFSET + level) | (labels == POSTERIOR_OFFSET + level)
            if target.sum() < 50:
                continue
            com = np.argwhere(target).mean(axis=0)
            x = extract_crop(hu, com, patch, pad_value=fspec.normalisation.pad_hu)
            body_t = extract_crop(labels == BODY_OFFSET + level, com, patch, pad_value=False)
            post_t = extract_crop(labels == POSTERIOR_OFFSET + level, com, patch, pad_value=False)
            nb = np.zeros_like(target)
            for n in (int(level) - 1, int(level) + 1):
                nb |= (labels == BODY_OFFSET + n) | (labels == POSTERIOR_OFFSET + n)
            guide = degrade_mask(body_t | post_t, rng, spacing_mm=sp[0], coarse_mm=3.0,
                                 neighbour=extract_crop(nb, com, patch, pad_value=False))
            xin = np.stack([normalise_hu(x, fspec), guide.astype(np.float32)])[None]
            pred = np.argmax(fine(xin)["logits"][0], axis=0)
            row = {
                "vertebra": _dice(pred > 0, body_t | post_t),
                "body": _dice(pred == VertebraPart.BODY, body_t),
                "posterior": _dice(pred == VertebraPart.POSTERIOR, post_t),
            }
            per_level.setdefault(level.name, []).append(row)
            if bmd is not None:
                body_pred = pred == VertebraPart.BODY
                if body_pred.sum() > 50:
                    bspec = bmd.spec
                    if tuple(bspec.input_spacing_mm) != tuple(fspec.input_spacing_mm):
                        raise ValueError("evaluation cuts BMD crops from fine crops: the two specs need the same spacing")
                    c_body = np.argwhere(body_pred).mean(axis=0) + (com - (patch - 1) / 2)  # index in the render
                    bm_full = np.zeros(hu.shape, dtype=bool)
                    start = np.floor(com - (patch - 1) / 2 + 0.5).astype(int)
                    sl = tuple(slice(max(s, 0), min(s + n, d)) for s, n, d in zip(start, patch, hu.shape))
                    src = tuple(slice(a.start - s, a.stop - s) for a, s in zip(sl, start))
                    bm_full[sl] = body_pred[src]
                    ct_b = extract_crop(hu, c_body, bspec.patch_size, pad_value=bspec.normalisation.pad_hu)
                    m_b = extract_crop(bm_full, c_body, bspec.patch_size, pad_value=False)
                    mean, sigma = bmd_predict(bmd, [ct_b], [m_b])
                    bmd_rows.append((level.name, float(e["bmd_mg_cm3"]), float(mean[0]), float(sigma[0])))
        log.info("fine/bmd %d/%d seed %d done", i + 1, n_cases, seed)
    levels = {lv: {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]} for lv, rows in per_level.items()}
    out: dict[str, Any] = {
        "n_cases": n_cases,
        "per_level": levels,
        "vertebra_dice_mean": float(np.mean([v["vertebra"] for v in levels.values()])) if levels else float("nan"),
        "body_dice_mean": float(np.mean([v["body"] for v in levels.values()])) if levels else float("nan"),
    }
    if bmd_rows:
        t = np.array([r[1] for r in bmd_rows])
        p = np.array([r[2] for r in bmd_rows])
        s = np.array([r[3] for r in bmd_rows])
        out["bmd"] = {
            "n": len(bmd_rows),
            "mae_mg_cm3": float(np.abs(p - t).mean()),
            "bias_mg_cm3": float((p - t).mean()),
            "pearson_r": float(np.corrcoef(p, t)[0, 1]) if len(t) > 2 else float("nan"),
            "within_2sigma": float(np.mean(np.abs(p - t) <= 2 * s)),
            "truth_range": [float(t.min()), float(t.max())],
        }
    return out


def evaluate_tissue(tissue: Runner, n_cases: int, seed_base: int = EVAL_SEED_BASE + 2000) -> dict[str, Any]:
    from osteoscan.phantom.truth import tissue_map

    spec = tissue.spec
    patch = tuple(int(p) for p in spec.patch_size)
    px = tuple(float(s) for s in spec.input_spacing_mm)
    scores: dict[str, list[float]] = {"muscle": [], "sat": [], "vat": [], "imat": []}
    for i in range(n_cases):
        seed = seed_base + i
        preset = "cap" if i % 2 == 0 else "abdomen"
        subject, entries, fov_centre, fov_half = subject_geometry(seed, preset)
        if VertebraLevel.L3 not in entries:
            continue
        z = float(entries[VertebraLevel.L3]["center_lps_mm"][2])
        centre = np.array([fov_centre[0], fov_centre[1], z])
        hu, labels, _ = render_crop(seed, subject, centre, (2.0, *px), (1, *patch))
        hu, labels = hu[0], labels[0]
        yy = (np.arange(patch[0]) - (patch[0] - 1) / 2) * px[0]
        xx = (np.arange(patch[1]) - (patch[1] - 1) / 2) * px[1]
        outside = (np.abs(yy)[:, None] > fov_half[0]) | (np.abs(xx)[None, :] > fov_half[1])
        hu[outside] = spec.normalisation.pad_hu
        truth = tissue_map(labels)
        truth[outside] = 0
        pred = tissue_predict(tissue, hu[None])[0]
        for name, cls in (("muscle", Tissue.MUSCLE), ("sat", Tissue.SAT), ("vat", Tissue.VAT), ("imat", Tissue.IMAT)):
            d = _dice(pred == cls, truth == cls)
            if np.isfinite(d):
                scores[name].append(d)
    return {"n_cases": n_cases, **{f"{k}_dice": float(np.mean(v)) if v else float("nan") for k, v in scores.items()}}


def evaluate_all(weights_dir: str | Path | None, realct: Path | None, n_id: int, n_fine: int, n_tissue: int,
                 backend: str = "onnxruntime", device: str = "cpu") -> dict[str, Any]:
    from osteoscan.train.evaluate_real import evaluate_ts_example, evaluate_ts_tissue
    from osteoscan.train.inference import open_runner

    t0 = time.monotonic()
    runners = {n: open_runner(n, weights_dir, backend=backend, device=device)
               for n in ("spine_coarse", "vertebra_fine", "bmd_regressor", "tissue_2d")}
    results: dict[str, Any] = {
        "models": {n: {"version": r.spec.version, "sha256": r.spec.sha256} for n, r in runners.items()},
        "backend": backend,
        "device": device,
    }
    results["phantom_level_id"] = evaluate_level_id(runners["spine_coarse"], n_id)
    results["phantom_fine_bmd"] = evaluate_fine_and_bmd(runners["vertebra_fine"], runners["bmd_regressor"], n_fine)
    results["phantom_tissue"] = evaluate_tissue(runners["tissue_2d"], n_tissue)
    if realct is not None and (realct / "ts_example").is_dir():
        results["real_ts_example"] = evaluate_ts_example(runners["spine_coarse"], runners["vertebra_fine"], realct)
        results["real_ts_tissue"] = evaluate_ts_tissue(runners["tissue_2d"], realct)
    results["seconds"] = round(time.monotonic() - t0, 1)
    return results


def summary_table(r: dict[str, Any]) -> str:
    """The model-card table (markdown) from :func:`evaluate_all` results."""
    rows = []
    lid = r["phantom_level_id"]
    fb = r["phantom_fine_bmd"]
    ti = r["phantom_tissue"]

    def f(v: Any, fmt: str = "{:.3f}") -> str:
        return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v)

    rows.append(("phantom: vertebra Dice (fine, per level, mean)", ">= 0.93", f(fb["vertebra_dice_mean"])))
    rows.append(("phantom: level identification accuracy (complete vertebrae)", ">= 98 %",
                 f(100 * lid["accuracy_complete"], "{:.1f} %") + f" (n={lid['n_complete']}; cut vertebrae "
                 + f(100 * lid["accuracy_cut"], "{:.0f} %") + f", n={lid['n_cut']})"))
    if "bmd" in fb:
        b = fb["bmd"]
        rows.append(("phantom: BMD MAE / Pearson r vs truth", "<= 6 mg/cm3 / >= 0.97",
                     f"{b['mae_mg_cm3']:.1f} / {b['pearson_r']:.3f} (n={b['n']})"))
    rows.append(("phantom: tissue Dice muscle / SAT / VAT at L3", ">= 0.95 each",
                 f"{f(ti['muscle_dice'])} / {f(ti['sat_dice'])} / {f(ti['vat_dice'])} (IMAT {f(ti['imat_dice'])})"))
    if "real_ts_example" in r:
        re = r["real_ts_example"]
        rows.append(("real ts_example: T11..L5 found with the right labels", "all 7",
                     f"{re['t11_l5_correct']} of {re['t11_l5_total']}"))
        rows.append(("real ts_example: per-vertebra Dice vs TotalSegmentator (fine)", ">= 0.80 mean",
                     f(re["fine_dice_mean_t11_l5"])))
    if "real_ts_tissue" in r:
        rt = r["real_ts_tissue"]
        rows.append(("real ts_example/ct_small: tissue Dice muscle / SAT / VAT", "report; aim >= 0.85",
                     f"{rt['muscle']:.3f} / {rt['sat']:.3f} / {rt['vat']:.3f}"))
    lines = ["| metric | target | result |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)
