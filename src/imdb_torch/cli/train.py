"""Train an LSTM or GRU sentiment classifier on IMDB, as in the Keras lesson.

The lesson's steps, from ``_main`` on: the data read, split and padded (``_prepared_data``);
in ``_train``, the model and a Trainer with the lesson's callbacks (``training/trainer.py``'s
``prepare``) and ``session.fit``, Keras's ``model.fit``; then ``_finish``: the best epoch's
checkpoint copied to ``best.ckpt``, and the loss plot. The rest makes a run safe to interrupt
and resume (which run ``--resume`` continues, and how: ``resume.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shlex
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import (
    MIN_NUM_WORDS,
    Settings,
    experiment_name,
)
from ..data.datamodule import IMDBDataModule
from ..data.text import INDEX_FROM
from ..errors import UserError
from ..fileio import (
    abandoned,
    atomic_path,
    nearest_existing,
    remove_stale_temporaries,
    run_lock,
)
from ..model.keras_compat import keras_parameter_count
from ..reporting.plots import plot_losses
from ..reporting.runs import TEST_FILE, Run, test_result_in, version_number
from ..training.checkpoint import (
    check_same_reviews,
    check_vocabulary,
    epochs_to_resume_from,
    read_checkpoint,
)
from ..training.module import SentimentClassifier
from ..training.trainer import Session, check_precision, prepare
from .common import (
    STARTED_BY,
    HearSecondInterrupt,
    SigtermAsCtrlC,
    check_directory_to_be,
    check_writable,
    hardware_from_flags,
    interrupted_status,
    local_rank,
    output_has_no_room,
    quiet_lightning,
    run,
    second_signal_ends_it,
    shown,
    started_by_train_py,
)
from .flags import given_settings
from .parsers import DEFAULT_LOGDIR, DEFAULT_SAVE, build_train_parser, command_for, program_name
from .resume import Resumption, resumption

PROG = program_name("train")


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


def _main(argv: Sequence[str] | None) -> int:
    _end_with_the_process_that_started_this()
    try:
        return _run(argv)
    finally:  # only for the ranks this run starts: not for whatever this process runs next
        if not local_rank():
            os.environ.pop(STARTED_BY, None)


def _run(argv: Sequence[str] | None) -> int:
    # Everything is checked before any work: flags, paths, then the data, and only then is a
    # run directory made, so a mistake leaves nothing behind.
    args = build_train_parser().parse_args(argv)
    given = given_settings(args)
    hardware = hardware_from_flags(args)
    quiet_lightning()
    plan = _resumed_run(args, given) if args.resume else _new_run(args, given)
    if plan is None:
        return 0  # --resume of a run that had finished: nothing to train
    check_precision(plan.settings, hardware)
    datamodule = _prepared_data(plan.settings)  # load_data, train_test_split, pad_sequences
    if plan.resumed:  # --data may move; the reviews it holds may not change
        check_vocabulary(plan.resumed.checkpoint, datamodule.words, "resume")
        check_same_reviews(plan.resumed.checkpoint, datamodule.training_reviews,
                           moved="data" in given)  # fmt: skip
    _check_free_space(plan.settings, plan.save_path, plan.logdir)
    version = (version_number(plan.resumed.run_dir) if plan.resumed
               else _claim_version(plan.logdir / plan.name))  # fmt: skip
    return _train(args, plan, version, datamodule, hardware)


@dataclass(frozen=True)
class _Plan:
    """What to train and where: a new run, or the one ``--resume`` continues (``resumed``)."""

    settings: Settings
    name: str  # the experiment: runs go to logdir/name/version_N
    logdir: Path
    save_path: Path  # where the best model is copied at the end (--save)
    resumed: Resumption | None = None


def _new_run(args, given: dict) -> _Plan:
    settings = args.settings  # resolved and checked as the flags were parsed
    if _main_process():  # the other processes of a multi-process run say nothing
        _warn_of_flags_without_effect(given, settings)
    name = _checked_name(args.name or experiment_name(settings.model))
    logdir = _checked_logdir(args.logdir)
    save_path = _checked_save_path(args.save if args.save is not None else DEFAULT_SAVE)
    _check_save_apart(save_path, logdir, name)
    return _Plan(settings, name, logdir, save_path)


def _resumed_run(args, given: dict) -> _Plan | None:
    """The run ``--resume`` names, checked (cli/resume.py); ``None`` if it had finished."""
    resumed = resumption(args, given)
    run_dir = resumed.run_dir
    # Where the run was started to copy its best model, unless --save names another place.
    save_path = _checked_save_path(args.save if args.save is not None else resumed.recorded_save())
    name, logdir = run_dir.parent.name, run_dir.parent.parent
    _check_save_apart(save_path, logdir, name)
    if resumed.finished:
        print(f"{run_dir} has finished ({resumed.finished}); nothing to resume")
        resumed.complete(save_path, replace=args.save is not None)
        return None
    return _Plan(resumed.settings, name, logdir, save_path, resumed)


def _train(args, plan: _Plan, version: int | None, datamodule, hardware) -> int:
    """Keras's ``model.fit`` and what follows it, made safe to interrupt: an interrupted run
    says how to resume it, and a new run that saved nothing leaves no directory."""
    run_dir = plan.logdir / plan.name / f"version_{version}"
    new_run = plan.resumed is None and _main_process()
    session = None  # read by the lambda when a second Ctrl-C comes
    try:
        with _held(run_dir), second_signal_ends_it(lambda: _end_other_ranks(session)):
            if plan.resumed and _main_process():  # said once the run is this process's
                print(f"resuming {run_dir} from epoch {plan.resumed.epochs}; best model to "
                      f"{shown(plan.save_path)}")  # fmt: skip
            session = prepare(
                plan.settings, logdir=plan.logdir, name=plan.name, version=version,
                hardware=hardware, progress=not args.no_progress, fused_rnn=not args.plain_rnn,
                cuda_graphs=not args.plain_rnn, datamodule=datamodule, save_path=plan.save_path,
            )  # fmt: skip
            session.trainer.callbacks += [HearSecondInterrupt(), SigtermAsCtrlC()]
            if session.trainer.is_global_zero:
                print(_data_line(datamodule))
                print(f"experiment {plan.name}: {_parameter_line(session.model)}")
            try:
                resume_from = plan.resumed.checkpoint_path if plan.resumed else None
                session.fit(resume_from=resume_from)  # history = model.fit(...)
            except SystemExit:
                # Lightning ends a Ctrl-C'd fit with SystemExit after its graceful shutdown.
                if not session.trainer.interrupted:
                    raise
                if session.trainer.is_global_zero:  # the run's directory is the first process's
                    _forget_ended_ranks(session)
                    last = run_dir / "checkpoints" / "last.ckpt"
                    _explain_interrupt(last, session.checkpoint.best_model_path,
                                       plan.save_path, _hardware_argv(args))  # fmt: skip
                    _drop_if_unsaved(run_dir, new_run)
                return interrupted_status(session.trainer)
            if not session.trainer.is_global_zero:
                return 0
            return _finish(session, plan.save_path, plan.name)
    except BaseException as exc:
        # Whatever ended it (an interrupt, an error), a new run with no checkpoint yet leaves
        # no directory: it would be an empty row in TensorBoard and compare.py.
        if session is None or session.trainer.is_global_zero:
            _drop_if_unsaved(run_dir, new_run)
        if isinstance(exc, OSError):
            _raise_if_disk_full(exc, run_dir)
        raise


def _warn_of_flags_without_effect(given: dict, settings: Settings) -> None:
    """A flag whose setting nothing reads, said so rather than silently taken."""
    unused = []
    if not settings.model.ngrams:
        unused += [(name, "without --ngrams") for name in ("ngram_lr", "ngram_buckets")]
    if settings.optim.optimizer != "rmsprop":
        unused.append(("dense_embedding_updates", f"with {settings.optim.optimizer}"))
    for name, why in unused:
        if name in given:
            flag = "--" + name.replace("_", "-")
            warnings.warn(f"{flag} has no effect {why}", stacklevel=2)


def _check_save_apart(save_path: Path, logdir: Path, name: str) -> None:
    """--save is a file of its own: not the log directory (or a folder above it), nor
    in the experiment's folder, where the runs write."""
    save, logs = save_path.resolve(), logdir.resolve()
    if save == logs or save in logs.parents or save.is_relative_to(logs / name):
        raise UserError(f"--save {save_path}: that is where the logs go (--logdir {logdir}); "
                        "give the best model a file name of its own, e.g. best.ckpt")  # fmt: skip


