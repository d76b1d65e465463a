"""Resuming a run (``train.py --resume``): which checkpoint, with which settings, whether
anything is left to train, and where the run copies its best model.

A resumed run continues its run directory (``LOGDIR/NAME/version_N``): the same epoch
counter, optimiser state, early-stopping count, checkpoints and history. Model and data
settings come from the checkpoint; flags may change only what ``CHANGEABLE_ON_RESUME``
allows.
"""

from __future__ import annotations

import filecmp
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings, experiment_name, resolve
from ..errors import UserError
from ..fileio import atomic_path
from ..reporting.plots import plot_losses
from ..reporting.runs import (
    callback_states,
    checked_history,
    history_in,
    read_json,
    run_dir_of,
    version_number,
)
from ..training.callbacks import HISTORY_FILE, PROCESSES_KEY, SAVE_PATH_KEY
from ..training.checkpoint import (
    checkpoint_file,
    epochs_to_resume_from,
    read_checkpoint,
    settings_from_checkpoint,
)
from .common import CHANGEABLE_ON_RESUME, shown
from .parsers import DEFAULT_LOGDIR, DEFAULT_SAVE


@dataclass
class Resumption:
    """A run to resume, checked: ``train.py --resume`` trains on from ``checkpoint_path``."""

    checkpoint_path: Path
    run_dir: Path
    checkpoint: dict
    settings: Settings
    epochs: int  # finished already
    finished: str  # why nothing is left to train, or ""

    def recorded_save(self) -> str:
        """Where the run was started to copy its best model (its --save)."""
        recorded = _recorded_save(self.checkpoint)
        # A run moved or copied since (a project moved, or copied) must not write its best
        # model where the original's goes, nor where another project's now lies.
        started_in = run_dir_of(self.checkpoint)
        if (
            started_in is not None
            and started_in.resolve() != self.run_dir.resolve()
            and recorded != DEFAULT_SAVE  # the default of checkpoints that record none
        ):
            raise UserError(
                f"this run was moved or copied from {started_in}, whose best model went to "
                f"{recorded}; resume with --save PATH to say where this one's goes"
            )
        return recorded

    def complete(self, save_path: Path, replace: bool) -> None:
        """What a finished run may lack, made: the loss plot, and its best model at
        ``save_path`` (over another file only where ``replace``: --save given again)."""
        _draw_missing_plot(self.run_dir, self.checkpoint)
        _copy_missing_best(self.run_dir, self.checkpoint, save_path, replace)


def resumption(args, given: dict) -> Resumption:
    """The run ``args.resume`` names, its checkpoint read and checked against ``given``
    (the flags given on the command line)."""
    path, run_dir = _resume_target(args, given)
    checkpoint = read_checkpoint(path)
    epochs = epochs_to_resume_from(checkpoint)
    _check_not_behind_last(path, epochs, run_dir)
    if PROCESSES_KEY not in checkpoint:  # written by imdb-torch 0.3 or before
        _warn_if_trained_further(run_dir, epochs)
    settings = _resumed_settings(checkpoint, given)
    finished = _finished(checkpoint, epochs, settings)
    return Resumption(path, run_dir, checkpoint, settings, epochs, finished)


def _warn_if_trained_further(run_dir: Path, epochs: int) -> None:
    """A run of imdb-torch 0.3 or before saved last.ckpt only in epochs that improved the
    validation loss: its history may hold epochs that no checkpoint does, trained again now
    (the same seed's generators make them the same epochs on the CPU). One epoch more is a
    run killed while saving it, as can happen to any run."""
    try:
        recorded = len(checked_history(read_json(run_dir / HISTORY_FILE), run_dir))
    except (UserError, OSError):
        return  # no history to compare with: nothing to say
    if recorded > epochs + 1:
        warnings.warn(
            f"{run_dir}: history.json holds {recorded} epochs, its last checkpoint {epochs} "
            f"(imdb-torch 0.3 saved last.ckpt only in epochs that improved): epochs "
            f"{epochs + 1} to {recorded} are trained again",
            stacklevel=2,
        )


def _draw_missing_plot(run_dir: Path, checkpoint: dict) -> None:
    """A run interrupted after its last epoch but before its end has no loss.png: drawn now,
    from the history its last checkpoint holds."""
    plot = run_dir / "loss.png"
    rows = history_in(checkpoint, str(run_dir))
    if plot.exists() or not rows:
        return
    plot_losses(rows, plot, title=run_dir.parent.name)
    print(f"loss plot:   {shown(plot)}")


def _copy_missing_best(run_dir: Path, checkpoint: dict, save_path: Path, replace: bool) -> None:
    """A run stopped after its last checkpoint but before copying its best model to --save:
    copied now (over an existing file only where --save was given again)."""
    best = _best_checkpoint(run_dir, checkpoint)
    if best is None or (save_path.exists() and filecmp.cmp(best, save_path, shallow=False)):
        return
    if save_path.exists() and not replace:
        print(f"best model:  {shown(best)}  ({shown(save_path)} holds another; "
              f"--save {shown(save_path)} copies it there)")  # fmt: skip
        return
    read_checkpoint(best)  # only a checkpoint is copied: the record names it, not a person
    with atomic_path(save_path) as tmp:
        shutil.copyfile(best, tmp)
    print(f"best model:  {shown(save_path)}  (also {shown(best)})")


