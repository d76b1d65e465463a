"""Results of the chapter's experiments: one JSON per run, a markdown summary and figures."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..config import EXPERIMENTS, data_name
from ..errors import UserError
from ..fileio import atomic_path
from .runs import checked_history, read_json

FRAMEWORKS = ("keras", "imdb-torch")
# The book's published numbers (val loss / val acc at the best epoch, test acc of the 2-layer).
BOOK = {
    "lstm": {"best_val_loss": 0.437, "best_val_acc": 0.793},
    "lstm-dropout": {"best_val_loss": 0.447, "best_val_acc": 0.790},
    "lstm-2layer": {"best_val_loss": 0.467, "best_val_acc": 0.784, "test_acc": 0.785},
    "gru": {"best_val_loss": 0.432, "best_val_acc": 0.798},
}


def run_file(results_dir: Path, framework: str, experiment: str, seed: int) -> Path:
    return results_dir / "runs" / f"{framework}-{experiment}-seed{seed}.json"


def write_run(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))


RUN_KEYS = {"framework": str, "experiment": str, "seed": int, "history": list,
            "best_val_loss": float, "best_val_acc": float, "test_acc": float}  # fmt: skip


def load_run_records(results_dir: Path) -> list[dict]:
    """The run records of ``results_dir/runs``, each checked to be one this program wrote."""
    runs = []
    for path in sorted((results_dir / "runs").glob("*.json")):
        record = read_json(path)
        if not isinstance(record, dict) or not all(
            isinstance(record.get(key), (int, float) if kind is float else kind)
            and not isinstance(record.get(key), bool)
            for key, kind in RUN_KEYS.items()
        ):
            raise UserError(f"{path} is not a run record as reproduce.py writes it")
        checked_history(record["history"], path)
        runs.append(record)
    return runs


def _mean_std(values: list[float], digits: int = 4) -> str:
    if not values:
        return "-"
    if len(values) == 1:  # a count stays a whole number
        return str(values[0]) if isinstance(values[0], int) else f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summary_table(runs: list[dict]) -> str:
    """Markdown: per framework and experiment, mean ± standard deviation over seeds."""
    header = ("| experiment | framework | seeds | epochs run | best epoch | best val loss | "
              "best val acc | test acc | median epoch s |")  # fmt: skip
    lines = [header, "|" + "---|" * 9]
    for experiment in _experiments_in(runs):
        for framework in FRAMEWORKS:
            group = [
                r for r in runs if r["experiment"] == experiment and r["framework"] == framework
            ]
            if not group:
                continue

            def values(key, group=group):
                return [r[key] for r in group if r.get(key) is not None]

            lines.append(
                f"| {experiment} | {framework} | {len(group)} "
                f"| {_mean_std(values('epochs_run'), 1)} "
                f"| {_mean_std(values('best_epoch'), 1)} | {_mean_std(values('best_val_loss'))} "
                f"| {_mean_std(values('best_val_acc'))} | {_mean_std(values('test_acc'))} "
                f"| {_mean_std(values('median_epoch_seconds'), 2)} |"
            )
        book = BOOK[experiment]
        lines.append(
            f"| {experiment} | book (Keras) | 1 | | | {book['best_val_loss']:.3f} "
            f"| {book['best_val_acc']:.3f} | {book.get('test_acc', '')} | |"
        )
    return "\n".join(lines)


def _experiments_in(runs: list[dict]) -> list[str]:
    """The experiments ``runs`` hold, in the lesson's order."""
    return [experiment for experiment in EXPERIMENTS if any(r["experiment"] == experiment
                                                            for r in runs)]  # fmt: skip


def context_line(runs: list[dict]) -> str:
    """What the figures below come from: the data and limits the runs had, and the seeds."""
    settings = [r["settings"] for r in runs if isinstance(r.get("settings"), dict)]

    def each(key):
        return ", ".join(sorted({str(s.get(key)) for s in settings})) or "?"

    data = ", ".join(sorted({data_name(s.get("data")) for s in settings})) or "?"
    seeds = ", ".join(str(seed) for seed in sorted({r["seed"] for r in runs}))
    return (f"Data: {data}; max_epochs {each('max_epochs')}, patience {each('patience')}; "
            f"seeds {seeds}. Means ± standard deviations over the seeds; the book's rows are "
            "its published figures (one Keras run on Keras's imdb.npz).")  # fmt: skip


