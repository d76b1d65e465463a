"""Training, evaluation and prediction speed of imdb-torch beside Keras in one run.

For each of the lesson's four experiments, and for each framework, a fresh subprocess (so that
peak memory is its own) prepares the same encoded arrays, trains ``--epochs`` epochs at batch
64 with validation on the 5,000 held-out reviews (no early stopping), and then evaluates the
25,000 test reviews and predicts them in batches. Figures are medians over the epochs after
the first (a warm-up). Keras runs only with the optional extra: ``pip install -e '.[keras]'``.

    python benchmarks/speed.py --data aclImdb_v1.tar.gz --out docs/performance.json

Prints a table and writes every figure to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

EXPERIMENTS = ("lstm", "lstm-dropout", "lstm-2layer", "gru")
TRAIN_REVIEWS = 20_000


def peak_memory_mb() -> float:
    # Linux's VmHWM is this process's own peak; ru_maxrss keeps the parent's across exec.
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else KiB


def torch_figures(experiment: str, data: str | None, epochs: int, kernel: str) -> dict:
    import torch

    from imdb_torch.config import resolve
    from imdb_torch.training.checkpoint import model_from_checkpoint, read_checkpoint
    from imdb_torch.training.trainer import Hardware, evaluate, prepare

    settings = resolve(experiment, {"data": data, "max_epochs": epochs, "patience": epochs})
    fused = kernel == "fused"
    with tempfile.TemporaryDirectory() as tmp:
        run = prepare(
            settings, logdir=Path(tmp), name=experiment, version=0, fused_rnn=fused,
            hardware=Hardware(accelerator="cpu", devices=1), progress=False,
        )  # fmt: skip
        run.datamodule.prepare_data()
        run.fit()
        seconds = [row["seconds"] for row in run.history.epochs]
        model = model_from_checkpoint(read_checkpoint(run.best_checkpoint()), fused_rnn=fused)
        started = time.perf_counter()
        test = evaluate(model, run.datamodule, Hardware(accelerator="cpu"), progress=False)
        evaluate_seconds = time.perf_counter() - started
        tokens = run.datamodule.test_set.tokens
        with torch.inference_mode():
            model(tokens[:1024])  # warm-up
            started = time.perf_counter()
            for batch in tokens.split(1024):
                torch.sigmoid(model(batch))
            predict_seconds = time.perf_counter() - started
    return {
        "epoch_seconds": seconds,
        "test_acc": test["test_acc"],
        "evaluate_seconds": evaluate_seconds,
        "predict_seconds": predict_seconds,
        "threads": torch.get_num_threads(),
        "version": f"torch {torch.__version__}",
    }


def keras_figures(experiment: str, data: str | None, epochs: int, kernel: str) -> dict:
    import keras
    import numpy as np
    from keras_parity import arrays, keras_model, training_data

    arrays_by_split = arrays(data, None)
    keras.utils.set_random_seed(42)
    model = keras_model(experiment)
    seconds: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    model.fit(**training_data(arrays_by_split, 42, "each-epoch"), epochs=epochs, verbose=0,
              validation_data=arrays_by_split["val"], callbacks=[EpochTimer()])  # fmt: skip
    x_test, y_test = arrays_by_split["test"]
    started = time.perf_counter()
    _, test_acc = model.evaluate(x_test, y_test, verbose=0)  # the lesson's call: batch 32
    evaluate_seconds = time.perf_counter() - started
    model.predict(x_test[:1024], batch_size=1024, verbose=0)  # warm-up
    started = time.perf_counter()
    model.predict(x_test, batch_size=1024, verbose=0)
    predict_seconds = time.perf_counter() - started
    return {
        "epoch_seconds": seconds,
        "test_acc": float(test_acc),
        "evaluate_seconds": evaluate_seconds,
        "predict_seconds": predict_seconds,
        "version": f"keras {keras.__version__} ({keras.backend.backend()}), numpy {np.__version__}",
    }


def child(args) -> None:
    """One framework and experiment; prints one JSON line."""
    measure = torch_figures if args.child == "imdb-torch" else keras_figures
    figures = measure(args.experiment, args.data, args.epochs, args.kernel)
    figures["peak_memory_mb"] = peak_memory_mb()
    print("RESULT " + json.dumps(figures), flush=True)


def run_child(framework: str, experiment: str, args) -> dict | None:
    command = [sys.executable, __file__, "--child", framework, "--experiment", experiment,
               "--epochs", str(args.epochs), "--kernel", args.kernel]  # fmt: skip
    if args.data:
        command += ["--data", args.data]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        print(f"  {framework} {experiment} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    figures = json.loads(lines[-1][len("RESULT ") :])
    timed = figures["epoch_seconds"][1:] or figures["epoch_seconds"]
    figures["median_epoch_seconds"] = statistics.median(timed)
    figures["train_samples_per_second"] = TRAIN_REVIEWS / figures["median_epoch_seconds"]
    return figures


def data_figures(data: str | None) -> dict:
    """First preparation from the archive (read, tokenise, encode) and a cached one."""
    from imdb_torch.data.datamodule import IMDBDataModule

    with tempfile.TemporaryDirectory() as cache:
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            datamodule = IMDBDataModule(data=data, cache_dir=cache)
            datamodule.prepare_data()
            datamodule.setup()
            timings.append(time.perf_counter() - started)
    return {"first_seconds": timings[0], "cached_seconds": timings[1]}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        if names:
            cpu = names[0]
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def ratio(ours: float, theirs: float) -> str:
    return f"{theirs / ours:.1f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="as train.py's --data")
    parser.add_argument("--experiments", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS))
    parser.add_argument("--epochs", type=int, default=5, help="per run; the first is a warm-up")
    parser.add_argument("--kernel", choices=("fused", "plain"), default="fused",
                        help="imdb-torch's recurrent path on the CPU")  # fmt: skip
    parser.add_argument("--no-keras", action="store_true", help="imdb-torch only")
    parser.add_argument("--out", default=None, help="write the figures here as JSON")
    parser.add_argument("--child", choices=("imdb-torch", "keras"), help=argparse.SUPPRESS)
    parser.add_argument("--experiment", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    frameworks = ["imdb-torch"]
    if not args.no_keras:
        try:
            import keras  # noqa: F401

            frameworks.append("keras")
        except ImportError:
            print("keras not installed (pip install -e '.[keras]'): imdb-torch only")
    print(f"machine: {machine()}")
    report = {"machine": machine(), "command": " ".join(sys.argv), "kernel": args.kernel,
              "data": data_figures(args.data), "experiments": {}}  # fmt: skip
    print(f"data preparation: first {report['data']['first_seconds']:.2f} s, "
          f"cached {report['data']['cached_seconds']:.2f} s")  # fmt: skip
    for experiment in args.experiments:
        report["experiments"][experiment] = {}
        for framework in frameworks:
            print(f"{experiment}: {framework} ...", flush=True)
            figures = run_child(framework, experiment, args)
            if figures:
                report["experiments"][experiment][framework] = figures
    print(table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def table(report: dict) -> str:
    rows = ["| experiment | figure | imdb-torch | Keras | Keras / imdb-torch |",
            "|---|---|---|---|---|"]  # fmt: skip
    figures = (
        ("median_epoch_seconds", "epoch (train + validation), s", "{:.2f}"),
        ("train_samples_per_second", "training reviews / s", "{:,.0f}"),
        ("evaluate_seconds", "evaluate 25,000 test reviews, s", "{:.2f}"),
        ("predict_seconds", "predict 25,000 reviews (batch 1024), s", "{:.2f}"),
        ("peak_memory_mb", "peak resident memory, MB", "{:,.0f}"),
        ("test_acc", "test accuracy after the epochs", "{:.4f}"),
    )
    for experiment, by_framework in report["experiments"].items():
        ours, keras = by_framework.get("imdb-torch"), by_framework.get("keras")
        for key, label, fmt in figures:
            mine = fmt.format(ours[key]) if ours else "-"
            theirs = fmt.format(keras[key]) if keras else "-"
            speedup = ""
            if ours and keras and key in ("median_epoch_seconds", "evaluate_seconds",
                                          "predict_seconds"):  # fmt: skip
                speedup = ratio(ours[key], keras[key])
            elif ours and keras and key == "train_samples_per_second":
                speedup = ratio(keras[key], ours[key])
            rows.append(f"| {experiment} | {label} | {mine} | {theirs} | {speedup} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
