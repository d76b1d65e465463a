"""Lightning's own loop, with nothing inside it: automatic against manual optimisation.

A LightningModule of one weight (its logit for every review, a binary cross-entropy, plain
SGD) is fitted over 313 training batches of 64 and 10 validation batches of 512 per epoch,
the lesson's counts, with no logger, no checkpoints and no callbacks but a timer, two
ways, alternating:

* ``automatic``: ``training_step`` returns the loss; Lightning runs the optimiser's closure,
  zeroing, backward and step with their hooks, as ``SentimentClassifier`` does;
* ``manual``: ``automatic_optimization = False`` and the step written out
  (``zero_grad``, ``manual_backward``, ``step``): fewer of Lightning's hooks per step.

Prints every round's median epoch (training and validation) and the median of the rounds:

    python benchmarks/lightning_floor.py --rounds 4
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import lightning as L
import torch
from torch import nn


class SameBatch:
    """``count`` batches, all the same tensors: no data work at all."""

    def __init__(self, count: int, size: int):
        self.count = count
        self.batch = torch.zeros(size, 100, dtype=torch.long), torch.zeros(size)

    def __iter__(self):
        return (self.batch for _ in range(self.count))

    def __len__(self) -> int:
        return self.count


class Automatic(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(()))
        self.loss_fn = nn.BCEWithLogitsLoss()

    def loss(self, batch):
        _, labels = batch
        return self.loss_fn(self.logit.expand(len(labels)), labels)

    def training_step(self, batch, batch_idx):
        return self.loss(batch)

    def validation_step(self, batch, batch_idx):
        self.loss(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-4)

    def train_dataloader(self):
        return SameBatch(313, 64)

    def val_dataloader(self):
        return SameBatch(10, 512)


class Manual(Automatic):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        loss = self.loss(batch)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss


class EpochTimes(L.Callback):
    def __init__(self):
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):  # after validation, as an epoch's time
        self.seconds.append(time.perf_counter() - self.started)


def median_epoch(module_class, epochs: int) -> float:
    times = EpochTimes()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[times])  # fmt: skip
    trainer.fit(module_class())
    return statistics.median(times.seconds[1:])  # the first epoch is a warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    results: dict[str, list[float]] = {"automatic": [], "manual": []}
    for _ in range(args.rounds):
        for name, module_class in (("automatic", Automatic), ("manual", Manual)):
            results[name].append(median_epoch(module_class, args.epochs))
    for name, seconds in results.items():
        rounds = ", ".join(f"{s:.3f}" for s in seconds)
        print(f"{name:9s} median epoch {statistics.median(seconds):.3f} s (rounds: {rounds})")


if __name__ == "__main__":
    main()