def _end_with_the_process_that_started_this() -> None:
    """In a rank that train.py started (through Lightning's launcher), ask the kernel (Linux)
    to end this process when the one that started it ends, however that ends. That process,
    killed outright or interrupted while Lightning was starting the others, cannot end them
    itself; they would wait to meet it for ever, in C++ code that no signal but SIGKILL
    reaches. (Not in a process that torchrun, srun or a shell started: their own launchers
    end their ranks, and a shell that exits must not take a node's training with it.)"""
    if not local_rank():
        # Where Lightning's launcher runs, on each machine: the ranks it starts inherit this.
        os.environ[STARTED_BY] = str(os.getpid())
        return
    if not started_by_train_py() or not sys.platform.startswith("linux"):
        return
    # The kernel follows the thread that started this process: Lightning's launcher starts
    # the ranks from the main thread, which lives as long as the process.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(os.environ[STARTED_BY]):  # it had ended before the request
        os._exit(1)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _ranks_started(session: Session | None) -> list:
    """The other processes of a multi-process run that this process started: the list
    Lightning's launcher keeps (empty where it started none)."""
    launcher = session.trainer.strategy.launcher if session is not None else None
    procs = getattr(launcher, "procs", None)
    return procs if isinstance(procs, list) else []


def _forget_ended_ranks(session: Session) -> None:
    """After an interrupt Lightning has killed the other ranks; its launcher's observer, which
    watches the same list, would take their status for a failure and SIGKILL this process
    before it has said how to resume. The list emptied, the observer has nothing to judge."""
    _ranks_started(session).clear()


