"""What a person sees while a run trains: epochs counted from 1, as Keras and the history do.

On a terminal, Lightning's progress bar ("Epoch 3/100"), each finished epoch's left on
screen with its figures, as Keras's ``verbose=1`` leaves a line per epoch; elsewhere (a file,
a pipe, ``--no-progress``) one line per epoch, the shape of Keras's ``verbose=2``.
"""

from __future__ import annotations

import os
import sys

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

# The figures on the bar, in Keras's order and under Keras's names, as the epoch lines have.
KERAS_NAMES = {"train_loss": "loss", "train_acc": "acc", "val_loss": "val_loss",
               "val_acc": "val_acc"}  # fmt: skip


class EpochProgressBar(TQDMProgressBar):
    """Lightning's bar, with the epoch numbered from 1 and the limit beside it, the figures
    named as Keras names them, and without the run's version number (``v_num``), which its
    directory's name already says.

    Shorter than Lightning's, so that the line a finished epoch leaves fits 80 columns with
    all its figures: no rate, the time left and the bar only while the epoch runs (a full bar
    says nothing), the time taken in seconds as Keras gives it (``Epoch 12/100: 313/313,
    loss=0.689, acc=0.583, val_loss=0.689, val_acc=0.583 5s``).
    """

    BAR_FORMAT = "{desc} {n_fmt}/{total_fmt} {bar} {elapsed}<{remaining}{postfix}"
    # The seconds last: where a line is too long, tqdm cuts them rather than a figure.
    FINISHED_FORMAT = "{desc} {n_fmt}/{total_fmt}{postfix} {elapsed_s:.0f}s"

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        named = {KERAS_NAMES[key]: metrics.pop(key) for key in KERAS_NAMES if key in metrics}
        return {**named, **metrics}

    def on_train_start(self, *_) -> None:
        # Lightning makes a bar here and, with leave=True, another at each epoch's start: this
        # first one would stay on screen empty ("Training: 0/?").
        self.train_progress_bar = Tqdm(disable=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_progress_bar.bar_format = self.FINISHED_FORMAT  # the line left on screen
        super().on_train_epoch_end(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        # _str: as given, without the ": " that set_description would add.
        self.train_progress_bar.set_description_str(
            f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}:"
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


def shows_a_bar(progress: bool) -> bool:
    """A progress bar only on a terminal that says how wide it is: in a file its carriage
    returns pile up, and a terminal of width 0 (some consoles) would show empty lines."""
    if not (progress and sys.stderr.isatty()):
        return False
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except OSError:
        return False


def progress_callbacks(progress: bool, history) -> list[L.Callback]:
    """The bar on a terminal, else the epoch lines."""
    if shows_a_bar(progress):
        return [EpochProgressBar(leave=True)]  # leave: a new bar for each epoch, the last kept
    return [EpochLines(history)]
