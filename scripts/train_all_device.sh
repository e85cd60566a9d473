#!/usr/bin/env bash
# Train the four cascade models concurrently on one GPU machine (16 CPU cores for phantom synthesis).
#
#   MINUTES=7.5 RUN_DIR=runs/device [INIT=src/osteoscan/weights] scripts/train_all_device.sh
#
# Each model trains in its own process for MINUTES of wall clock (data are rendered on the fly by
# DataLoader workers: the CPU, not the GPU, is the bottleneck), then exports ONNX + .pt + .json into
# RUN_DIR. With INIT set, training resumes from INIT/<model>.pt (fine-tuning with a fresh schedule).
set -euo pipefail
MINUTES=${MINUTES:-7.5}
RUN_DIR=${RUN_DIR:-runs/device}
SEED=${SEED:-0}
export PYTHONPATH=src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$RUN_DIR"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
# model, DataLoader workers, learning rate (JOBS overrides: "name workers lr;name workers lr;...")
JOBS=${JOBS:-"spine_coarse 5 2e-3;vertebra_fine 3 1e-3;bmd_regressor 4 1e-3;tissue_2d 4 2e-3"}
IFS=';' read -r -a jobs <<< "$JOBS"
for job in "${jobs[@]}"; do
  set -- $job
  init=()
  if [ -n "${INIT:-}" ] && [ -f "$INIT/$1.pt" ]; then init=(--init-from "$INIT/$1.pt"); fi
  python3 -m osteoscan.train.cli "$1" --device cuda --minutes "$MINUTES" --steps 1000000 --workers "$2" \
    --lr "$3" --seed "$SEED" --val-cases 2 --out "$RUN_DIR" "${init[@]}" > "$RUN_DIR/$1.stdout" 2>&1 &
done
wait
tail -n 3 "$RUN_DIR"/*.stdout
