"""Where an epoch's time goes: Lightning's ``SimpleProfiler`` over a run of ``train.py``'s Trainer.

The run is built by ``training.prepare`` as ``train.py`` builds it (callbacks, checkpoints,
TensorBoard, the console), trained for ``--epochs`` epochs, and the profiler's totals are
grouped and divided by the number of epochs:

    python benchmarks/epoch_breakdown.py --data aclImdb_v1.tar.gz --preset lstm
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import imdb_torch.cli  # noqa: E402, F401  (TensorBoard without TensorFlow, as the programs)
from imdb_torch.config import resolve  # noqa: E402
from imdb_torch.training.trainer import Hardware, prepare  # noqa: E402

# Profiler actions, grouped; an action counts in the first group whose test it passes.
INSIDE = (  # within Lightning's run_training_epoch: the training loop and validation
    ("forward (training_step)", lambda a: a.endswith("SingleDeviceStrategy.training_step")),
    ("backward", lambda a: a.endswith("SingleDeviceStrategy.backward")),
    ("validation steps", lambda a: a.endswith("validation_step")),
    ("fetching batches", lambda a: "dataloader_next" in a or "batch_to_device" in a),
)
AFTER = (  # the end-of-epoch hooks, after the loop
    ("checkpoint writes", lambda a: "ModelCheckpoint" in a and "epoch_end" in a),
    (
        "history, TensorBoard, console, early stopping",
        lambda a: (
            a.startswith("[Callback]")
            and a.endswith("on_train_epoch_end")
            and "ModelCheckpoint" not in a
        ),
    ),
)


def per_epoch(groups, totals: dict[str, float], epochs: int) -> dict[str, float]:
    grouped = dict.fromkeys((name for name, _ in groups), 0.0)
    for action, seconds in totals.items():
        for name, belongs in groups:
            if belongs(action):
                grouped[name] += seconds / epochs
                break
    return grouped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="as train.py's --data")
    parser.add_argument("--preset", default="lstm")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    from lightning.pytorch.profilers import SimpleProfiler  # after imdb_torch.cli, see above

    settings = resolve(args.preset, {"data": args.data, "max_epochs": args.epochs,
                                     "patience": args.epochs + 1})  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        run = prepare(settings, logdir=Path(tmp), name=args.preset, version=0,
                      hardware=Hardware(accelerator="cpu", devices=1), progress=False)  # fmt: skip
        run.datamodule.prepare_data()
        # Its own report goes to a file in the temporary directory; the grouped one is printed.
        profiler = run.trainer.profiler = SimpleProfiler(dirpath=tmp, filename="profile")
        started = time.perf_counter()
        run.fit()
        fit_seconds = time.perf_counter() - started
    totals = {action: sum(durations) for action, durations in profiler.recorded_durations.items()}
    epochs = len(run.history.epochs)
    epoch = totals["run_training_epoch"] / epochs
    inside = per_epoch(INSIDE, totals, epochs)
    step = totals["[LightningModule]SentimentClassifier.optimizer_step"] / epochs
    inside["optimiser step"] = step - inside["forward (training_step)"] - inside["backward"]
    inside["the rest: Lightning's loop, metrics, per-step hooks"] = epoch - sum(inside.values())
    after = per_epoch(AFTER, totals, epochs)
    print(f"{args.preset}: {epochs} epochs, fit {fit_seconds:.2f} s "
          f"({fit_seconds / epochs:.3f} s per epoch, start-up included)")  # fmt: skip
    print("| part | s per epoch | share of the epoch loop |\n|---|---|---|")
    for name, seconds in inside.items():
        print(f"| {name} | {seconds:.3f} | {seconds / epoch:.0%} |")
    print(f"| **the epoch loop (training and validation)** | {epoch:.3f} | 100% |")
    for name, seconds in after.items():
        print(f"| after the loop: {name} | {seconds:.3f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
