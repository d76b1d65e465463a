"""An epoch as a user feels it: whole ``train.py`` processes, beside Keras's own epoch time.

For each preset, ``scripts/train.py`` runs twice as a fresh process, for 1 and for ``--epochs``
epochs (early stopping off, the encoded reviews already cached); the difference of the two
wall times over ``epochs - 1`` is the cost of one more epoch with everything a run does in
it: training, validation, checkpoint writes, history, TensorBoard, the console. Beside it:

* ``in epoch``: the median of the epochs' own times in ``history.json`` (training and
  validation, from the epoch's start to its end), so ``per epoch - in epoch`` is what the
  end of an epoch costs on top (checkpoints, logs);
* ``keras``: the median epoch time of Keras's ``fit`` on the same encoded reviews
  (``benchmarks/speed.py``'s Keras side; needs ``pip install -e '.[keras]'``).

    python benchmarks/whole_runs.py --data aclImdb_v1.tar.gz
    python benchmarks/whole_runs.py --data aclImdb_v1.tar.gz --accelerator gpu --no-keras \\
        --presets lstm lstm-dropout lstm-2layer gru strong --epochs 4

Each pair of runs is made back to back, so that a slower spell of a shared machine falls on
both; ``--repeat`` runs the whole round again and reports the median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

LESSON = ("lstm", "lstm-dropout", "lstm-2layer", "gru")


def train(preset: str, epochs: int, args, logdir: Path) -> tuple[float, list[dict]]:
    """Wall seconds of one ``train.py`` process, and the epochs of its ``history.json``."""
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "--preset", preset,
               "--max-epochs", str(epochs), "--patience", str(epochs + 1),
               "--logdir", str(logdir), "--save", str(logdir / "best.ckpt"),
               "--accelerator", args.accelerator]  # fmt: skip
    if args.data:
        command += ["--data", args.data]
    logdir.mkdir(parents=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    (history,) = logdir.glob("*/version_*/history.json")
    return seconds, json.loads(history.read_text())


def measure(preset: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        one, _ = train(preset, 1, args, Path(tmp) / "one")
        many, history = train(preset, args.epochs, args, Path(tmp) / "many")
    in_epoch = statistics.median(row["seconds"] for row in history[1:])
    return {"one": one, "many": many, "per_epoch": (many - one) / (args.epochs - 1),
            "in_epoch": in_epoch}  # fmt: skip


def keras_epoch(preset: str, args) -> float | None:
    from speed import run_child

    figures = run_child("keras", preset, argparse.Namespace(
        epochs=args.epochs, kernel="fused", data=args.data))  # fmt: skip
    return figures["median_epoch_seconds"] if figures else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="as train.py's --data")
    parser.add_argument("--presets", nargs="+", default=list(LESSON))
    parser.add_argument("--epochs", type=int, default=5, help="the longer run's epochs")
    parser.add_argument("--accelerator", default="cpu", help="as train.py's --accelerator")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians are reported")
    parser.add_argument("--no-keras", action="store_true", help="imdb-torch only")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2")
    keras = not args.no_keras
    if keras:
        try:
            import keras  # noqa: F401
        except ImportError:
            print("keras not installed (pip install -e '.[keras]'): imdb-torch only")
            keras = False
    rounds: dict[str, list[dict]] = {preset: [] for preset in args.presets}
    for round_ in range(args.repeat):
        for preset in args.presets:
            figures = measure(preset, args)
            if keras:
                figures["keras"] = keras_epoch(preset, args)
            rounds[preset].append(figures)
            share = _ratio(figures)
            print(f"round {round_ + 1} {preset}: " + ", ".join(
                f"{key} {value:.2f} s" for key, value in figures.items() if value is not None
            ) + (f", per epoch / Keras {share:.3f}" if share is not None else ""),
                flush=True)  # fmt: skip
    print(f"\n{args.accelerator}, medians of {args.repeat} round(s); per epoch = (run of "
          f"{args.epochs} - run of 1) / {args.epochs - 1}")  # fmt: skip
    print(f"| preset | run of 1 epoch, s | run of {args.epochs}, s | per epoch, s | "
          "in the epoch, s | end of epoch, s | Keras epoch, s | per epoch / Keras | "
          "highest round's ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for preset, runs in rounds.items():
        med = {key: statistics.median(r[key] for r in runs)
               for key in runs[0] if all(r.get(key) is not None for r in runs)}  # fmt: skip
        keras_s = f"{med['keras']:.2f}" if "keras" in med else "-"
        ratio = f"{_ratio(med):.2f}" if "keras" in med else "-"
        # A target judged per sitting needs its margin: the round that came closest.
        ratios = [_ratio(r) for r in runs]
        worst = f"{max(ratios):.3f}" if None not in ratios else "-"
        print(f"| {preset} | {med['one']:.2f} | {med['many']:.2f} | {med['per_epoch']:.2f} | "
              f"{med['in_epoch']:.2f} | {med['per_epoch'] - med['in_epoch']:.2f} | {keras_s} | "
              f"{ratio} | {worst} |")  # fmt: skip
    return 0


def _ratio(figures: dict) -> float | None:
    """One round's epoch as a share of Keras's, if Keras ran."""
    keras = figures.get("keras")
    return figures["per_epoch"] / keras if keras else None


if __name__ == "__main__":
    sys.exit(main())
