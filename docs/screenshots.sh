#!/usr/bin/env bash
# Regenerates docs/images/tensorboard-*.png: a real TensorBoard, opened in headless Chromium,
# on two short lesson runs (GRU and LSTM, 8 epochs each) that this script trains first.
#
#   bash docs/screenshots.sh aclImdb_v1.tar.gz
#
# Needs chromium (Debian: apt-get install chromium) and the project installed.
set -euo pipefail
DATA=${1:?usage: bash docs/screenshots.sh aclImdb_v1.tar.gz}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'kill $BOARD 2>/dev/null || true; rm -rf "$WORK"' EXIT
for ARCH in gru lstm; do
  python "$ROOT/scripts/train.py" --arch "$ARCH" --data "$DATA" --max-epochs 8 --optimizer adam \
    --logdir "$WORK/lightning_logs" --save "$WORK/$ARCH.ckpt" --no-progress >/dev/null
  python "$ROOT/scripts/test.py" --ckpt "$WORK/$ARCH.ckpt" >/dev/null
done
tensorboard --logdir "$WORK/lightning_logs" --host 127.0.0.1 --port 6123 >"$WORK/board.log" 2>&1 &
BOARD=$!
for _ in $(seq 60); do curl -sf http://127.0.0.1:6123 >/dev/null && break; sleep 0.5; done
for PAGE in custom_scalars scalars hparams; do
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,760 \
    --virtual-time-budget=20000 --screenshot="$ROOT/docs/images/tensorboard-$PAGE.png" \
    "http://127.0.0.1:6123/#$PAGE" 2>/dev/null
done
echo "wrote $ROOT/docs/images/tensorboard-{custom_scalars,scalars,hparams}.png"
