"""Reading what training logged, a run's per-epoch history and test results; and writing the
test results where they are read."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml
from torch.utils.tensorboard import SummaryWriter

from ..config import data_name
from ..errors import UserError
from ..fileio import atomic_path, file_digest
from ..training.callbacks import HISTORY_FILE, best_epoch
from ..training.checkpoint import read_checkpoint
from ..training.tensorboard import TEST_ACC

TEST_FILE = "test.json"


def write_test_result(
    run_dir: Path, metrics: dict, reviews: int, checkpoint: Path, data: dict, epoch: int
) -> None:
    """Leave a test result in its run directory: ``test.json``, where compare.py finds it,
    and the accuracy beside the run's curves at ``epoch``, so that TensorBoard's HParams
    table shows it with the run's settings. ``data``: the data module's ``source_record()``."""
    record = {"test_loss": metrics["test_loss"], "test_acc": metrics["test_acc"],
              "test_reviews": reviews, "checkpoint": str(checkpoint.resolve()), "epoch": epoch,
              "data": data.get("path"), "data_sha256": data.get("fingerprint")}  # fmt: skip
    with atomic_path(run_dir / TEST_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    with SummaryWriter(log_dir=str(run_dir)) as writer:
        writer.add_scalar(TEST_ACC, metrics["test_acc"], epoch)


@dataclass
class Run:
    name: str
    history: list[dict[str, float]]
    test: dict[str, float] | None
    run_dir: Path | None = None  # None: a checkpoint that names no run directory
    data: str | None = None  # the file or folder of the reviews it was trained on, if known
    # Which reviews, whatever their name: the data's fingerprint (a file's SHA-256), if known.
    data_key: str | None = None

    def best(self) -> dict[str, float] | None:
        return best_epoch(self.history)

    def tested_epoch(self) -> int | None:
        """The epoch whose model the test result measured, when it is not the best epoch's:
        a checkpoint other than the best was tested, or training went on (--resume) and found
        a better epoch since. ``None`` when it is the best, or is not recorded."""
        epoch = (self.test or {}).get("epoch")
        best = self.best()
        if isinstance(epoch, int) and best is not None and epoch != best["epoch"]:
            return epoch
        return None


def callback_states(checkpoint: dict, kind: str) -> list[dict]:
    """The saved states of a checkpoint's callbacks whose key names ``kind`` (Lightning files
    each under its class name and settings, e.g. ``ModelCheckpoint{...}``), those that are
    tables: a checkpoint may come from anyone."""
    callbacks = checkpoint.get("callbacks", {})
    if not isinstance(callbacks, dict):
        return []
    return [state for key, state in callbacks.items()
            if isinstance(key, str) and kind in key and isinstance(state, dict)]  # fmt: skip


def run_dir_of(checkpoint: dict) -> Path | None:
    """The ``LOGDIR/NAME/version_N`` directory a checkpoint was written from, if recorded."""
    for state in callback_states(checkpoint, "Checkpoint"):
        if isinstance(state.get("dirpath"), str):
            return Path(state["dirpath"]).parent
    return None


def own_run_dir(checkpoint: dict, ckpt_path: Path) -> Path | None:
    """The run directory this checkpoint file belongs to: the one it lies in, or the one it
    names if that holds the same file (best.ckpt is a copy). A checkpoint's contents alone
    never decide where this tool writes."""
    here = ckpt_path.resolve().parent
    if here.name == "checkpoints" and here.parent.name.startswith("version_"):
        return here.parent
    named = run_dir_of(checkpoint)
    if named is None or not (named / "checkpoints").is_dir():
        return None
    digest = file_digest(ckpt_path)
    same = (
        p
        for p in (named / "checkpoints").glob("*.ckpt")
        if p.stat().st_size == ckpt_path.stat().st_size
    )
    return named if any(file_digest(p) == digest for p in same) else None


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON, or bytes that are not UTF-8
        raise UserError(f"cannot read {path} ({exc})") from exc
    except RecursionError as exc:  # arrays nested thousands deep
        raise UserError(f"cannot read {path}: nested too deeply to be a result") from exc


def checked_history(rows, source) -> list[dict[str, float]]:
    """``history.json``'s rows, each with a whole epoch number and numbers for the metrics."""
    if not isinstance(rows, list) or not all(_is_row(row) for row in rows):
        raise UserError(f"{source}: not a history of epochs as train.py writes it")
    return rows


def _is_row(row) -> bool:
    return (
        isinstance(row, dict)
        and isinstance(row.get("epoch"), int)
        and all(_is_number(value) for key, value in row.items() if key != "epoch")
    )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def checked_test(record, source) -> dict | None:
    """``test.json``: test loss and accuracy (numbers), or ``None`` with a warning."""
    if isinstance(record, dict) and all(
        _is_number(record.get(k)) for k in ("test_loss", "test_acc")
    ):
        return record
    warnings.warn(f"{source}: not a test result as test.py writes it; left out", stacklevel=2)
    return None


def version_number(run_dir: Path) -> int:
    """N of ``version_N`` as Lightning names it; -1 for any other name (``version_0_backup``,
    ``version_007``), which a logger given N would not write into."""
    number = run_dir.name.removeprefix("version_")
    return int(number) if number.isdigit() and str(int(number)) == number else -1


