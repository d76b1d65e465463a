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
from ..reporting.report import run_file, write_report, write_run
from ..training.checkpoint import read_checkpoint
from ..training.trainer import evaluate, prepare
from .common import (
    hardware_from_flags,
    quiet_lightning,
    run,
)
from .parsers import build_reproduce_parser

PROG = "reproduce.py"


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


def _main(argv: Sequence[str] | None) -> int:
    args = build_reproduce_parser().parse_args(argv)
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
