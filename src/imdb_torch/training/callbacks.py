"""Callbacks Lightning lacks: Keras's history; random state and run settings kept on resume;
a stop on a non-finite loss; a ModelCheckpoint that follows a moved run."""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from ..config import RunConfig
from ..errors import UserError
from ..fileio import atomic_path

HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")
HISTORY_FILE = "history.json"
RUN_SETTINGS_KEY = "run_settings"
SAVE_PATH_KEY = "save_path"  # train.py's --save, where the run's best model is copied
PROCESSES_KEY = "processes"  # how many processes the run trained in (its world size)


class EpochHistory(L.Callback):
    """Keras's ``History``: one row of epoch metrics per finished epoch.

    Rows are also written to ``history.json`` in the run directory after every epoch, so an
    interrupted run keeps its curves. The state travels in checkpoints: list this callback
    before ``ModelCheckpoint`` saves at the end of the training epoch, and a resumed run
    continues the same history.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._started = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        # Wall time of the epoch, validation included, as Keras reports an epoch's time.
        row = {"epoch": trainer.current_epoch + 1,
               "seconds": round(time.perf_counter() - self._started, 3)}  # fmt: skip
        row.update({key: float(metrics[key]) for key in HISTORY_KEYS if key in metrics})
        self.epochs.append(row)
        # The logger's directory, not trainer.log_dir: that one is a collective in a
        # multi-process run (rank zero alone would wait in it for good), and without a logger
        # it is the working directory.
        logger = trainer.logger
        if trainer.is_global_zero and logger is not None and logger.log_dir:
            self.write(Path(logger.log_dir) / HISTORY_FILE)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.epochs, indent=1))

    def best(self) -> dict[str, float] | None:
        return best_epoch(self.epochs)

    def state_dict(self) -> dict:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epochs = list(state_dict.get("epochs", []))


def best_epoch(rows: list[dict[str, float]]) -> dict[str, float] | None:
    """The history's row of the epoch ``ModelCheckpoint`` keeps: the lowest validation loss,
    the first of equals (``None`` before any validation). A loss that is not a finite number
    (a history edited by hand: training stops before it records one) is never the best."""
    rows = [row for row in rows if math.isfinite(row.get("val_loss", math.nan))]
    return min(rows, key=lambda row: row["val_loss"]) if rows else None


class RandomState(L.Callback):
    """Carries the global random generators through checkpoints.

    Shuffling and dropout draw from them; Lightning does not save them, so without this a
    resumed run would draw different batches and masks than an uninterrupted one.
    """

    def state_dict(self) -> dict:
        version, python_state, gauss = random.getstate()
        state = {"torch": torch.get_rng_state(), "python": list(python_state),
                 "python_version": version, "python_gauss": gauss}  # fmt: skip
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["torch"])
        python_state = tuple(state_dict["python"])
        random.setstate((state_dict["python_version"], python_state, state_dict["python_gauss"]))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class RunSettings(L.Callback):
    """Writes the run's ``RunConfig`` (epoch limit, patience, seed) into its checkpoints, and
    where train.py copies its best model (``--save``), if given.

    The model's and the data's settings travel as the modules' hyperparameters; these belong
    to the Trainer, which saves the epoch reached but not its limit. A run resumed from a
    checkpoint alone then stops where the original would have, and leaves its best model
    where the original would have.
    """

    def __init__(self, run: RunConfig, save_path: Path | None = None):
        self.run, self.save_path = run, save_path

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[RUN_SETTINGS_KEY] = asdict(self.run)
        checkpoint[PROCESSES_KEY] = trainer.world_size
        if self.save_path is not None:
            # Absolute, as the run was started; a symbolic link stays one (atomic_path
            # replaces the link, as it did at the first run's end).
            checkpoint[SAVE_PATH_KEY] = os.path.abspath(self.save_path)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        # Each process takes its share of every global batch: in another number of processes
        # the batches, and so the run, are other than the uninterrupted one's.
        trained_in = checkpoint.get(PROCESSES_KEY)
        if isinstance(trained_in, int) and trained_in != trainer.world_size:
            rank_zero_warn(
                f"the run trained in {trained_in} process{'es' if trained_in != 1 else ''} and "
                f"goes on in {trainer.world_size}: its batches are cut otherwise from now on "
                "(resume with the --devices, --strategy and --num-nodes it was started with "
                "to go on as it would have)"
            )


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: the run stops, and nothing of that epoch is saved."""


class StopOnNonFiniteLoss(L.Callback):
    """Stops a run whose epoch loss is no longer a finite number.

    Lightning calls it before its checkpoint callbacks, so the best and last checkpoints stay
    those of the last finite epoch; the error names the epoch and the best checkpoint kept.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The epoch's metrics are the same on every process (torchmetrics syncs them), so
        # every process stops alike.
        for key in ("train_loss", "val_loss"):
            value = trainer.callback_metrics.get(key)
            if value is not None and not math.isfinite(float(value)):
                checkpoint = trainer.checkpoint_callback
                best = checkpoint.best_model_path if checkpoint else ""
                kept = f"the best checkpoint so far is kept: {best}" if best else "nothing saved"
                # --grad-clip clips the network alone: the n-gram model has its own rate.
                ngrams = getattr(pl_module, "ngrams", None) is not None
                remedy = "--lr, --ngram-lr or --grad-clip" if ngrams else "--lr or --grad-clip"
                raise TrainingDiverged(
                    f"{key} became {float(value)} in epoch {trainer.current_epoch + 1}, so "
                    f"training stopped (a smaller {remedy} may help); {kept}"
                )


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose saved paths follow the run directory.

    A checkpoint records where its run wrote (``dirpath``, the best and last files). A run
    resumed after its directory was moved, or from another working directory, would otherwise
    find the record stale: Lightning then forgets the best so far and writes ``last-v1.ckpt``
    beside ``last.ckpt``. The record is moved to where the run is now.
    """

    def format_checkpoint_name(self, metrics, filename=None, ver=None, prefix=None) -> str:
        # Epochs counted from 1 in file names, as on the console and in history.json.
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, filename, ver, prefix)

    @property
    def state_key(self) -> str:
        # Lightning files callback state under the class's name: kept as ModelCheckpoint's,
        # so checkpoints written with Lightning's own class resume alike.
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:  # Lightning compares the strings as they are
            state_dict = _moved(state_dict, old, new)
        super().load_state_dict(state_dict)


def _moved(state: dict, old: str, new: str) -> dict:
    def move(path):
        if isinstance(path, str) and path and os.path.dirname(path) == old:
            return os.path.join(new, os.path.basename(path))
        return path

    moved = {key: move(value) for key, value in state.items()}
    moved["dirpath"] = new
    moved["best_k_models"] = {
        move(path): score for path, score in state.get("best_k_models", {}).items()
    }
    return moved
