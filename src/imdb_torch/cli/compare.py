"""Overlay the learning curves of several training runs and tabulate their results."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import UserError
from ..fileio import atomic_path
from ..reporting.runs import Run, load_runs
from ..training.callbacks import HISTORY_FILE
from .common import check_writable, run
from .parsers import build_compare_parser, program_name

PROG = program_name("compare")


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


def _main(argv: Sequence[str] | None) -> int:
    args = build_compare_parser().parse_args(argv)
    out = _checked_out(Path(args.out))
    runs = load_runs(args.runs)
    print(table(runs))
    plot(runs, out)
    print(f"\nfigure: {out}")
    return 0


def _checked_out(out: Path) -> Path:
    """Where the figure may go: a PNG file name in a directory that can be written, and never
    over a file that is not a PNG (a run's history or checkpoint given by mistake)."""
    if out.is_dir():
        raise UserError(
            f"cannot write {out}: it is a directory; give a file name, e.g. {out}/compare.png"
        )
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: the figure is a PNG; give a name ending in .png")
    if out.exists() and not _is_png(out):
        raise UserError(f"--out {out}: the file exists and is not a PNG; it is left as it is")
    if out.name == "loss.png" and (out.parent / HISTORY_FILE).is_file():
        raise UserError(f"--out {out}: that is a run's own loss plot; give another name")
    if out.parent.exists() and not out.parent.is_dir():
        raise UserError(f"cannot write {out}: {out.parent} is a file, not a directory")
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: directory {out.parent} does not exist")
    check_writable(out.parent, f"--out {out}")
    return out


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False


def table(runs: list[Run]) -> str:
    def number(value, digits=4):
        return f"{value:.{digits}f}" if value is not None else "-"

    width = max([28, *(len(item.name) for item in runs)])
    lines = [
        f"{'run':<{width}} {'epochs':>6} {'best':>5} {'val_loss':>9} {'val_acc':>8} {'test_acc':>9}"
    ]
    other_epochs = []  # test results of another model than the best epoch's
    for item in runs:
        best = item.best() or {}
        test_acc = number((item.test or {}).get("test_acc"))
        if item.tested_epoch() is not None:
            other_epochs.append(item)
            test_acc += "*"
        lines.append(
            f"{item.name:<{width}} {len(item.history):>6} {best.get('epoch', '-'):>5} "
            f"{number(best.get('val_loss')):>9} {number(best.get('val_acc')):>8} "
            f"{test_acc:>9}"
        )
    # Runs on other reviews are not comparable figure for figure: say which data each had.
    # Told apart by the data's fingerprint where every run records it, else by its name.
    by_fingerprint = all(item.data_key for item in runs)
    keys = {item.data_key if by_fingerprint else item.data for item in runs
            if item.data is not None}  # fmt: skip
    names = sorted({item.data for item in runs if item.data is not None})
    if len(keys) == 1:
        lines.append(f"data: {' = '.join(names)}")
    elif keys:
        lines.append("data differs: " + "; ".join(
            f"{item.name} on {item.data or '?'}"
            + (f" ({item.data_key[:8]})" if item.data_key else "") for item in runs))  # fmt: skip
    for item in other_epochs:
        lines.append(
            f"* {item.name}: test_acc is epoch {item.tested_epoch()}'s model, not the best "
            f"epoch {item.best()['epoch']}'s; test.py on the run's best checkpoint measures it"
        )
    return "\n".join(lines)


def plot(runs: list[Run], path: Path) -> None:
    figure = Figure(figsize=(11, 4.2), dpi=110)
    loss_axes, acc_axes = figure.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for item, colour in zip(runs, colours, strict=True):
        for axes, metric in ((loss_axes, "loss"), (acc_axes, "acc")):
            for split, style in (("train", "--"), ("val", "-")):
                points = [(r["epoch"], r[f"{split}_{metric}"]) for r in item.history
                          if f"{split}_{metric}" in r]  # fmt: skip
                if points:
                    label = item.name if split == "val" else None
                    # Markers: a run of one epoch is a point, which a line alone would hide.
                    axes.plot(*zip(*points, strict=True), style, color=colour, label=label,
                              marker="o", markersize=3)  # fmt: skip
    for axes, ylabel in ((loss_axes, "loss"), (acc_axes, "accuracy")):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
    if loss_axes.get_legend_handles_labels()[0]:  # none when no run has finished an epoch
        loss_axes.legend(fontsize="small")
    acc_axes.set_title("dashed: train, solid: validation", fontsize="small")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


if __name__ == "__main__":
    sys.exit(main())
