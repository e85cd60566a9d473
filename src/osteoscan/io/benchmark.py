"""Time the CT input path: reading a DICOM series and resampling (the numbers in docs/io.md).

Run: ``python -m osteoscan.io.benchmark [DICOM_DIR] [--repeat N] [--scipy]``. Resampling is timed
on a synthetic 300x512x512 int16 volume with 1.25x0.7x0.7 mm voxels (the size the issue names),
so the numbers do not depend on which CT is at hand.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np

from osteoscan.io.resample import grid_for_spacing, resample, resample_to_grid
from osteoscan.io.volume import CTVolume, affine_from_spacing

log = logging.getLogger(__name__)

#: Size and spacing of the synthetic resampling benchmark volume (array order).
BENCH_SHAPE = (300, 512, 512)
BENCH_SPACING = (1.25, 0.7, 0.7)


def _best(fn, repeat: int) -> tuple[float, float, object]:
    """Best wall time, the CPU time of this process in that run (threads included), and the result.

    On a shared machine wall time depends on the other jobs; CPU time much less so.
    """
    best, best_cpu, out = float("inf"), 0.0, None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        t, c = time.perf_counter() - t0, time.process_time() - c0
        if t < best:
            best, best_cpu = t, c
    return best, best_cpu, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "dicom", nargs="?", help="DICOM series folder to time (e.g. ../shared/realct/chest_jpegll)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the best time is reported")
    parser.add_argument("--scipy", action="store_true", help="also time scipy.ndimage.map_coordinates (slow)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(f"CPUs available: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.2f}")
    if args.dicom:
        from osteoscan.io.dicom import load_dicom_series, scan_series

        t_hdr, c_hdr, _ = _best(lambda: scan_series(args.dicom), args.repeat)
        t_all, c_all, series = _best(lambda: load_dicom_series(args.dicom), args.repeat)
        t_one, c_one, _ = _best(lambda: load_dicom_series(args.dicom, workers=1), args.repeat)
        vol = series.volume  # type: ignore[union-attr]
        print(
            f"read {args.dicom}: {vol.shape[0]} slices {vol.shape[1]}x{vol.shape[2]} (wall s / CPU s of this process)"
        )
        print(f"  headers only (scan_series):   {t_hdr:6.2f} / {c_hdr:.2f}")
        print(f"  full read, decode processes:  {t_all:6.2f} / {c_all:.2f} (+ the workers' CPU)")
        print(f"  full read, one process:       {t_one:6.2f} / {c_one:.2f}")
    rng = np.random.default_rng(0)
    vol = CTVolume(
        rng.integers(-1024, 2000, size=BENCH_SHAPE).astype(np.int16), affine_from_spacing(BENCH_SPACING)
    )
    print(f"resample {BENCH_SHAPE} int16, spacing {BENCH_SPACING} mm (wall s / CPU s)")
    for sp in (1.0, 3.0):
        for threads in (1, None):
            t, c, out = _best(lambda sp=sp, threads=threads: resample(vol, sp, threads=threads), args.repeat)
            label = "1 thread" if threads == 1 else "all CPUs"
            print(f"  -> {sp:g} mm {out.shape} linear, {label}: {t:.3f} / {c:.3f}")  # type: ignore[union-attr]
        t, c, out = _best(lambda sp=sp: resample(vol, sp, order=0), args.repeat)
        print(f"  -> {sp:g} mm nearest (label maps): {t:.3f} / {c:.3f}")
    if args.scipy:
        from scipy import ndimage

        shape, taff = grid_for_spacing(vol.shape, vol.affine, 1.0)
        m = np.linalg.inv(vol.affine) @ taff

        def with_scipy() -> np.ndarray:
            return ndimage.affine_transform(
                vol.array.astype(np.float32), m[:3, :3], m[:3, 3], shape, order=1, mode="nearest"
            )

        t, c, ref = _best(with_scipy, 1)
        ours = resample_to_grid(vol.array, vol.affine, shape, taff, order=1)
        diff = float(np.abs(ref - ours).max())  # type: ignore[operator]
        print(
            f"  -> 1 mm with scipy.ndimage.affine_transform: {t:.2f} / {c:.2f} (max |difference| {diff:.4f} HU)"
        )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
