#!/usr/bin/env bash
# The CUDA path, end to end, on a machine with a GPU: train and test on the GPU, mixed precision,
# and GPU-vs-CPU agreement of the same checkpoint. Prints figures; run from the project root:
#   bash benchmarks/cuda_check.sh PATH/TO/aclImdb_v1_labeled.tar.gz [OUTDIR]
set -euo pipefail
DATA=$(realpath "$1")
OUT=$(realpath -m "${2:-cuda_check_out}")
ROOT=$(pwd)
mkdir -p "$OUT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export IMDB_TORCH_CACHE="$OUT/cache"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available(), 'cudnn', torch.backends.cudnn.version())"
cd "$OUT"
for preset in gru lstm-2layer; do
  start=$SECONDS
  python3 "$ROOT/scripts/train.py" --preset "$preset" \
    --data "$DATA" --max-epochs 3 --accelerator gpu --devices 1 --no-progress \
    --save "$OUT/$preset.ckpt" > "$OUT/train-$preset.log" 2>&1 || true
  grep -E "GPU available|parameters|best epoch|Error|error" "$OUT/train-$preset.log" || true
  echo "$preset: 3 epochs (data cached after the first run) in $((SECONDS - start)) s wall"
  python3 "$ROOT/scripts/test.py" --ckpt "$OUT/$preset.ckpt" --accelerator gpu --devices 1 \
    2>&1 | grep -E "test_loss|test_acc|error" || true
done
python3 "$ROOT/scripts/train.py" --arch gru --data "$DATA" --max-epochs 1 --accelerator gpu \
  --precision bf16-mixed --no-progress --save "$OUT/bf16.ckpt" --name gru-bf16 2>&1 \
  | grep -E "best epoch|error" || true
python3 - "$OUT/gru.ckpt" "$OUT/lstm-2layer.ckpt" <<'PY'
import sys, time, torch
from imdb_torch.training.checkpoint import read_checkpoint, model_from_checkpoint, datamodule_settings
from imdb_torch.data.datamodule import IMDBDataModule
for path in sys.argv[1:]:
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    dm = IMDBDataModule(**datamodule_settings(ckpt)); dm.setup("test")
    tokens = dm.test_set.tokens
    with torch.no_grad():
        cpu = model(tokens[:2000])
        gpu_model = model.cuda()
        gpu = gpu_model(tokens[:2000].cuda()).cpu()
        torch.cuda.synchronize(); start = time.perf_counter()
        for i in range(0, len(tokens), 4096):
            gpu_model(tokens[i:i + 4096].cuda())
        torch.cuda.synchronize()
    print(f"{path.rsplit('/', 1)[-1]}: max |logit cpu - gpu| = {(cpu - gpu).abs().max():.2e}; "
          f"25,000 test reviews on GPU in {time.perf_counter() - start:.3f} s")
PY