def parity_table(runs: list[dict]) -> str:
    """Markdown: imdb-torch's mean minus Keras's, against the parity targets."""
    lines = [
        "| experiment | Δ best val acc (pp) | Δ test acc (pp) | Δ best val loss | within target |",
        "|---|---|---|---|---|",
    ]
    for experiment in EXPERIMENTS:
        means = {}
        for framework in FRAMEWORKS:
            group = [
                r for r in runs if r["experiment"] == experiment and r["framework"] == framework
            ]
            if group:
                keys = ("best_val_acc", "test_acc", "best_val_loss")
                means[framework] = {key: statistics.mean(r[key] for r in group) for key in keys}
        if len(means) < 2:
            continue
        delta = {key: means["imdb-torch"][key] - means["keras"][key] for key in means["keras"]}
        ok = (abs(delta["best_val_acc"]) <= 0.01 and abs(delta["test_acc"]) <= 0.01
              and abs(delta["best_val_loss"]) <= 0.01)  # fmt: skip
        lines.append(
            f"| {experiment} | {100 * delta['best_val_acc']:+.2f} | {100 * delta['test_acc']:+.2f} "
            f"| {delta['best_val_loss']:+.4f} | {'yes' if ok else 'no'} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def plot_curves(runs: list[dict], path: Path) -> None:
    """The book's loss plots side by side, one per experiment run: train (dashed) and val
    (solid), every seed, each framework and seed in a colour of its own."""
    experiments = _experiments_in(runs)
    rows, columns = (2, 2) if len(experiments) == 4 else (1, len(experiments))
    figure = Figure(figsize=(5.5 * columns, 4 * rows), dpi=100)
    axes_grid = figure.subplots(rows, columns, sharey=True, squeeze=False)
    lines = sorted({(r["framework"], r["seed"]) for r in runs})
    colours = {line: f"C{i % 10}" for i, line in enumerate(lines)}
    for axes, experiment in zip(axes_grid.flat, experiments, strict=True):
        for run in (r for r in runs if r["experiment"] == experiment):
            epochs = [row["epoch"] for row in run["history"]]
            colour = colours[(run["framework"], run["seed"])]
            label = f"{run['framework']} seed {run['seed']}"
            # Markers: a run of one epoch is a point, which a line alone would hide.
            axes.plot(epochs, [row["train_loss"] for row in run["history"]], "--", color=colour,
                      alpha=0.6, linewidth=1, marker="o", markersize=2)  # fmt: skip
            axes.plot(epochs, [row["val_loss"] for row in run["history"]], "-", color=colour,
                      alpha=0.8, linewidth=1, marker="o", markersize=2, label=label)  # fmt: skip
        axes.set_title(experiment)
        if not axes.get_legend_handles_labels()[0]:
            continue
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
        axes.set_ylabel("loss (dashed: train, solid: val)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def plot_test_accuracy(runs: list[dict], path: Path) -> None:
    experiments = _experiments_in(runs)
    frameworks = [f for f in FRAMEWORKS if any(r["framework"] == f for r in runs)]
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.subplots()
    width = 0.76 / len(frameworks)
    for i, framework in enumerate(frameworks):  # bars side by side about each experiment
        offset = (i - (len(frameworks) - 1) / 2) * width
        means, errors = [], []
        for experiment in experiments:
            values = [r["test_acc"] for r in runs
                      if r["experiment"] == experiment and r["framework"] == framework]  # fmt: skip
            means.append(statistics.mean(values) if values else 0)
            errors.append(statistics.stdev(values) if len(values) > 1 else 0)
        positions = [j + offset for j in range(len(experiments))]
        axes.bar(positions, means, width, yerr=errors, label=framework, capsize=3)
    axes.set_xticks(range(len(experiments)), experiments)
    # The lesson's range, widened to hold every bar (a run far from it, on other data, say).
    tops = [bar.get_height() for bar in axes.patches]
    axes.set_ylim(min(0.5, min(tops) - 0.05), min(1.0, max(0.9, max(tops) + 0.05)))
    axes.set_ylabel("test accuracy (mean ± std over seeds)")
    axes.legend()
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def write_report(results_dir: Path) -> Path:
    runs = load_run_records(results_dir)
    summary = results_dir / "summary.md"
    with atomic_path(summary) as tmp:
        parity = parity_table(runs)
        tmp.write_text(context_line(runs) + "\n\n" + summary_table(runs) + "\n"
                       + (f"\n{parity}\n" if parity else ""))  # fmt: skip
    if runs:
        plot_curves(runs, results_dir / "curves.png")
        plot_test_accuracy(runs, results_dir / "test_accuracy.png")
    return summary
