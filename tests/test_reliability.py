"""Interrupted and concurrent training, determinism, and atomic writes."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from imdb_torch.cli import train as train_cli
from imdb_torch.training.checkpoint import AtomicCheckpointIO, read_checkpoint

from .conftest import make_reviews, write_tarball

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def medium_tarball(tmp_path_factory):
    """Big enough that an epoch takes a noticeable fraction of a second."""
    path = tmp_path_factory.mktemp("medium") / "aclImdb_medium.tar.gz"
    return write_tarball(make_reviews(seed=3, per_folder=300), path)


def flags(data, logdir, *extra):
    Path(logdir).mkdir(parents=True, exist_ok=True)
    return ["--data", str(data), "--maxlen", "40", "--num-words", "30", "--batch-size", "16",
            "--optimizer", "adam", "--lr", "0.002", "--max-epochs", "6", "--patience", "6",
            "--seed", "3", "--no-progress", "--logdir", str(logdir),
            "--save", str(Path(logdir) / "best.ckpt"), *extra]  # fmt: skip


def start(args, cache):
    env = {**os.environ, "IMDB_TORCH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=_default_ctrl_c,
    )  # fmt: skip


def _default_ctrl_c():
    # A suite started in the background by a shell inherits SIGINT ignored, and so would the
    # training process; Python only turns SIGINT into KeyboardInterrupt where it is not ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.json"
    return json.loads(path.read_text()) if path.is_file() else []


def wait_for_epochs(run_dir: Path, count: int, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(history(run_dir)) >= count:
            return
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.01)
    raise AssertionError(f"no {count} epochs within {timeout} s")


def test_same_seed_gives_identical_histories(tiny_tarball, tmp_path):
    for name in ("a", "b"):
        assert train_cli.main(flags(tiny_tarball, tmp_path / name, "--max-epochs", "3")) == 0

    def metrics(run):  # everything but the epochs' wall time
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history(run)]

    first = metrics(tmp_path / "a" / "lstm" / "version_0")
    assert len(first) == 3
    assert first == metrics(tmp_path / "b" / "lstm" / "version_0")


def test_run_killed_mid_epoch_resumes_to_the_same_result(medium_tarball, tmp_path):
    cache = tmp_path / "cache"
    whole = start(flags(medium_tarball, tmp_path / "whole"), cache)
    assert whole.wait(timeout=300) == 0, whole.communicate()[1][-2000:]

    killed = start(flags(medium_tarball, tmp_path / "killed"), cache)
    run_dir = tmp_path / "killed" / "lstm" / "version_0"
    wait_for_epochs(run_dir, 2, killed)
    time.sleep(0.15)  # into the next epoch
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    done_before_kill = len(history(run_dir))
    assert 2 <= done_before_kill < 6
    last = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")  # intact, not torn
    assert last["epoch"] + 1 >= done_before_kill - 1

    resumed = start(flags(medium_tarball, tmp_path / "killed", "--resume"), cache)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert "resuming" in out
    assert "Restoring states" not in out + err  # Lightning's words beside the tool's own
    assert not (tmp_path / "killed" / "lstm" / "version_1").exists()  # same logger version

    expected = history(tmp_path / "whole" / "lstm" / "version_0")
    got = history(run_dir)
    assert [row["epoch"] for row in got] == [row["epoch"] for row in expected]
    best_expected = min(expected, key=lambda row: row["val_loss"])
    best_got = min(got, key=lambda row: row["val_loss"])
    assert best_got["epoch"] == best_expected["epoch"]
    assert abs(best_got["val_loss"] - best_expected["val_loss"]) < 1e-6
    for row_got, row_expected in zip(got, expected, strict=True):
        assert row_got["val_loss"] == pytest.approx(row_expected["val_loss"], abs=1e-6)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_ends_gracefully_and_says_how_to_resume(medium_tarball, tmp_path, signum):
    process = start(flags(medium_tarball, tmp_path), tmp_path / "cache")
    run_dir = tmp_path / "lstm" / "version_0"
    wait_for_epochs(run_dir, 1, process)
    deadline = time.monotonic() + 60
    while not (run_dir / "checkpoints" / "last.ckpt").is_file() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum  # as a shell reports it: 130, or 143 for SIGTERM
    # The script as it was typed, and where the best model so far is.
    assert f"resume with: python {shlex.quote(str(ROOT / 'scripts' / 'train.py'))} --resume" in err
    assert "best model so far: " in err and "is written when the run ends" in err
    assert "Traceback" not in err
    # The tool's own words only: not Lightning's about the signal as well.
    assert "Detected KeyboardInterrupt" not in err and "Received SIGTERM" not in err, err
    read_checkpoint(run_dir / "checkpoints" / "last.ckpt")


def test_two_trainings_at_once_use_separate_versions(tiny_tarball, tmp_path):
    cache = tmp_path / "cache"
    runs = [
        start(flags(tiny_tarball, tmp_path, "--max-epochs", "2", "--save", str(tmp_path / name)),
              cache)
        for name in ("best0.ckpt", "best1.ckpt")
    ]  # fmt: skip
    for process in runs:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    versions = sorted(p.name for p in (tmp_path / "lstm").iterdir())
    assert versions == ["version_0", "version_1"]
    for version in versions:
        assert len(history(tmp_path / "lstm" / version)) == 2
        read_checkpoint(tmp_path / "lstm" / version / "checkpoints" / "last.ckpt")
    assert len(list(cache.glob("corpus-*.npz"))) == 1
    assert not list(cache.glob("*.tmp"))


def one_line_error(capsys, code, phrase):
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert phrase in err, err


def test_resume_with_nothing_to_resume(capsys, tmp_path, tiny_tarball):
    code = train_cli.main(flags(tiny_tarball, tmp_path, "--resume"))
    one_line_error(capsys, code, "nothing to resume")


def train_interrupted(tiny_tarball, tmp_path) -> None:
    """train.py, stopped by a Ctrl-C that a test raises: status 130, and SIGINT's handler put
    back (Lightning ignores further Ctrl-Cs after one)."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        assert train_cli.main(flags(tiny_tarball, tmp_path)) == 130
    finally:
        signal.signal(signal.SIGINT, handler)


