"""The lesson's train/validation loss plot, with accuracy beside it and the best epoch marked."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..fileio import atomic_path
from ..training.callbacks import best_epoch


def plot_losses(history: list[dict[str, float]], path: Path, title: str = "") -> Path:
    """Train and validation loss per epoch, as the book plots after each run, and accuracy
    beside it; the epoch with the lowest validation loss (the one kept) is marked."""
    figure = Figure(figsize=(10, 4), dpi=120)
    loss_axes, acc_axes = figure.subplots(1, 2)
    best = best_epoch(history)
    for axes, metric, ylabel in ((loss_axes, "loss", "loss"), (acc_axes, "acc", "accuracy")):
        for split in ("train", "val"):
            points = [(row["epoch"], row[f"{split}_{metric}"]) for row in history
                      if f"{split}_{metric}" in row]  # fmt: skip
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", markersize=3, label=split)
        if best is not None:
            axes.axvline(best["epoch"], color="grey", linestyle=":", linewidth=1,
                         label=f"best epoch ({best['epoch']})")  # fmt: skip
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
        axes.grid(alpha=0.3)
        axes.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
