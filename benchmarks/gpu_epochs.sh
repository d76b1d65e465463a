#!/usr/bin/env bash
# Epoch times on one GPU for every preset, with CUDA graphs (the default) and without them
# (--plain-rnn), side by side, as whole train.py processes (about 5 minutes):
#   bash benchmarks/gpu_epochs.sh PATH/TO/aclImdb_v1.tar.gz
# Printed per run: the median epoch (training and validation, from history.json, the first
# epoch left out) and every epoch's validation loss, which the two ways must share where no
# dropout draws random numbers (lstm, gru). Targets: each lesson preset's epoch at most 0.3 s,
# the strong preset's at most 3 s; the 2-core CPU figures are in docs/performance.md.
set -euo pipefail
DATA=$(realpath "$1")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export IMDB_TORCH_CACHE="${IMDB_TORCH_CACHE:-$(mktemp -d)}"
WORK=$(mktemp -d)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cudnn', torch.backends.cudnn.version())"
# The first run reads and caches the reviews, so that no timed run does.
python3 "$ROOT/scripts/train.py" --data "$DATA" --max-epochs 1 --accelerator gpu \
  --logdir "$WORK/warm" --save "$WORK/warm.ckpt" 2>&1 | grep -i "warn\|error" || true
for preset in lstm lstm-dropout lstm-2layer gru strong; do
  epochs=4
  [ "$preset" = strong ] && epochs=3
  for way in graphs plain; do
    flags=()
    [ "$way" = plain ] && flags=(--plain-rnn)
    logdir="$WORK/$preset-$way"
    mkdir -p "$logdir"
    python3 "$ROOT/scripts/train.py" --preset "$preset" --data "$DATA" --accelerator gpu \
      --max-epochs "$epochs" --patience $((epochs + 1)) --logdir "$logdir" \
      --save "$logdir/best.ckpt" "${flags[@]}" > "$logdir.log" 2>&1 || { tail -5 "$logdir.log"; continue; }
    grep -h "CUDA graphs" "$logdir.log" || true
    python3 - "$preset" "$way" "$logdir" <<'PY'
import json, statistics, sys
from pathlib import Path
preset, way, logdir = sys.argv[1:]
(history,) = Path(logdir).glob("*/version_*/history.json")
epochs = json.loads(history.read_text())
seconds = [row["seconds"] for row in epochs]
losses = ", ".join(f"{row['val_loss']:.5f}" for row in epochs)
times = ", ".join(f"{s:.3f}" for s in seconds)
print(f"{preset:12s} {way:6s} median epoch {statistics.median(seconds[1:]):.3f} s "
      f"(epochs {times}); val_loss {losses}")
PY
  done
done
