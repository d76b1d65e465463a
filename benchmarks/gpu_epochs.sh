#!/usr/bin/env bash
# Epoch times on one GPU for every preset, as whole train.py processes (about 5 minutes):
#   bash benchmarks/gpu_epochs.sh PATH/TO/aclImdb_v1.tar.gz
# Targets: each lesson preset's epoch (training and validation) at most 0.3 s, the strong
# preset's at most 3 s ("in the epoch" column); the 2-core CPU figures are in
# docs/performance.md.
set -euo pipefail
DATA=$(realpath "$1")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export IMDB_TORCH_CACHE="${IMDB_TORCH_CACHE:-$(mktemp -d)}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cudnn', torch.backends.cudnn.version())"
# The first run reads and caches the reviews, so that no timed run does.
python3 "$ROOT/scripts/train.py" --data "$DATA" --max-epochs 1 --accelerator gpu \
  --logdir "$(mktemp -d)" --save "$(mktemp -d)/warm.ckpt" > /dev/null
python3 "$ROOT/benchmarks/whole_runs.py" --data "$DATA" --accelerator gpu --no-keras \
  --presets lstm lstm-dropout lstm-2layer gru --epochs 4
python3 "$ROOT/benchmarks/whole_runs.py" --data "$DATA" --accelerator gpu --no-keras \
  --presets strong --epochs 3
