#!/usr/bin/env bash
# Issue #9 CPU throughput: 20 abdomen phantoms as JPEG-LS DICOM, `osteoscan run` in a loop vs
# `osteoscan batch --workers 1|2`, then every result.json compared (timings aside). Run from anywhere;
# works in /tmp/cpub. Figures: docs/BENCHMARKS.md "Batch throughput".
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p /tmp/cpub
cd /tmp/cpub
OS=$REPO/.venv/bin/osteoscan
PY=$REPO/.venv/bin/python
if [ ! -d cases/case_20 ]; then
$PY - <<'P'
from osteoscan.phantom import generate_case
from osteoscan.io import write_dicom_series
for seed in range(1, 21):
    case = generate_case(seed, "abdomen", spacing_mm=(3.0, 1.2, 1.2))
    write_dicom_series(case.volume, f"cases/case_{seed:02d}", compression="jpegls")
P
fi
rm -rf loop batch_w1 batch_w2
t0=$(date +%s.%N); for d in cases/case_*; do $OS -q run "$d" -o loop/$(basename "$d") --outputs json >/dev/null 2>&1; done; t1=$(date +%s.%N)
echo "loop wall $(echo "$t1 - $t0" | bc)"
t0=$(date +%s.%N); $OS -q batch cases -o batch_w1 --outputs json --workers 1 2>&1 | tail -2; t1=$(date +%s.%N)
echo "batch w1 wall $(echo "$t1 - $t0" | bc)"
t0=$(date +%s.%N); $OS -q batch cases -o batch_w2 --outputs json --workers 2 2>&1 | tail -2; t1=$(date +%s.%N)
echo "batch w2 wall $(echo "$t1 - $t0" | bc)"
$PY - <<'P'
import json
from pathlib import Path
same = 0
for d in sorted(Path("loop").iterdir()):
    a = json.loads((d / "result.json").read_text()); a.pop("timings_s", None)
    ok = True
    for b in ("batch_w1", "batch_w2"):
        f = next(Path(b).rglob(f"{d.name}/result.json"), None)
        if f is None: ok = False; continue
        r = json.loads(f.read_text()); r.pop("timings_s", None)
        ok &= (r == a)
    same += ok
print("identical results in loop / w1 / w2:", same, "of", len(list(Path("loop").iterdir())))
P
