"""Realism check of the phantom against a real CT (issue #3): a figure and an HU table.

Makes ``docs/phantom_vs_real.png`` (phantom vs ``../shared/realct/ts_example/ct.nii.gz``: axial at L1
and L3, sagittal through the spine, same window) and writes the table of mean +- SD HU per tissue,
phantom vs real (real masks: ``ts_example/ref``), into ``docs/phantom.md`` between the
``<!-- hu-table -->`` markers. The phantom is generated like the real scan: 120 kV, non-contrast,
3 mm voxels (the real case is resampled to 3 mm).

    .venv/bin/python scripts/phantom_vs_real.py [--seed N] [--realct ../shared/realct]
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import numpy as np

from osteoscan.io import read_nifti, read_nifti_array, reorient_array, to_canonical
from osteoscan.labels import (
    DISC_OFFSET,
    MUSCLE_LABELS,
    Anatomy,
    VertebraLevel,
    body_label,
    posterior_label,
)
from osteoscan.phantom import generate_case, sample_subject

log = logging.getLogger("phantom_vs_real")
ROOT = Path(__file__).resolve().parents[1]
WINDOW = (-160.0, 240.0)  # W400 / L40 soft-tissue window, both images

# TotalSegmentator ids in the real reference masks (README of ../shared/realct)
TS_VERT = {"L5": 27, "L4": 28, "L3": 29, "L2": 30, "L1": 31, "T12": 32, "T11": 33}
TS_TOTAL = {"liver": [5], "spleen": [1], "kidney": [2, 3], "aorta": [52], "ivc": [63], "psoas": [88, 89],
            "erector spinae": [86, 87], "lung": [10, 11, 12, 13, 14]}
PH_ORGAN = {"liver": [Anatomy.LIVER], "spleen": [Anatomy.SPLEEN], "kidney": [Anatomy.KIDNEY], "aorta": [Anatomy.AORTA],
            "ivc": [Anatomy.IVC], "psoas": [Anatomy.MUSCLE_PSOAS], "erector spinae": [Anatomy.MUSCLE_ERECTOR],
            "lung": [Anatomy.LUNG]}
LUMBAR = [VertebraLevel.L1, VertebraLevel.L2, VertebraLevel.L3, VertebraLevel.L4, VertebraLevel.L5]


def _canon_labels(path: Path) -> np.ndarray:
    arr, aff = read_nifti_array(path)
    return reorient_array(arr, aff, ("S", "P", "L"))[0]


def _stats(img: np.ndarray, mask: np.ndarray) -> str:
    if not mask.any():
        return "n/a"
    v = img[mask].astype(np.float64)
    return f"{v.mean():.0f} ± {v.std():.0f}"


def real_case(realct: Path) -> dict:
    ex = realct / "ts_example"
    vol = to_canonical(read_nifti(ex / "ct.nii.gz"))
    small = to_canonical(read_nifti(ex / "ct_small.nii.gz"))
    vert = _canon_labels(ex / "ref" / "vertebrae.nii.gz")
    body = _canon_labels(ex / "ref" / "vertebrae_body.nii.gz")
    total = _canon_labels(ex / "ref" / "small_total.nii.gz")
    tissue = {n: _canon_labels(ex / "ref" / "small_tissue" / f"{n}.nii.gz") > 0
              for n in ("skeletal_muscle", "subcutaneous_fat", "torso_fat")}
    lumbar = np.isin(vert, [TS_VERT[f"L{i}"] for i in range(1, 6)])
    rows = {
        "vertebral body L1-L5": _stats(vol.array, (body == 1) & lumbar),
        "whole vertebra L1-L5": _stats(vol.array, lumbar),
        "intervertebral discs": _stats(vol.array, body == 2),
        "skeletal muscle (T11-L2)": _stats(small.array, tissue["skeletal_muscle"]),
        "subcutaneous fat (T11-L2)": _stats(small.array, tissue["subcutaneous_fat"]),
        "visceral/torso fat (T11-L2)": _stats(small.array, tissue["torso_fat"]),
    }
    for name, ids in TS_TOTAL.items():
        rows[name] = _stats(small.array, np.isin(total, ids))
    centroids = {}
    for name in ("L1", "L3"):
        idx = np.argwhere(vert == TS_VERT[name])
        centroids[name] = idx.mean(0)
    return {"volume": vol, "rows": rows, "centroids": centroids}


def phantom_case(seed: int) -> dict:
    # scanned like the real case; BMD set to what the real scan's eroded L1-L5 bodies read (105-128 HU,
    # realct README) so that bone is compared like with like
    s = sample_subject(seed, "cap", scanner_kvp=120.0, scanner_contrast_phase="none", scanner_circle_padding=None,
                       scanner_slice_thickness_mm=3.0, scanner_slice_spacing_mm=3.0, bmd_mg_cm3=90.0)
    case = generate_case(seed, "cap", subject=s, spacing_mm=3.0)
    vol, lab = case.volume, case.labels
    lumbar_body = np.isin(lab, [body_label(v) for v in LUMBAR])
    lumbar_all = lumbar_body | np.isin(lab, [posterior_label(v) for v in LUMBAR])
    discs = (lab >= DISC_OFFSET) & (lab < DISC_OFFSET + 100)
    # the real tissue masks cover T11..L2: restrict the phantom's to the same levels
    by = {e["level"]: e for e in case.truth["vertebrae"]}
    k_lo = int(round(vol.lps_to_index(np.array(by["L2"]["center_lps_mm"]))[0]))
    k_hi = int(round(vol.lps_to_index(np.array(by["T11"]["center_lps_mm"]))[0]))
    zr = np.zeros(lab.shape, bool)
    zr[min(k_lo, k_hi): max(k_lo, k_hi) + 1] = True
    muscle = np.isin(lab, [int(m) for m in MUSCLE_LABELS])
    rows = {
        "vertebral body L1-L5": _stats(vol.array, lumbar_body),
        "whole vertebra L1-L5": _stats(vol.array, lumbar_all),
        "intervertebral discs": _stats(vol.array, discs),
        "skeletal muscle (T11-L2)": _stats(vol.array, muscle & zr),
        "subcutaneous fat (T11-L2)": _stats(vol.array, (lab == Anatomy.SAT) & zr),
        "visceral/torso fat (T11-L2)": _stats(vol.array, (lab == Anatomy.VAT) & zr),
    }
    for name, ids in PH_ORGAN.items():
        rows[name] = _stats(vol.array, np.isin(lab, [int(i) for i in ids]) & (zr if name != "lung" else True))
    centroids = {n: vol.lps_to_index(np.array(by[n]["body_centroid_lps_mm"])) for n in ("L1", "L3")}
    return {"volume": vol, "labels": lab, "rows": rows, "centroids": centroids, "truth": case.truth}


def make_figure(ph: dict, real: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 8.2), gridspec_kw={"width_ratios": [1, 1, 1.25]})
    for row, (name, d) in enumerate((("phantom", ph), ("real (ts_example)", real))):
        vol = d["volume"]
        a = vol.array
        sp = vol.spacing
        for col, lev in enumerate(("L1", "L3")):
            k = int(round(d["centroids"][lev][0]))
            ax = axes[row, col]
            ax.imshow(a[k], cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], aspect=sp[1] / sp[2])
            ax.set_title(f"{name}: axial at {lev}", fontsize=10)
            ax.axis("off")
        i = int(round(np.mean([d["centroids"][n][2] for n in ("L1", "L3")])))
        ax = axes[row, 2]
        ax.imshow(a[::-1, :, i], cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], aspect=sp[0] / sp[1])
        ax.set_title(f"{name}: sagittal, mid-spine", fontsize=10)
        ax.axis("off")
    fig.suptitle(f"phantom vs real CT, window W{WINDOW[1] - WINDOW[0]:.0f}/L{(WINDOW[0] + WINDOW[1]) / 2:.0f}, 3 mm voxels",
                 fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)
    plt.close(fig)


def hu_table(ph: dict, real: dict) -> str:
    lines = ["| tissue | phantom HU (mean ± SD) | real HU (mean ± SD) |", "|---|---|---|"]
    for name in real["rows"]:
        lines.append(f"| {name} | {ph['rows'].get(name, 'n/a')} | {real['rows'][name]} |")
    return "\n".join(lines)


def write_table(md: Path, table: str, seed: int) -> None:
    block = (f"<!-- hu-table -->\nPhantom seed {seed} (cap, 120 kV, non-contrast, 3 mm) vs `ts_example` "
             f"(made by `scripts/phantom_vs_real.py`):\n\n{table}\n<!-- /hu-table -->")
    text = md.read_text() if md.exists() else ""
    if "<!-- hu-table -->" in text:
        text = re.sub(r"<!-- hu-table -->.*?<!-- /hu-table -->", lambda _: block, text, flags=re.DOTALL)
    else:
        text = text + "\n\n" + block + "\n"
    md.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--realct", type=Path, default=ROOT.parent / "shared" / "realct")
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "phantom_vs_real.png")
    ap.add_argument("--md", type=Path, default=ROOT / "docs" / "phantom.md")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    real = real_case(args.realct)
    ph = phantom_case(args.seed)
    make_figure(ph, real, args.png)
    table = hu_table(ph, real)
    write_table(args.md, table, args.seed)
    log.info("%s\nfigure: %s", table, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
