"""Keras's ``model.fit``: a Lightning ``Trainer`` with the lesson's callbacks, for train.py
and reproduce.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from ..config import Settings
from ..data.datamodule import IMDBDataModule
from ..errors import UserError
from .callbacks import (
    EpochHistory,
    RandomState,
    RunCheckpoint,
    RunSettings,
    StopOnNonFiniteLoss,
)
from .checkpoint import AtomicCheckpointIO
from .console import progress_callbacks, shows_a_bar
from .module import SentimentClassifier
from .tensorboard import EpochScalars


@dataclass
class Hardware:
    """Passed to Lightning's ``Trainer`` as they are."""

    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str | None = None


@dataclass
class Session:
    """One training run, as ``prepare`` builds it: what ``fit`` needs, and the callbacks read
    afterwards."""

    trainer: L.Trainer
    model: SentimentClassifier
    datamodule: IMDBDataModule
    checkpoint: ModelCheckpoint
    history: EpochHistory

    def fit(self, resume_from: str | Path | None = None) -> None:
        # weights_only: a resumed checkpoint is never allowed to run code while loading.
        self.trainer.fit(
            self.model, datamodule=self.datamodule, ckpt_path=resume_from, weights_only=True
        )

    def best_checkpoint(self) -> Path:
        """The best epoch's checkpoint, which ``ModelCheckpoint`` kept."""
        best_path = self.checkpoint.best_model_path
        if not best_path:
            raise UserError("training stopped before any validation: no best checkpoint")
        return Path(best_path)

    def restore_best(self) -> Path:
        """Keras's ``restore_best_weights``: load the best epoch's weights into the model."""
        best_path = self.best_checkpoint()
        best = torch.load(best_path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(best["state_dict"])
        return best_path


def check_precision(settings: Settings, hardware: Hardware) -> None:
    """Float16 with a gradient scaler would square the scaler's factor into Keras's embedding
    update (keras_compat.EmbeddingOccurrences): refused with that update."""
    scaled_float16 = hardware.precision in ("16-mixed", "16", 16)
    if scaled_float16 and settings.optim.per_occurrence_embedding_updates:
        raise UserError(
            "--precision 16-mixed does not work with RMSprop's per-occurrence embedding updates; "
            "use bf16-mixed or 32-true, or --dense-embedding-updates"
        )


def prepare(
    settings: Settings,
    *,
    logdir: Path,
    name: str,
    version: int | None,
    hardware: Hardware | None = None,
    progress: bool = True,
    fused_rnn: bool = True,
    cuda_graphs: bool = True,
    datamodule: IMDBDataModule | None = None,
    save_path: Path | None = None,
) -> Session:
    """Seed, then build the model and a Trainer with the lesson's callbacks (and the data
    module of ``settings``, unless ``datamodule`` is given: the tools read the data first, and
    a resumed run keeps its own data settings).

    One ``ModelCheckpoint`` keeps the best epoch by validation loss, another the last epoch,
    both saved atomically; ``EarlyStopping`` stops after ``settings.run.patience`` epochs without
    improvement. ``save_path``, where the caller copies the best model, is
    recorded in the checkpoints for a resumed run to copy it to.
    """
    hardware = hardware or Hardware()
    check_precision(settings, hardware)
    L.seed_everything(settings.run.seed, workers=True, verbose=False)
    if datamodule is None:
        datamodule = IMDBDataModule.from_settings(settings)
    model = SentimentClassifier(
        settings.model, settings.optim, fused_rnn=fused_rnn, cuda_graphs=cuda_graphs
    )
    history = EpochHistory()
    # keras.callbacks.ModelCheckpoint(save_best_only=True). Saved at the training epoch's end,
    # after EpochHistory has recorded the epoch, so checkpoints carry the full history.
    checkpoint = RunCheckpoint(
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        filename="best-epoch{epoch:03d}-val_loss{val_loss:.4f}",
        auto_insert_metric_name=False,
        save_on_train_epoch_end=True,
    )
    # last.ckpt, every epoch's, what --resume continues. Its own callback: Lightning's
    # save_last writes it only where a best checkpoint is written (since Lightning 2.6).
    last = RunCheckpoint(
        filename="last", enable_version_counter=False, save_on_train_epoch_end=True
    )
    logger = TensorBoardLogger(logdir, name=name, version=version, default_hp_metric=False)
    # hparams.yaml: Lightning writes the model's and the data's settings there; the run's
    # (seed, epochs, patience) beside them. Lightning writes the file once: a resumed run's
    # shows the settings the run was started with.
    logger.log_hyperparams({"run": asdict(settings.run)})
    trainer = L.Trainer(
        max_epochs=settings.run.max_epochs,
        accelerator=hardware.accelerator,
        devices=hardware.devices,
        strategy=hardware.strategy,
        num_nodes=hardware.num_nodes,
        precision=hardware.precision,
        logger=logger,
        callbacks=[
            StopOnNonFiniteLoss(),  # before anything of a broken epoch is written
            history,
            EpochScalars(history, settings),
            *progress_callbacks(progress, history),
            RandomState(),
            RunSettings(settings.run, save_path),
            checkpoint,
            last,
            # keras.callbacks.EarlyStopping(patience=3); restore_best_weights: the model kept
            # is the best epoch's checkpoint (Session.best_checkpoint, restore_best).
            EarlyStopping(monitor="val_loss", mode="min", patience=settings.run.patience),
        ],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=shows_a_bar(progress),
        enable_model_summary=False,  # train.py prints the parameter count, as Keras counts
    )
    return Session(trainer, model, datamodule, checkpoint, history)


def evaluate(
    model: SentimentClassifier,
    datamodule: IMDBDataModule,
    hardware: Hardware,
    progress: bool = True,
) -> dict[str, float]:
    """Test loss and accuracy on the test set, on one device (the model keeps the predictions):
    several would each see a padded share, and the predictions would be one rank's."""
    trainer = L.Trainer(
        accelerator=hardware.accelerator,
        devices=hardware.devices[:1] if isinstance(hardware.devices, list) else 1,
        precision=hardware.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=shows_a_bar(progress),
        enable_model_summary=False,
    )
    try:
        trainer.test(model, datamodule=datamodule, verbose=False)
    except SystemExit:
        # Lightning ends a Ctrl-C'd (or SIGTERM'd) run with exit(1) after its own tidying up:
        # an interrupt, for the tools to report as one.
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    # callback_metrics: the module logs to the progress bar and callbacks, not to a logger.
    metrics = trainer.callback_metrics
    return {key: float(value) for key, value in metrics.items() if key.startswith("test_")}
