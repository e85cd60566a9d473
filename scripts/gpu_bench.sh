#!/usr/bin/env bash
# GPU measurements for docs/BENCHMARKS.md, run on a CUDA machine whose python3 has torch but not
# osteoscan's DICOM/NIfTI/report dependencies: they travel as wheels in .whl/ (git-ignored), made on
# a machine with a registry, for that machine's Python (3.12 there):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 -d .whl \
#     highdicom nibabel pydicom pyjpegls pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle \
#     pypdf reportlab trimesh
#
#   scripts/gpu_bench.sh setup      install the wheels, print the machine, smoke-test one case on cuda
#   scripts/gpu_bench.sh models     per-model table (torch cuda fp32/fp16/bf16)
#   scripts/gpu_bench.sh cohort     generate the 120-case benchmark cohort (all cores)
#   scripts/gpu_bench.sh start CMD  run a long phase (long = e2e_json, batch, e2e_all) detached, log in $WORK
#   scripts/gpu_bench.sh wait S     wait up to S seconds for the detached phases, then show the logs
#   scripts/gpu_bench.sh collect    copy logs and tables to $OUT
set -uo pipefail
WORK=${WORK:-/root/gpu}
mkdir -p "$WORK"
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
OSTEO="python3 -m osteoscan.cli"
JOBS=$(( $(nproc) - 2 ))

# batch_runs OUTFILE CONFIG...: one `osteoscan batch` over the first 40 cohort cases per worker CONFIG
batch_runs() {
  local outfile=$1 cfg out; shift
  head -41 "$WORK/manifest.csv" > "$WORK/manifest40.csv"
  for cfg in "$@"; do
    out="$WORK/batch_$(echo $cfg | tr -d ' -')"
    rm -rf "$out"
    echo "== osteoscan batch manifest40.csv $cfg --gpus 0 --outputs json"
    $OSTEO batch "$WORK/manifest40.csv" -o "$out" $cfg --gpus 0 --outputs json 2>&1 | grep -v " INFO " | tail -3
  done > "$outfile"
}
CASES=${CASES:-120}  # cohort cases generated and benchmarked

case "${1:-}" in
setup)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  nvidia-smi -L; nproc; free -g | head -2
  python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0)); print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"
  $OSTEO bench --cases 2 --jobs 2 --backend torch --device cuda --outputs json,html,pdf,nifti,seg,sr,sc,mesh 2>&1 | tail -22
  ;;
models)
  $OSTEO bench --models --device cuda --backends torch --precisions fp32,fp16,bf16 --repeats 20 2>&1 | grep -v " INFO " | tee "$WORK/models.txt"
  ;;
cohort)
  time python3 - "$WORK" "$JOBS" "$CASES" <<'EOF'
import csv, logging, sys
from osteoscan.pipeline.cohorts import ensure_cohort
logging.basicConfig(level=logging.INFO, filename=f"{sys.argv[1]}/cohort.log")
cases = ensure_cohort("benchmark", jobs=int(sys.argv[2]), limit=int(sys.argv[3]))
with open(f"{sys.argv[1]}/manifest.csv", "w", newline="") as fh:
    w = csv.writer(fh)
    w.writerow(["input", "study_id"])
    for c in cases:
        w.writerow([str(c.dicom_dir), c.case_id])
print(f"cohort ready: {len(cases)} cases")
EOF
  ;;
start)
  shift
  setsid nohup bash "$0" "$@" >"$WORK/$1.log" 2>&1 < /dev/null &
  echo "started $1"
  ;;
e2e_json)  # pure pipeline, json only: the models and the CPU stages around them
  $OSTEO bench --cases "$CASES" --backend torch --device cuda --outputs json 2>&1 | grep -v " INFO " > "$WORK/e2e_json.txt"
  ;;
e2e_all)  # every output, as the CPU table
  $OSTEO bench --cases "$CASES" --backend torch --device cuda 2>&1 | grep -v " INFO " > "$WORK/e2e_all.txt"
  ;;
batch)  # throughput with 1, 2 and 4 GPU workers (json outputs, first 40 cases)
  batch_runs "$WORK/batch.txt" "--per-gpu 1 --workers 0" "--per-gpu 2 --workers 0" "--per-gpu 4 --workers 0"
  ;;
long)
  bash "$0" e2e_json; bash "$0" batch; bash "$0" e2e_all
  ;;
long2)  # second lease: per-model table with cudnn.benchmark, every output on $CASES cases, GPU + CPU pool
  bash "$0" models; bash "$0" e2e_all
  batch_runs "$WORK/batch2.txt" "--per-gpu 4 --workers 0" "--per-gpu 4 --workers 2"
  ;;
wait)
  end=$(( $(date +%s) + ${2:-500} ))
  while pgrep -f "gpu_bench.sh (long|long2|e2e_|batch)" >/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 10; done
  for f in "$WORK"/*.txt "$WORK"/*.log; do echo "== $f"; tail -25 "$f"; done
  ;;
collect)
  cp "$WORK"/*.txt "$WORK"/*.log "${OUT:-/tmp}" 2>/dev/null; ls "${OUT:-/tmp}"
  ;;
*)
  sed -n 2,12p "$0"; exit 2
  ;;
esac
