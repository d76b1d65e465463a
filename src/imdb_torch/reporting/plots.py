"""The lesson's train/validation loss plot."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ..fileio import atomic_path


def plot_losses(history: list[dict[str, float]], path: Path, title: str = "") -> Path:
    """Train and validation loss per epoch, as the book plots after each run; saved as PNG."""
    figure = Figure(figsize=(6, 4), dpi=120)
    axes = figure.subplots()
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        points = [(row["epoch"], row[key]) for row in history if key in row]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    if title:
        axes.set_title(title)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