def _end_other_ranks(session: Session | None) -> None:
    """Kill the other processes of a multi-process run that this process started."""
    for process in _ranks_started(session):
        process.kill()


def _checked_save_path(text: str) -> Path:
    save_path = Path(text).expanduser()
    if save_path.parent.exists() and not save_path.parent.is_dir():
        raise UserError(
            f"cannot save to {save_path}: {save_path.parent} is a file, not a directory"
        )
    if not save_path.parent.is_dir():
        raise UserError(f"cannot save to {save_path}: directory {save_path.parent} does not exist")
    if save_path.is_dir():
        raise UserError(f"cannot save to {save_path}: it is a directory")
    if save_path.exists() and not save_path.is_file():
        raise UserError(f"cannot save to {save_path}: it is not a regular file")
    if save_path.exists() and not _is_checkpoint_file(save_path):
        # An earlier best.ckpt is replaced, as Keras replaces its .h5; anything else is kept.
        raise UserError(f"cannot save to {save_path}: it exists and is not a checkpoint")
    check_writable(save_path.parent, f"cannot save to {save_path}")
    return save_path


def _is_checkpoint_file(path: Path) -> bool:
    """Whether ``path`` holds a checkpoint of this program's, as test.py would read it."""
    try:
        read_checkpoint(path)
        return True
    except UserError:
        return False


def _checked_logdir(text: str) -> Path:
    if not text.strip():
        raise UserError(f"--logdir {text!r}: give a directory (default {DEFAULT_LOGDIR})")
    logdir = Path(text).expanduser().resolve()
    check_directory_to_be(logdir, f"--logdir {text}")
    return logdir


def _checked_name(name: str) -> str:
    plain = name not in (".", "..") and name.isprintable() and not set(name) & set("/\\")
    if not name or not plain:
        raise UserError(f"--name {name!r}: give a plain name (no slashes), e.g. my-gru")
    if version_number(Path(name)) >= 0:  # compare.py would take the log directory for a run's
        raise UserError(f"--name {name}: version_N names the runs' own folders; give another")
    return name