def history_in(checkpoint: dict, source) -> list[dict[str, float]]:
    """The per-epoch history ``EpochHistory`` saved in a checkpoint, checked (``[]`` if none)."""
    states = callback_states(checkpoint, "EpochHistory")
    return checked_history(states[0].get("epochs") if states else [], source)


def load_run(path: str | Path) -> Run:
    """A run from a checkpoint, a run directory, or an experiment directory (newest run)."""
    path = Path(path)
    if path.is_file():
        if not _is_zip(path):  # every checkpoint is one: a text file given by mistake, say
            raise UserError(f"{path} is neither a checkpoint nor a run directory")
        checkpoint = read_checkpoint(path)
        run_dir = own_run_dir(checkpoint, path)
        name = f"{run_dir.parent.name}/{run_dir.name}" if run_dir else path.stem
        test = test_result_in(run_dir) if run_dir else None
        data = _data_name(checkpoint.get("datamodule_hyper_parameters"))
        return Run(name, history_in(checkpoint, path), test, run_dir, data,
                   _fingerprint_in(checkpoint))  # fmt: skip
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if not path.is_dir():
        raise UserError(f"{path} is neither a checkpoint nor a run directory")
    if not (path / HISTORY_FILE).is_file():
        versions = sorted(
            (p for p in path.glob("version_*")
             if version_number(p) >= 0 and (p / HISTORY_FILE).is_file()),
            key=version_number,
        )  # fmt: skip
        if not versions:
            raise UserError(f"{path} holds no {HISTORY_FILE}: not a run directory of train.py")
        path = versions[-1]
    return Run(
        f"{path.parent.name}/{path.name}",
        checked_history(read_json(path / HISTORY_FILE), path / HISTORY_FILE),
        test_result_in(path),
        path,
        _data_name(_settings_in(path / "hparams.yaml")),
        _fingerprint_in(_last_checkpoint(path)),
    )


def _last_checkpoint(run_dir: Path) -> dict | None:
    try:
        return read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    except UserError:  # none, or damaged: the run is still worth comparing
        return None


def _fingerprint_in(checkpoint: dict | None) -> str | None:
    """The fingerprint of the data a checkpoint's run was trained on, if it records one."""
    state = checkpoint.get("IMDBDataModule") if isinstance(checkpoint, dict) else None
    source = state.get("source") if isinstance(state, dict) else None
    fingerprint = source.get("fingerprint") if isinstance(source, dict) else None
    return fingerprint if isinstance(fingerprint, str) and fingerprint else None


def _settings_in(hparams_file: Path) -> dict | None:
    """The settings Lightning wrote in a run's hparams.yaml, if it can be read."""
    try:
        settings = yaml.safe_load(hparams_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, yaml.YAMLError):
        return None
    return settings if isinstance(settings, dict) else None


def _data_name(settings: dict | None) -> str | None:
    """The name of the data in a run's settings (``config.data_name``), if they hold it."""
    if not isinstance(settings, dict) or "data" not in settings:
        return None
    return data_name(settings["data"])


def _is_zip(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def load_runs(paths: list[str | Path]) -> list[Run]:
    """The runs ``paths`` name, each once, with labels that tell them apart.

    A path may be a checkpoint, a run directory, an experiment directory (its newest run) or
    a log directory such as ``lightning_logs`` (every run of every experiment in it). A
    checkpoint given beside its own run is that run, shown once.
    """
    runs, seen = [], set()
    for path in paths:
        for run in (load_run(p) for p in _run_paths(Path(path))):
            key = run.run_dir.resolve() if run.run_dir else None
            if key is None or key not in seen:
                seen.add(key)
                runs.append(run)
    _label_apart(runs)
    return runs


def _run_paths(path: Path) -> list[Path]:
    if path.is_file() or not path.is_dir() or (path / HISTORY_FILE).is_file():
        return [path]
    if any(version_number(p) >= 0 for p in path.glob("version_*")):
        return [path]  # an experiment directory: load_run takes its newest run
    found = sorted(
        (p for p in path.glob("*/version_*")
         if version_number(p) >= 0 and (p / HISTORY_FILE).is_file()),
        key=lambda p: (p.parent.name, version_number(p)),
    )  # fmt: skip
    if not found:
        raise UserError(
            f"{path} is not a run directory, nor holds any (no */version_N/{HISTORY_FILE})"
        )
    return found


def _label_apart(runs: list[Run]) -> None:
    """Lengthen clashing labels (``gru/version_0`` from two log directories) with the
    directories above them until they differ."""
    for depth in range(3, 8):
        names = [run.name for run in runs]
        clashing = {name for name in names if names.count(name) > 1}
        if not clashing:
            return
        for run in runs:
            if run.name in clashing and run.run_dir is not None:
                run.name = "/".join(run.run_dir.resolve().parts[-depth:])


def test_result_in(run_dir: Path) -> dict | None:
    """The test result test.py left in ``run_dir``, if any and readable."""
    test_file = run_dir / TEST_FILE
    if not test_file.is_file():
        return None
    try:
        record = read_json(test_file)
    except UserError as exc:  # the run is still worth comparing without it
        warnings.warn(f"{exc}; its test result is left out", stacklevel=2)
        return None
    return checked_test(record, test_file)
