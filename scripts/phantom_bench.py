"""Time the phantom generator on a 512 x 512 x 300 case (CPU time of one process, and wall time).

    .venv/bin/python scripts/phantom_bench.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

from osteoscan.phantom import generate_case, sample_subject


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    s = sample_subject(args.seed, "cap", scanner_slice_thickness_mm=1.5, scanner_slice_spacing_mm=1.5,
                       scanner_pixel_spacing_mm=0.8)
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        case = generate_case(args.seed, "cap", shape=(300, 512, 512), subject=s)
        print(f"{case.volume.summary()}: cpu {time.process_time() - c0:.2f} s, wall {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
