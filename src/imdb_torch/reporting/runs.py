"""Reading what training logged: a run's per-epoch history and test results."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..training.callbacks import HISTORY_FILE
from ..training.checkpoint import read_checkpoint

TEST_FILE = "test.json"


@dataclass
class Run:
    name: str
    history: list[dict[str, float]]
    test: dict[str, float] | None

    def best(self) -> dict[str, float] | None:
        rows = [row for row in self.history if "val_loss" in row]
        return min(rows, key=lambda row: row["val_loss"]) if rows else None


def run_dir_of(checkpoint: dict) -> Path | None:
    """The ``LOGDIR/NAME/version_N`` directory a checkpoint was written from, if recorded."""
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and state.get("dirpath"):
            return Path(state["dirpath"]).parent
    return None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} ({exc})") from exc


def load_run(path: str | Path) -> Run:
    """A run from a checkpoint, a run directory, or an experiment directory (newest run)."""
    path = Path(path)
    if path.is_file():
        checkpoint = read_checkpoint(path)
        history = next(
            (state["epochs"] for key, state in checkpoint.get("callbacks", {}).items()
             if key.startswith("EpochHistory")),
            [],
        )  # fmt: skip
        run_dir = run_dir_of(checkpoint)
        test_file = run_dir / TEST_FILE if run_dir else None
        name = f"{run_dir.parent.name}/{run_dir.name}" if run_dir else path.stem
        test = _read_json(test_file) if test_file and test_file.is_file() else None
        return Run(name, list(history), test)
    if not path.is_dir():
        raise UserError(f"{path} is neither a checkpoint nor a run directory")
    if not (path / HISTORY_FILE).is_file():
        versions = sorted(
            (p for p in path.glob("version_*") if (p / HISTORY_FILE).is_file()),
            key=lambda p: int(p.name.removeprefix("version_") or -1),
        )
        if not versions:
            raise UserError(f"{path} holds no {HISTORY_FILE}: not a run directory of train.py")
        path = versions[-1]
    test_file = path / TEST_FILE
    return Run(
        f"{path.parent.name}/{path.name}",
        _read_json(path / HISTORY_FILE),
        _read_json(test_file) if test_file.is_file() else None,
    )
