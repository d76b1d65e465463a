"""Run the chapter's four experiments for several seeds and report them."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch

from ..config import Settings, resolve
from ..data.corpus import resolve_source
from ..data.datamodule import IMDBDataModule
from ..errors import UserError
from ..fileio import run_lock
from ..reporting.report import run_file, write_report, write_run
from ..reporting.runs import read_json, write_test_result
from ..training.checkpoint import (
    check_vocabulary,
    epochs_to_resume_from,
    read_checkpoint,
    settings_from_checkpoint,
)
from ..training.trainer import Hardware, evaluate, prepare
from .common import (
    CHANGEABLE_ON_RESUME,
    check_directory_to_be,
    hardware_from_flags,
    interrupted_status,
    quiet_lightning,
    run,
)
from .parsers import build_reproduce_parser, program_name

PROG = program_name("reproduce")


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


def _main(argv: Sequence[str] | None) -> int:
    args = build_reproduce_parser().parse_args(argv)
    quiet_lightning()
    hardware = _one_process(hardware_from_flags(args))
    out = _checked_out(args.out)
    # Every job checked before the first is trained: a bad seed, or a finished run of other
    # settings in --out, is found at once, not hours later.
    jobs = [(experiment, seed, _settings(args, experiment, seed),
             run_file(out, "imdb-torch", experiment, seed))
            for experiment in args.experiments for seed in args.seeds]  # fmt: skip
    for _, _, settings, target in jobs:
        if target.is_file():
            _check_kept(target, settings)
    to_train = [settings for _, _, settings, target in jobs if not target.is_file()]
    if to_train:  # a bad --data is said before any job is announced
        data = IMDBDataModule.from_settings(to_train[0])  # reads nothing yet
        resolve_source(data.hparams.data, data.cache_dir)
    for number, (experiment, seed, settings, target) in enumerate(jobs, start=1):
        if target.is_file():
            print(f"[{number}/{len(jobs)}] {experiment} seed {seed}: done before, kept")
            continue
        print(f"[{number}/{len(jobs)}] {experiment} seed {seed}: training")
        record = _run_one(args, hardware, out, experiment, seed, settings)
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


def _checked_out(text: str) -> Path:
    """``--out``, if results can be written there. It is made only when the first run starts,
    so that a mistake found before (a bad --data, say) leaves no empty folder behind."""
    if not text.strip():  # not the working directory, whose files the results would replace
        raise UserError("--out '': give a directory for the results, e.g. results/chapter")
    out = Path(text).expanduser().resolve()
    check_directory_to_be(out, f"--out {out}")
    return out


def _settings(args, experiment: str, seed: int) -> Settings:
    given = {"data": _absolute(args.data), "cache_dir": args.cache_dir, "seed": seed,
             "max_epochs": args.max_epochs, "patience": args.patience}  # fmt: skip
    try:
        return resolve(experiment, given)
    except UserError as exc:  # the settings speak of --seed; this program's flag is --seeds
        raise UserError(str(exc).replace("--seed ", "--seeds ", 1)) from None


def _absolute(data: str | None) -> str | None:
    """A data path as the records keep it: one file however it was spelled, or from
    wherever the command runs (``keras``, ``tfds`` and None name sources, not files)."""
    if not data or not Path(data).expanduser().exists():  # "": refused with the settings
        return data
    return str(Path(data).expanduser().resolve())


# Settings that change how fast a run goes, not what it computes.
SPEED_ONLY = ("cache_dir", "eval_batch_size", "num_workers")
DEFAULTS = Settings().flat()


def _check_kept(record_path: Path, settings: Settings) -> None:
    """A finished run is kept only if it was made with the settings asked for now: a summary
    must not average runs of other data or other limits."""
    record = read_json(record_path)
    kept = record.get("settings") if isinstance(record, dict) else None
    if not isinstance(kept, dict):
        raise UserError(f"{record_path} is not a run record; delete it to run that job again")
    # A setting added since the record was written had its default then, which is what
    # that version did; a relative data path is taken from here, as records once kept it.
    kept = {**DEFAULTS, **kept, "data": _absolute(kept.get("data"))}
    wanted = json.loads(json.dumps(settings.flat()))  # as the record holds them
    _refuse_other_settings(kept, wanted, SPEED_ONLY, str(record_path))


def _refuse_other_settings(had: dict, wanted: dict, free: tuple[str, ...], what: str) -> None:
    differ = [key for key in wanted if key not in free and had.get(key) != wanted[key]]
    if differ:
        was = ", ".join(f"{key}={had.get(key)}" for key in differ)
        now = ", ".join(f"{key}={wanted[key]}" for key in differ)
        raise UserError(
            f"{what} was made with {was}, not {now}; give another --out, or delete it to run "
            "that job again"
        )


def _one_process(hardware: Hardware) -> Hardware:
    """The runs are trained one after another in this process, which several processes
    would each start again from the top: one device, also where ``auto`` would take every
    GPU of the machine."""
    devices = hardware.devices
    if (isinstance(devices, int) and devices > 1) or (
        isinstance(devices, list) and len(devices) > 1
    ):
        raise UserError(f"--devices {devices}: reproduce.py trains on one device; train.py "
                        "trains a run on several (--devices 2 --strategy ddp)")  # fmt: skip
    if hardware.num_nodes > 1:
        raise UserError(f"--num-nodes {hardware.num_nodes}: reproduce.py trains on one machine")
    return replace(hardware, devices=1 if devices == "auto" else devices)


def _run_one(args, hardware: Hardware, out: Path, experiment: str, seed: int,
             settings: Settings) -> dict:  # fmt: skip
    logdir = out / "lightning_logs"
    run_dir = logdir / experiment / f"version_{seed}"
    last = run_dir / "checkpoints" / "last.ckpt"
    datamodule = IMDBDataModule.from_settings(settings)
    datamodule.prepare_data()  # a bad --data is found before a run directory is made
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):  # another reproduce.py on the same --out is refused, not mixed in
        resume = last.is_file()  # an interrupted run, continued if it is this job's
        trained_before = 0
        if resume:
            trained_before = _check_resumable(read_checkpoint(last), settings, datamodule, last)
        session = prepare(
            settings, logdir=logdir, name=experiment, version=seed, hardware=hardware,
            progress=not args.no_progress, fused_rnn=not args.plain_rnn,
            cuda_graphs=not args.plain_rnn, datamodule=datamodule,
        )  # fmt: skip
        started = time.perf_counter()
        try:
            session.fit(resume_from=last if resume else None)
        except SystemExit:
            # Lightning ends a Ctrl-C'd fit with SystemExit after its graceful shutdown.
            if not session.trainer.interrupted:
                raise
            print("\ninterrupted: run the same command again to continue from the last "
                  "finished epoch", file=sys.stderr)  # fmt: skip
            raise SystemExit(interrupted_status(session.trainer)) from None
        wall = time.perf_counter() - started
    best_path = session.restore_best()
    test = evaluate(session.model, session.datamodule, hardware, progress=False)
    history = session.history.epochs
    best = session.history.best()
    # As test.py leaves it, so that compare.py and TensorBoard show the run's test result.
    write_test_result(run_dir, test, len(session.datamodule.test_set), best_path,
                      session.datamodule.source_record(), best["epoch"])  # fmt: skip
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
        "wall_seconds": round(wall, 2),  # of this command's part, after the epochs below
        "resumed_after_epochs": trained_before,
        "median_epoch_seconds": statistics.median(row["seconds"] for row in history),
        "history": history,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}",
        "versions": {"torch": torch.__version__, "lightning": L.__version__},
    }


def _check_resumable(
    checkpoint: dict, settings: Settings, datamodule: IMDBDataModule, last: Path
) -> int:
    """An interrupted run is continued only with its own settings and data, and only as far
    as it has not gone already. Returns the epochs it has trained."""
    epochs = epochs_to_resume_from(checkpoint)
    trained = settings_from_checkpoint(checkpoint).flat()
    _refuse_other_settings(trained, settings.flat(), CHANGEABLE_ON_RESUME, str(last))
    if epochs > settings.run.max_epochs:
        raise UserError(
            f"{last} has trained {epochs} epochs, more than --max-epochs "
            f"{settings.run.max_epochs}; give at least that many, or another --out"
        )
    datamodule.setup("fit")  # its data prepared by the caller; fit's own setup() then keeps it
    check_vocabulary(checkpoint, datamodule.words, "resume")
    return epochs


if __name__ == "__main__":
    sys.exit(main())