def ctrl_c_in_epoch_two(monkeypatch) -> None:
    """A Ctrl-C where Lightning meets it, in the second epoch's first step."""
    from imdb_torch.training.module import SentimentClassifier

    step = SentimentClassifier.training_step

    def interrupted(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(SentimentClassifier, "training_step", interrupted)


def test_a_run_interrupted_before_its_first_epoch_leaves_no_directory(
    capsys, tmp_path, tiny_tarball, monkeypatch
):
    from imdb_torch.training.module import SentimentClassifier

    def ctrl_c(self, batch, batch_idx):
        raise KeyboardInterrupt  # where Lightning meets a Ctrl-C in the first step

    monkeypatch.setattr(SentimentClassifier, "training_step", ctrl_c)
    train_interrupted(tiny_tarball, tmp_path)
    assert "nothing to resume" in capsys.readouterr().err
    # Nor an empty experiment folder, for TensorBoard to list: this run was its first.
    assert not (tmp_path / "lstm").exists()


def test_an_interrupted_run_keeps_its_directory_once_an_epoch_is_saved(
    capsys, tmp_path, tiny_tarball, monkeypatch
):
    ctrl_c_in_epoch_two(monkeypatch)
    train_interrupted(tiny_tarball, tmp_path)
    err = capsys.readouterr().err
    assert "interrupted: 1 epoch saved in" in err and "resume with" in err  # counted from the file
    assert (tmp_path / "lstm" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    (best,) = (tmp_path / "lstm" / "version_0" / "checkpoints").glob("best-epoch001-*.ckpt")
    assert (
        f"best model so far: {best} ({tmp_path / 'best.ckpt'} is written when the run ends)" in err
    )


def test_a_ctrl_c_while_the_trainer_is_built_leaves_no_directory(
    capsys, tmp_path, tiny_tarball, monkeypatch
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "prepare", interrupted)
    assert train_cli.main(flags(tiny_tarball, tmp_path)) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not list(tmp_path.glob("lstm/version_*"))


def test_resuming_a_finished_run_draws_a_loss_plot_it_missed(capsys, tmp_path, tiny_tarball):
    # As when an interrupt came after the last epoch, before the run's end drew its plot.
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "2")) == 0
    run_dir = tmp_path / "lstm" / "version_0"
    (run_dir / "loss.png").unlink()
    capsys.readouterr()
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--resume", "--max-epochs", "2")) == 0
    out = capsys.readouterr().out
    assert "has finished" in out and "loss plot:" in out
    assert (run_dir / "loss.png").stat().st_size > 0


