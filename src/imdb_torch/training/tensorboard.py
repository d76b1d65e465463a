"""TensorBoard as the lesson reads its curves: per epoch, train and validation in one chart.

What the module logged, Lightning's logger would chart against the global step (312, 625,
…) with an ``epoch`` series beside it, unless a ``step`` value were logged alongside in both
the training and the validation loop; and it has no call for a layout of charts. Here the
module logs nothing to the logger; ``EpochScalars`` writes the figures ``EpochHistory``
recorded, the very numbers of the console and ``history.json``, at the epoch number
(1-based, as they count), through the logger's own writer: with them a custom-scalars layout
that overlays train and validation (the book's loss plot), and the HParams summary: every
run's settings beside its best validation loss and accuracy and, once ``test.py`` has run,
its test accuracy.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams

from ..config import Settings, data_name

# history.json's keys → TensorBoard tags; "loss/…" and "accuracy/…" share a card each.
EPOCH_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val",
              "train_acc": "accuracy/train", "val_acc": "accuracy/val"}  # fmt: skip
BEST_VAL_LOSS, BEST_VAL_ACC, TEST_ACC = "best/val_loss", "best/val_acc", "test/acc"
NOT_HPARAMS = ("data", "cache_dir", "num_workers", "eval_batch_size")  # data: by name, below
LAYOUT = {
    "train against validation": {
        "loss": ["Multiline", ["loss/train", "loss/val"]],
        "accuracy": ["Multiline", ["accuracy/train", "accuracy/val"]],
    }
}


class EpochScalars(L.Callback):
    """Writes what ``EpochHistory`` records to the run's TensorBoard, at the epoch number.

    List it after ``EpochHistory``; only the main process writes.
    """

    def __init__(self, history, settings: Settings) -> None:
        self.history, self.settings = history, settings

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = _writer(trainer)
        if writer is None or trainer.ckpt_path:  # a resumed run wrote these when it began
            return
        writer.add_custom_scalars(LAYOUT)
        # What defines the experiment; where the data lies and how fast it is read do not.
        params = {key: _shown(value) for key, value in self.settings.flat().items()
                  if key not in NOT_HPARAMS}  # fmt: skip
        params["data"] = data_name(self.settings.data.data)  # which reviews, by name
        # The metrics are named here and written as scalars as they come (test.py adds one).
        metrics = dict.fromkeys((BEST_VAL_LOSS, BEST_VAL_ACC, TEST_ACC), 0.0)
        file_writer = writer._get_file_writer()
        for summary in hparams(params, metrics):
            file_writer.add_summary(summary)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = _writer(trainer)
        if writer is None or not self.history.epochs:
            return
        row = self.history.epochs[-1]
        for key, tag in EPOCH_TAGS.items():
            if key in row:
                writer.add_scalar(tag, row[key], row["epoch"])
        best = self.history.best()
        if best is not None:
            writer.add_scalar(BEST_VAL_LOSS, best["val_loss"], row["epoch"])
            writer.add_scalar(BEST_VAL_ACC, best.get("val_acc", float("nan")), row["epoch"])
        writer.flush()


def _shown(value):
    """As the HParams table shows it well: words for None and booleans (else 0.0000)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def _writer(trainer: L.Trainer):
    logger = trainer.logger
    if not trainer.is_global_zero or not isinstance(logger, TensorBoardLogger):
        return None
    return logger.experiment
