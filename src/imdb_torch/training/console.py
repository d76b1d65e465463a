"""What a person sees while a run trains: epochs counted from 1, as Keras and the history do.

On a terminal, Lightning's progress bar ("Epoch 3/100"), each finished epoch's left on
screen with its figures, as Keras's ``verbose=1`` leaves a line per epoch; elsewhere (a file,
a pipe, ``--no-progress``) one line per epoch, the shape of Keras's ``verbose=2``.
"""

from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class EpochProgressBar(TQDMProgressBar):
    """Lightning's bar, with the epoch numbered from 1 and the limit beside it, and without
    the run's version number (``v_num``), which its directory's name already says."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(
            f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        )


class EpochLines(L.Callback):
    """One line per finished epoch: ``Epoch 3/100 - 1.2s - loss: 0.6912 - acc: ...``.

    Reads the row ``EpochHistory`` has just recorded, so list it after that callback.
    """

    def __init__(self, history) -> None:
        self.history = history

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.history.epochs:
            return
        row = self.history.epochs[-1]
        parts = [f"Epoch {row['epoch']}/{trainer.max_epochs}", f"{row['seconds']:.1f}s"]
        for key, label in (("train_loss", "loss"), ("train_acc", "acc"),
                           ("val_loss", "val_loss"), ("val_acc", "val_acc")):  # fmt: skip
            if key in row:
                parts.append(f"{label}: {row[key]:.4f}")
        print(" - ".join(parts), flush=True)


def progress_callbacks(progress: bool, history) -> list[L.Callback]:
    """The bar on a terminal, else the epoch lines (a bar's carriage returns fill a file)."""
    if progress and sys.stderr.isatty():
        return [EpochProgressBar(leave=True)]  # leave: a new bar for each epoch, the last kept
    return [EpochLines(history)]
