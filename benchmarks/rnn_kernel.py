"""One recurrent layer, forward and backward: nn.LSTM / nn.GRU's own CPU code against the fused
kernel (imdb_torch.model.fused_rnn), at several sizes. Where the kernel is the slower, the model
runs the modules themselves (``fused_rnn.MAX_FUSED_GATES``):

    python benchmarks/rnn_kernel.py

Bidirectional layers, batch 64, inputs as wide as the layer (16 for 8 units, the lesson's
embedding); milliseconds per batch, the median of several.
"""

import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from imdb_torch.model.fused_rnn import load_kernel, run_fused_feature_major  # noqa: E402

SIZES = [(8, 100), (16, 100), (32, 100), (64, 100), (64, 400)]  # (units, time steps)


def milliseconds(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    load_kernel()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| layer | units | steps | nn module, ms | fused kernel, ms | module / kernel |")
    print("|---|---|---|---|---|---|")
    for module in (nn.LSTM, nn.GRU):
        for hidden, steps in SIZES:
            inputs = 16 if hidden == 8 else hidden
            rnn = module(inputs, hidden, batch_first=True, bidirectional=True)
            x = torch.randn(64, steps, inputs, requires_grad=True)
            sequence = x.detach().permute(2, 1, 0).requires_grad_()

            def plain(rnn=rnn, x=x):
                rnn(x)[0].sum().backward()

            def fused(rnn=rnn, sequence=sequence):
                run_fused_feature_major(rnn, sequence)[0].sum().backward()

            repeats = 15 if steps <= 100 else 5
            ours, theirs = milliseconds(fused, repeats), milliseconds(plain, repeats)
            print(f"| {module.__name__} | {hidden} | {steps} | {theirs:.1f} | {ours:.1f} "
                  f"| {theirs / ours:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
