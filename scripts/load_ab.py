"""A/B of the DICOM reader's raw-pixel path on cached benchmark cases (interleaved, medians).

    python scripts/load_ab.py [N_CASES] [REPEATS]
"""

from __future__ import annotations

import statistics
import sys
import time

from osteoscan.io import dicom
from osteoscan.pipeline import stages
from osteoscan.pipeline.cohorts import ensure_cohort


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    cases = ensure_cohort("benchmark", limit=n)
    fast = dicom._raw_pixels
    times: dict[str, list[float]] = {"raw-pixel path": [], "pydicom only": []}
    for rep in range(repeats):
        for case in cases:
            order = list(times) if rep % 2 else list(reversed(times))
            for mode in order:
                dicom._raw_pixels = fast if mode == "raw-pixel path" else (lambda path, ds: None)
                t0 = time.perf_counter()
                stages.load_study(case.dicom_dir, None)
                times[mode].append(time.perf_counter() - t0)
    for mode, values in times.items():
        print(f"{mode}: median {statistics.median(values):.3f} s per series over {len(cases)} cases x {repeats}")


if __name__ == "__main__":
    main()