def _prepared_data(settings: Settings) -> IMDBDataModule:
    """The data read (or taken from the cache) and split, so that a bad --data or a split
    without training reviews is found before a run directory is made."""
    datamodule = IMDBDataModule.from_settings(settings)
    datamodule.prepare_data()
    datamodule.setup("fit")
    # The indices a review can hold: the words' and the reserved ones, 0 to INDEX_FROM.
    used = max(len(datamodule.words) + INDEX_FROM + 1, MIN_NUM_WORDS)
    if used < settings.model.num_words and _main_process():
        warnings.warn(
            f"--num-words {settings.model.num_words}: the training reviews hold "
            f"{len(datamodule.words):,} distinct words: indices from {used:,} on never occur, "
            f"and their embedding rows are never used (--num-words {used:,} covers every word)",
            stacklevel=2,
        )
    return datamodule


def _check_free_space(settings: Settings, save_path: Path, logdir: Path) -> None:
    """Room for the checkpoints (weights and optimiser state) where they will go: a full disk
    is better found before training than after it."""
    parameters = keras_parameter_count(settings.model)  # nn.LSTM's second bias adds under a percent
    # Each weight in float32 with two optimiser moments; the n-gram model's ratios beside its.
    ratios = settings.model.ngram_buckets if settings.model.ngrams else 0
    needed = 4 * (3 * parameters + ratios) + 2**20
    for place in (save_path.parent, logdir):
        existing = nearest_existing(place)
        free = shutil.disk_usage(existing).free
        if free < 3 * needed:  # best, last, and the copy at --save
            raise UserError(
                f"only {free:,} bytes are free at {existing}; the checkpoints need about "
                f"{3 * needed:,}"
            )


def _raise_if_disk_full(exc: OSError, run_dir: Path) -> None:
    # Standard output without room is the output's problem, not the run's (common.run).
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and not output_has_no_room():
        # A file in the system's temporary folder is a writer's staging copy, which tells the
        # user nothing: the run's directory does.
        where = exc.filename
        if not where or Path(where).resolve().is_relative_to(Path(tempfile.gettempdir()).resolve()):
            where = f"while saving in {run_dir}"
        if (run_dir / "checkpoints" / "last.ckpt").is_file():
            then = "the files written before are intact: free some space and continue with --resume"
        else:
            then = "no epoch was saved: free some space and start the run again"
        raise UserError(f"the disk is full ({where}); {then}") from exc


def _main_process() -> bool:
    """Whether this is the run's first process: not another rank that Lightning's launcher,
    torchrun or SLURM's srun started (each says which rank it started in its own variables)."""
    ranks = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")
    return not any(int(os.environ.get(name) or 0) for name in ranks)


@contextlib.contextmanager
def _held(run_dir: Path):
    """This process holds the run directory alone (see fileio.run_lock) and clears what a
    killed run left half-written. Only the main process of a multi-process run locks."""
    if not _main_process():
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        # test.py may be writing test.json beside the checkpoints, without the lock.
        remove_stale_temporaries(run_dir, older_than=60)
        if (run_dir / "checkpoints").is_dir():
            remove_stale_temporaries(run_dir / "checkpoints")
        yield


def _drop_if_unsaved(run_dir: Path, new_run: bool) -> None:
    """A new run that ends before any checkpoint was written leaves no directory: it would
    be an empty row in TensorBoard and compare.py. Judged by the files, which the processes
    of a multi-process run write, not by this process's callback."""
    checkpoints = run_dir / "checkpoints"
    if new_run and not (checkpoints.is_dir() and any(checkpoints.glob("*.ckpt"))):
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the experiment's folder, if this run was its first
            run_dir.parent.rmdir()


HARDWARE_FLAGS = ("accelerator", "devices", "strategy", "num_nodes", "precision")


def _hardware_argv(args) -> list[str]:
    """The hardware flags given, as they were typed: a resumed run needs them again (they
    are the machine's, not the run's settings), or it would go on in another number of
    processes, on batches cut otherwise."""
    defaults = build_train_parser()
    argv = []
    for name in HARDWARE_FLAGS:
        value = getattr(args, name)
        if value != defaults.get_default(name):
            argv += ["--" + name.replace("_", "-"), str(value)]
    return argv


