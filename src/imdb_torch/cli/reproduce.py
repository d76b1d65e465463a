"""Run the chapter's four experiments for several seeds and report them."""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from ..config import resolve
from ..reporting.report import EXPERIMENTS, run_file, write_report, write_run
from ..training.checkpoint import read_checkpoint
from ..training.trainer import evaluate, prepare
from .common import (
    ArgumentParser,
    add_hardware_flags,
    hardware_from_flags,
    positive_int,
    quiet_lightning,
    run,
)

PROG = "reproduce.py"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description=(
            "Train the lesson's experiments (lstm, lstm-dropout, lstm-2layer, gru) with their "
            "exact settings, once per seed, evaluate each best checkpoint on the test set, and "
            "write OUT/runs/*.json, OUT/summary.md (mean ± std over seeds), OUT/curves.png and "
            "OUT/test_accuracy.png. Finished runs are kept: run it again after an interruption "
            "and it does the rest, resuming a run cut off mid-way from its last epoch."
        ),
    )
    parser.add_argument("--data", default=None, help="data source, as for train.py")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[42], help="one run per seed (default 42)"
    )
    parser.add_argument("--experiments", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS),
                        help="which of the lesson's experiments (default: all four)")  # fmt: skip
    parser.add_argument(
        "--max-epochs", type=positive_int, default=100, help="at most (default 100)"
    )
    parser.add_argument(
        "--patience", type=positive_int, default=3, help="early stopping (default 3)"
    )
    parser.add_argument(
        "--out", default="results/chapter", help="results directory (default results/chapter)"
    )
    parser.add_argument("--cache-dir", default=None, help="as for train.py")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_hardware_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    quiet_lightning()
    out = Path(args.out).resolve()
    jobs = [(e, s) for e in args.experiments for s in args.seeds]
    for number, (experiment, seed) in enumerate(jobs, start=1):
        target = run_file(out, "imdb-torch", experiment, seed)
        if target.is_file():
            print(f"[{number}/{len(jobs)}] {experiment} seed {seed}: done before, kept")
            continue
        print(f"[{number}/{len(jobs)}] {experiment} seed {seed}: training")
        record = _run_one(args, out, experiment, seed)
        write_run(target, record)
        print(
            f"[{number}/{len(jobs)}] {experiment} seed {seed}: best epoch {record['best_epoch']} "
            f"of {record['epochs_run']}, val_loss {record['best_val_loss']:.4f}, "
            f"val_acc {record['best_val_acc']:.4f}, test_acc {record['test_acc']:.4f}"
        )
    summary = write_report(out)
    print(summary.read_text())
    print(f"results: {out}")
    return 0


def _run_one(args, out: Path, experiment: str, seed: int) -> dict:
    given = {"data": args.data, "cache_dir": args.cache_dir, "seed": seed,
             "max_epochs": args.max_epochs, "patience": args.patience}  # fmt: skip
    settings = resolve(experiment, given)
    hardware = hardware_from_flags(args)
    logdir = out / "lightning_logs"
    session = prepare(
        settings, logdir=logdir, name=experiment, version=seed, hardware=hardware,
        progress=not args.no_progress, fused_rnn=not args.plain_rnn,
    )  # fmt: skip
    last = logdir / experiment / f"version_{seed}" / "checkpoints" / "last.ckpt"
    started = time.perf_counter()
    if last.is_file():
        read_checkpoint(last)  # a damaged or foreign file is a one-line error, not a traceback
    session.fit(resume_from=last if last.is_file() else None)
    wall = time.perf_counter() - started
    session.restore_best()
    test = evaluate(session.model, session.datamodule, hardware, progress=False)
    history = session.history.epochs
    best = session.history.best()
    return {
        "framework": "imdb-torch",
        "experiment": experiment,
        "seed": seed,
        "settings": settings.flat(),
        "parameters": sum(p.numel() for p in session.model.parameters()),
        "keras_parameters": session.model.keras_parameter_count(),
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "best_val_loss": best["val_loss"],
        "best_val_acc": best["val_acc"],
        "test_loss": test["test_loss"],
        "test_acc": test["test_acc"],
        "wall_seconds": round(wall, 2),
        "median_epoch_seconds": statistics.median(row["seconds"] for row in history),
        "history": history,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}",
        "versions": {"torch": torch.__version__, "lightning": L.__version__},
    }


if __name__ == "__main__":
    sys.exit(main())
