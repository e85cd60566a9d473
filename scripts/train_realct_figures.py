"""Sagittal overlays of the coarse + decoded spine labels on every real scan of ../shared/realct.

    .venv/bin/python scripts/train_realct_figures.py [--weights-dir DIR] [--out docs/figures]

One PNG per scan (mid-spine sagittal slice, CT in a bone window, decoded levels coloured and named),
to look at how the phantom-trained models transfer. Reference labels, where a scan has them, are
drawn as contours.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

REALCT = Path(__file__).resolve().parents[2] / "shared" / "realct"


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from osteoscan.io import CANONICAL_ORIENTATION, read_nifti_array, reorient_array
    from osteoscan.io.load import load_ct
    from osteoscan.pipeline.grid import Grid, sample
    from osteoscan.train.inference import localise, open_runner

    p = argparse.ArgumentParser()
    p.add_argument("--weights-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    args.out.mkdir(parents=True, exist_ok=True)
    coarse = open_runner("spine_coarse", args.weights_dir)
    scans = {
        "ts_example": (REALCT / "ts_example" / "ct.nii.gz", REALCT / "ts_example" / "ref" / "vertebrae.nii.gz"),
        "tptbox_l3": (next(REALCT.glob("tptbox_l3/*_ct.nii.gz"), None), next(REALCT.glob("tptbox_l3/*seg-vert*.nii.gz"), None)),
        "chest_jpegll": (REALCT / "chest_jpegll", None),
    }
    for name, (path, ref_path) in scans.items():
        if path is None or not Path(path).exists():
            logging.warning("%s not found; skipped", name)
            continue
        volume = load_ct(path)
        decoding, low = localise(coarse, volume)
        grid = Grid(volume.shape, volume.affine)
        levels = sample(decoding.level_map, low.affine, grid, order=0, cval=0)
        xs = [v.centroid_lps_mm for v in decoding.vertebrae]
        if xs:
            idx = volume.lps_to_index(np.mean(np.asarray(xs), axis=0))
            col = int(np.clip(round(idx[2]), 0, volume.shape[2] - 1))
        else:
            col = volume.shape[2] // 2
        sp = volume.spacing
        fig, ax = plt.subplots(figsize=(4, 6))
        ax.imshow(volume.array[:, :, col], cmap="gray", vmin=-300, vmax=1000, origin="lower",
                  aspect=sp[0] / sp[1])
        ax.imshow(np.ma.masked_equal(levels[:, :, col], 0), cmap="tab20", vmin=0, vmax=20, alpha=0.45,
                  origin="lower", aspect=sp[0] / sp[1], interpolation="nearest")
        if ref_path is not None and Path(ref_path).exists():
            arr, aff = read_nifti_array(ref_path)
            ref, _ = reorient_array(arr, aff, CANONICAL_ORIENTATION)
            if ref.shape == volume.shape:
                ax.contour(ref[:, :, col] > 0, [0.5], colors="yellow", linewidths=0.6, origin="lower")
        for v in decoding.vertebrae:
            k, j, _ = volume.lps_to_index(np.asarray(v.centroid_lps_mm))
            ax.text(j + 12, k, v.level.name + ("*" if v.touches_border else ""), color="white", fontsize=7,
                    va="center")
        ax.set_title(f"{name}: coarse + decoder", fontsize=9)
        ax.set_axis_off()
        out = args.out / f"models_realct_{name}.png"
        fig.savefig(out, dpi=80, bbox_inches="tight")
        plt.close(fig)
        logging.info("%s: %s -> %s", name, [v.level.name for v in decoding.vertebrae], out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
