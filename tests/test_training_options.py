"""Training options beyond the lesson: ``--ema`` (a moving average of the weights) and
``--lr-decay``, checked for what they compute and for surviving a resume."""

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from imdb_torch.cli import train as train_cli
from imdb_torch.training.trainer import Hardware, prepare

from .conftest import tiny_settings, validation_by_hand

DECAY = 0.8


class StepWeights(L.Callback):
    """The trainable weights after every optimiser step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({name: p.detach().clone() for name, p in pl_module.named_parameters()})


def val_loss(model, datamodule) -> float:
    return validation_by_hand(model, datamodule)[0]


def fit_tiny(data, logdir, callback: L.Callback, max_epochs: int, **model_kwargs):
    """Train a tiny model on ``data`` with ``callback`` watching."""
    settings = tiny_settings(data, optimizer="adam", seed=0, max_epochs=max_epochs,
                             patience=max_epochs, **model_kwargs)  # fmt: skip
    run = prepare(settings, logdir=logdir, name="tiny", version=0,
                  hardware=Hardware("cpu", 1), progress=False)  # fmt: skip
    run.trainer.callbacks.append(callback)
    run.fit()
    return run


def test_validation_and_final_weights_are_the_moving_average(tiny_tarball, tmp_path):
    recorder = StepWeights()
    run = fit_tiny(tiny_tarball, tmp_path, recorder, max_epochs=2, lr=0.01, ema=DECAY)

    # torch's EMA: the first step's weights, then avg <- decay * avg + (1 - decay) * weights.
    average = dict(recorder.steps[0])
    for weights in recorder.steps[1:]:
        average = {name: DECAY * average[name] + (1 - DECAY) * w for name, w in weights.items()}
    raw = recorder.steps[-1]
    assert len(recorder.steps) > 4
    for name, param in run.model.named_parameters():
        torch.testing.assert_close(param.detach(), average[name], rtol=1e-5, atol=1e-6)
    assert max((average[n] - raw[n]).abs().max().item() for n in raw) > 1e-3

    # The last validation ran after the last step, on the averaged weights.
    logged = run.history.epochs[-1]["val_loss"]
    assert logged == pytest.approx(val_loss(run.model, run.datamodule), rel=1e-5)
    run.model.load_state_dict({**run.model.state_dict(), **raw})
    assert abs(logged - val_loss(run.model, run.datamodule)) > 1e-4

    # Checkpoints hold the average as the model's weights, and the raw ones for resuming.
    last = torch.load(Path(run.checkpoint.dirpath) / "last.ckpt", weights_only=True)
    head = "net.head.weight"
    torch.testing.assert_close(last["state_dict"][head], average[head])
    torch.testing.assert_close(last["current_model_state"][head], raw[head])


class EpochRates(L.Callback):
    """The learning rate each epoch starts with."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_lr_decay_after_each_epoch_without_a_lower_validation_loss(tiny_tarball, tmp_path):
    monitor = EpochRates()
    run = fit_tiny(tiny_tarball, tmp_path, monitor, max_epochs=8, arch="gru", lr=0.2,
                   lr_decay=0.5)  # fmt: skip
    losses = [row["val_loss"] for row in run.history.epochs]
    expected, best = [0.2], math.inf
    for loss in losses[:-1]:
        expected.append(expected[-1] * (1 if loss < best else 0.5))
        best = min(best, loss)
    assert monitor.rates == pytest.approx(expected)
    assert min(expected) < 0.2  # the rule was exercised


def flags(data, logdir, *extra):
    return ["--data", str(data), "--maxlen", "40", "--num-words", "30", "--batch-size", "16",
            "--optimizer", "adam", "--patience", "9", "--seed", "3",
            "--no-progress", "--logdir", str(logdir), "--name", "run",
            "--save", str(logdir / "best.ckpt"), *extra]  # fmt: skip


@pytest.mark.parametrize(
    "option",
    [
        ("--ema", "0.9", "--lr", "0.01"),
        ("--lr-decay", "0.5", "--lr", "0.1"),
        ("--ngrams", "2", "--ngram-buckets", "4096", "--lr", "0.01"),  # its ratios, its rate
    ],
)
def test_resumed_run_goes_on_as_an_uninterrupted_one(tiny_tarball, tmp_path, option):
    whole, split = tmp_path / "whole", tmp_path / "split"
    for logdir in (whole, split):
        logdir.mkdir()
    assert train_cli.main(flags(tiny_tarball, whole, *option, "--max-epochs", "5")) == 0
    assert train_cli.main(flags(tiny_tarball, split, *option, "--max-epochs", "2")) == 0
    assert train_cli.main(flags(tiny_tarball, split, "--resume", "--max-epochs", "5")) == 0

    def history(logdir):
        rows = json.loads((logdir / "run" / "version_0" / "history.json").read_text())
        return [row["val_loss"] for row in rows]

    losses = history(whole)
    if option[0] == "--lr-decay":  # the rate was cut after the resume
        assert any(loss >= min(losses[:i]) for i, loss in enumerate(losses[2:-1], start=2))
    assert len(history(split)) == 5
    assert history(split) == pytest.approx(losses, abs=1e-6)
    best_whole = torch.load(whole / "best.ckpt", weights_only=True)
    best_split = torch.load(split / "best.ckpt", weights_only=True)
    for name, value in best_whole["state_dict"].items():
        torch.testing.assert_close(best_split["state_dict"][name], value, rtol=0, atol=1e-6)


def test_a_decayed_rate_resumes_where_it_was_at_every_epoch(tiny_tarball, tmp_path):
    """The plateau rule's state is saved with the epoch it has judged: a run resumed after any
    epoch cuts the rate where the uninterrupted one does (a stale state, one epoch behind,
    compared later epochs with an older best loss)."""
    option = ("--lr-decay", "0.5", "--lr", "10")
    (tmp_path / "whole").mkdir()
    assert (
        train_cli.main(flags(tiny_tarball, tmp_path / "whole", *option, "--max-epochs", "6")) == 0
    )

    def losses(logdir):
        rows = json.loads((logdir / "run" / "version_0" / "history.json").read_text())
        return [row["val_loss"] for row in rows]

    whole = losses(tmp_path / "whole")
    for split in (2, 3, 4):
        logdir = tmp_path / f"split{split}"
        logdir.mkdir()
        assert train_cli.main(flags(tiny_tarball, logdir, *option, "--max-epochs", str(split))) == 0
        assert train_cli.main(flags(tiny_tarball, logdir, "--resume", "--max-epochs", "6")) == 0
        assert losses(logdir) == pytest.approx(whole, abs=1e-6), split