def _explain_interrupt(last: Path, best: str, save_path: Path, hardware: list[str]) -> None:
    if not last.is_file():
        print("\ninterrupted before any epoch was saved: nothing to resume", file=sys.stderr)
        return
    # Counted from the file: an interrupt can fall after an epoch's line is printed and
    # before its checkpoint is written, and that epoch is then run again on resuming.
    try:
        saved = epochs_to_resume_from(read_checkpoint(last))
        what = f"{saved} epoch{'s' if saved != 1 else ''}"
    except UserError:
        what = "the finished epochs"
    print(f"\ninterrupted: {what} saved in {shown(last)}", file=sys.stderr)
    if best:  # ModelCheckpoint's, which test.py and predict.py take as it is
        print(f"best model so far: {shown(Path(best))} ({shown(save_path)} is written when the "
              "run ends)", file=sys.stderr)  # fmt: skip
    again = shlex.join(["--resume", str(shown(last)), *hardware])
    print(f"resume with: {command_for('train')} {again}", file=sys.stderr)


def _claim_version(experiment_dir: Path) -> int | None:
    """Create the next free ``version_N`` directory, so runs started together never share one.

    ``mkdir`` fails if the directory exists, which makes claiming a number atomic. Only the
    main process claims; the others of a multi-process run get the logger's default.
    """
    if not _main_process():
        return None
    experiment_dir.mkdir(parents=True, exist_ok=True)
    for run_dir in experiment_dir.glob("version_*"):
        # A run killed outright before its first checkpoint (Lightning's launcher SIGKILLs
        # the first process when another ends early) leaves its lock alone: an empty row in
        # TensorBoard and compare.py.
        if abandoned(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
    taken = [version_number(run) for run in experiment_dir.glob("version_*")]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (experiment_dir / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


def _data_line(datamodule: IMDBDataModule) -> str:
    """What the lesson prints as its arrays' shapes: the reviews in each part of the data."""
    hp = datamodule.hparams
    return (
        f"reviews: {len(datamodule.train_set):,} for training, {len(datamodule.val_set):,} for "
        f"validation, {len(datamodule.test_set):,} for test.py "
        f"(num_words {hp.num_words}, maxlen {hp.maxlen})"
    )


def _parameter_line(model: SentimentClassifier) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    line = f"{trainable:,} trainable parameters (the same model in Keras: "
    line += f"{model.keras_parameter_count():,})"
    if frozen:
        line += f", plus nn.LSTM's {frozen:,} recurrent biases held at 0 (Keras has one bias)"
    return line


def _finish(session: Session, save_path: Path, name: str) -> int:
    # ModelCheckpoint(save_best_only=True) and EarlyStopping(restore_best_weights=True): the
    # model kept is the best epoch's, not the last's.
    best_path = session.best_checkpoint()
    with atomic_path(save_path) as tmp:
        shutil.copyfile(best_path, tmp)
    history = session.history
    # plt.plot(history.history['loss']), ...: the logger's directory (trainer.log_dir is a
    # collective, and the other ranks are done).
    log_dir = Path(session.trainer.logger.log_dir)
    plot = plot_losses(history.epochs, log_dir / "loss.png", title=name)
    row = history.best()
    if row is not None:
        print(
            f"best epoch {row['epoch']} of {len(history.epochs)}: "
            f"val_loss {row['val_loss']:.4f}, val_acc {row.get('val_acc', float('nan')):.4f}"
        )
    print(f"best model:  {shown(save_path)}  (also {shown(best_path)})")
    print(f"loss plot:   {shown(plot)}")
    test = f"{command_for('test')} --ckpt {shlex.quote(str(shown(save_path)))}"
    print(f"test it:     {test}  (the lesson's model.evaluate on the test reviews)")
    # After --resume, test.py may have measured an earlier epoch than the best.
    tested = Run(name, history.epochs, test_result_in(log_dir)).tested_epoch()
    if tested is not None:
        print(f"             (the run's {TEST_FILE} is of epoch {tested}'s model, not the best)")
    logdir = shlex.quote(str(shown(Path(session.trainer.logger.save_dir))))  # ready to paste
    print(f"TensorBoard: tensorboard --logdir {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