def _best_checkpoint(run_dir: Path, checkpoint: dict) -> Path | None:
    """The run's best checkpoint, as its ModelCheckpoint recorded it, in the run's own folder
    (the run directory may have moved since)."""
    for state in callback_states(checkpoint, "Checkpoint"):
        recorded = state.get("best_model_path")
        # The one that monitors val_loss: the other keeps last.ckpt, its "best" the newest.
        if state.get("monitor") is not None and isinstance(recorded, str) and recorded:
            best = run_dir / "checkpoints" / Path(recorded).name
            return best if best.is_file() else None
    return None


def _recorded_save(checkpoint: dict) -> str:
    """The --save a resumed run was started with (``DEFAULT_SAVE`` for a checkpoint that does
    not record one). A checkpoint may come from someone else: what it records is used only
    where it names a .ckpt file in a folder that exists, else --save must say."""
    recorded = checkpoint.get(SAVE_PATH_KEY)
    if recorded is None:
        return DEFAULT_SAVE
    if not isinstance(recorded, str) or not recorded.endswith(".ckpt"):
        raise UserError("the checkpoint records no usable --save for its best model; "
                        "resume with --save PATH")  # fmt: skip
    if not Path(recorded).parent.is_dir():
        raise UserError(f"the run was started with --save {recorded}, whose folder no longer "
                        "exists; resume with --save PATH")  # fmt: skip
    return recorded


def _check_not_behind_last(resume_path: Path, epochs: int, run_dir: Path) -> None:
    """Resuming a checkpoint older than the run's last.ckpt would train the epochs between
    them again and write over the run's later checkpoints."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file() or last.resolve() == resume_path.resolve():
        return
    try:
        saved = epochs_to_resume_from(read_checkpoint(last))
    except UserError:
        return  # a damaged last.ckpt: the one given is all there is
    if saved > epochs:
        raise UserError(
            f"{resume_path.name} holds {epochs} epoch{'s' if epochs != 1 else ''}, the run's "
            f"last.ckpt {saved}: resuming it would train epochs {epochs + 1} to {saved} again "
            f"over the run's files; resume {last} (to branch off, copy the run directory, "
            "delete the copy's checkpoints/last.ckpt and give the copy its own --save)"
        )


def _check_run_pickers(args, run_dir: Path) -> None:
    """--preset, --name and --logdir pick the run a bare --resume continues. Beside a checkpoint
    the run is the checkpoint's, and a flag that names another would be silently ignored."""
    if args.preset:
        raise UserError(
            f"--preset {args.preset}: a resumed run keeps the settings of its checkpoint; "
            "resume without --preset"
        )
    if args.name is not None and args.name != run_dir.parent.name:
        raise UserError(
            f"--name {args.name}: the checkpoint belongs to {run_dir}, which a resumed run "
            "continues; resume without --name"
        )
    logdir_given = args.logdir != DEFAULT_LOGDIR
    if logdir_given and Path(args.logdir).expanduser().resolve() != run_dir.parent.parent:
        raise UserError(
            f"--logdir {args.logdir}: the checkpoint belongs to {run_dir}, which a resumed run "
            "continues; resume without --logdir"
        )


def _finished(checkpoint: dict, epochs: int, settings: Settings) -> str:
    """Why a run that has finished ``epochs`` epochs is over, or "" if it is not."""
    limit = settings.run.max_epochs
    if epochs > limit:
        return f"{epochs} epochs, more than --max-epochs {limit}; a larger --max-epochs goes on"
    if epochs == limit:
        return f"{epochs} of at most {limit} epochs; --max-epochs raises it"
    for state in callback_states(checkpoint, "EarlyStopping"):
        waited, patience = state.get("wait_count", 0), state.get("patience", 0)
        if isinstance(waited, int) and isinstance(patience, int) and 0 < patience <= waited:
            return f"early stopping after epoch {epochs}"
    return ""


def _resumed_settings(checkpoint: dict, given: dict) -> Settings:
    """The checkpoint's settings; flags given may change only ``CHANGEABLE_ON_RESUME``."""
    trained = settings_from_checkpoint(checkpoint)
    trained_values = trained.flat()
    for key, value in given.items():
        if key not in CHANGEABLE_ON_RESUME and value != trained_values[key]:
            raise UserError(
                f"--{key.replace('_', '-')} {value} does not fit the checkpoint being resumed "
                f"(trained with {key}={trained_values[key]}); resume without it"
            )
    changes = {key: value for key, value in given.items() if key in CHANGEABLE_ON_RESUME}
    return Settings.from_flat(changes, base=trained).check()


def _resume_target(args, given: dict) -> tuple[Path, Path]:
    """The checkpoint to resume and its run directory (``LOGDIR/NAME/version_N``)."""
    if args.resume != "latest":
        path = checkpoint_file(Path(args.resume).expanduser())
        run_dir = path.resolve().parent.parent
        if version_number(run_dir) < 0:
            raise UserError(
                f"{path} is not inside a run directory (LOGDIR/NAME/version_N/checkpoints)"
            )
        _check_run_pickers(args, run_dir)
        return path.resolve(), run_dir
    # --preset and the model flags only pick which experiment's newest run is continued.
    base = Path(args.logdir) / (args.name or experiment_name(resolve(args.preset, given).model))
    runs = sorted(
        (run for run in base.glob("version_*") if (run / "checkpoints" / "last.ckpt").is_file()),
        key=version_number,
    )
    if not runs:
        raise UserError(f"nothing to resume in {base}: no version_N/checkpoints/last.ckpt")
    # Absolute, as the run was started: the checkpoint's own record of where it writes must
    # read the same, or Lightning starts a second last.ckpt beside the first.
    run_dir = runs[-1].resolve()
    return run_dir / "checkpoints" / "last.ckpt", run_dir