def test_resume_refuses_settings_that_do_not_fit(capsys, tmp_path, tiny_tarball):
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    # the preset names the experiment whose newest run continues; matching flags are fine
    resumed = flags(tiny_tarball, tmp_path, "--preset", "lstm", "--resume", "--max-epochs", "2")
    assert train_cli.main([*resumed, "--maxlen", "40"]) == 0
    assert len(history(tmp_path / "lstm" / "version_0")) == 2
    capsys.readouterr()
    code = train_cli.main(flags(tiny_tarball, tmp_path, "--resume", "--maxlen", "50"))
    one_line_error(capsys, code, "--maxlen 50 does not fit")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_from_a_checkpoint_that_would_run_code(capsys, tmp_path, tiny_tarball):
    marker = tmp_path / "pwned"
    evil = tmp_path / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    evil.parent.mkdir(parents=True)
    torch.save({"imdb_torch": {}, "state_dict": {}, "hyper_parameters": _Exploit(marker)}, evil)
    code = train_cli.main(flags(tiny_tarball, tmp_path, "--resume", str(evil)))
    one_line_error(capsys, code, "refusing to load")
    assert not marker.exists()


def test_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, target)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        AtomicCheckpointIO().save_checkpoint({"epoch": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_run_resumed_from_its_checkpoint_alone_keeps_its_epoch_limit(tmp_path, tiny_tarball):
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    last = tmp_path / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["run_settings"]["max_epochs"] == 1
    # As if the run had been started with a limit of 3 and stopped after its first epoch.
    checkpoint["run_settings"]["max_epochs"] = 3
    torch.save(checkpoint, last)
    resumed = ["--resume", str(last), "--no-progress", "--save", str(tmp_path / "resumed.ckpt")]
    assert train_cli.main(resumed) == 0  # patience 6 and no --max-epochs: only the limit stops it
    assert len(history(tmp_path / "lstm" / "version_0")) == 3


def test_an_interrupted_multi_process_run_is_explained_by_its_first_process_alone(
    capsys, tmp_path, tiny_tarball, monkeypatch
):
    """The other processes have no run directory of their own (version_None): before, they
    said "nothing to resume" under the first process's "resume with"."""
    import lightning as L

    ctrl_c_in_epoch_two(monkeypatch)
    # From the end of the first epoch on, this process answers as a second rank would.
    monkeypatch.setattr(L.Trainer, "is_global_zero",
                        property(lambda self: self.current_epoch == 0))  # fmt: skip
    train_interrupted(tiny_tarball, tmp_path)
    err = capsys.readouterr().err
    assert "resume with" not in err and "nothing to resume" not in err
    assert (tmp_path / "lstm" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_a_run_directory_left_with_its_lock_alone_is_removed_once_no_process_holds_it(tmp_path):
    # As a run SIGKILLed before its first checkpoint leaves it (Lightning's launcher kills the
    # first process of a multi-process run when another ends early).
    from imdb_torch.cli import train as train_module
    from imdb_torch.fileio import run_lock

    experiment = tmp_path / "lstm"
    for version in range(4):
        (experiment / f"version_{version}").mkdir(parents=True)
    (experiment / "version_0" / ".lock").write_text("pid 4242")  # its process is gone
    (experiment / "version_2" / ".lock").write_text("")  # a run about to take its lock
    (experiment / "version_3" / ".lock").write_text("pid 4242")
    (experiment / "version_3" / "history.json").write_text("[]")  # more than a lock: kept
    with run_lock(experiment / "version_1"):  # a run starting now, holding its lock
        assert train_module._claim_version(experiment) == 4
    kept = sorted(p.name for p in experiment.iterdir())
    assert kept == ["version_1", "version_2", "version_3", "version_4"]
