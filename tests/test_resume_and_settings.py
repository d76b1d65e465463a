"""Resuming as the README says (relative paths, another working directory, a moved run, one
process at a time), settings refused before any work, and a loss that stops being a number."""

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from imdb_torch.cli import common
from imdb_torch.cli import test as test_cli
from imdb_torch.cli import train as train_cli
from imdb_torch.fileio import run_lock
from imdb_torch.training.module import SentimentClassifier

from .test_reliability import flags, history


def relative_flags(data, *extra):
    return ["--data", str(data), "--maxlen", "40", "--num-words", "30", "--batch-size", "16",
            "--optimizer", "adam", "--lr", "0.002", "--patience", "9", "--seed", "3",
            "--no-progress", "--save", "best.ckpt", *extra]  # fmt: skip


def checkpoint_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_resuming_twice_with_the_default_relative_logdir(tmp_path, tiny_tarball, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(relative_flags(tiny_tarball, "--max-epochs", "1")) == 0
    for epochs in ("2", "3"):
        assert train_cli.main(relative_flags(tiny_tarball, "--resume", "--max-epochs", epochs)) == 0
    run_dir = tmp_path / "lightning_logs" / "lstm" / "version_0"
    assert [row["epoch"] for row in history(run_dir)] == [1, 2, 3]  # no epoch trained twice
    files = checkpoint_files(run_dir)
    assert files.count("last.ckpt") == 1 and not any(f.startswith("last-v") for f in files), files
    assert len([f for f in files if f.startswith("best-")]) == 1, files
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2
    # Filed under Lightning's own name, so checkpoints of plain ModelCheckpoint resume alike.
    assert any(key.startswith("ModelCheckpoint{") for key in last["callbacks"])


def test_only_lightnings_version_names_are_resumed(tmp_path, tiny_tarball, capsys):
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    for name in ("version_0_backup", "version_007"):
        copy = tmp_path / "lstm" / name
        shutil.copytree(tmp_path / "lstm" / "version_0", copy)
        last = copy / "checkpoints" / "last.ckpt"
        code = train_cli.main(["--resume", str(last), "--save", str(tmp_path / "b.ckpt")])
        err = capsys.readouterr().err
        assert code == 2 and "is not inside a run directory" in err


def test_resuming_from_another_directory_and_after_the_run_moved(tmp_path, tiny_tarball,
                                                                   monkeypatch):  # fmt: skip
    assert train_cli.main(flags(tiny_tarball, tmp_path / "a", "--max-epochs", "1")) == 0
    shutil.move(tmp_path / "a", tmp_path / "b")  # the whole log directory moves
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    last = Path("..") / "b" / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    save = ["--save", str(tmp_path / "b" / "best.ckpt")]
    assert train_cli.main(["--resume", str(last), "--max-epochs", "2", *save]) == 0
    assert train_cli.main(["--resume", str(last), "--max-epochs", "3", *save]) == 0
    run_dir = tmp_path / "b" / "lstm" / "version_0"
    assert [row["epoch"] for row in history(run_dir)] == [1, 2, 3]
    files = checkpoint_files(run_dir)
    assert "last.ckpt" in files and not any(f.startswith("last-v") for f in files), files
    assert len([f for f in files if f.startswith("best-")]) == 1, files
    assert not (tmp_path / "a").exists()


def test_a_copied_run_does_not_write_its_best_model_over_the_originals(
    tmp_path, tiny_tarball, monkeypatch, capsys
):
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert train_cli.main(relative_flags(tiny_tarball, "--max-epochs", "1")) == 0
    original = (tmp_path / "a" / "best.ckpt").read_bytes()
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # a copy of the whole project
    monkeypatch.chdir(tmp_path / "b")
    last = "lightning_logs/lstm/version_0/checkpoints/last.ckpt"
    capsys.readouterr()
    assert train_cli.main(["--resume", last, "--max-epochs", "2"]) == 2
    started_in = tmp_path / "a" / "lightning_logs" / "lstm" / "version_0"
    assert f"this run was moved or copied from {started_in}" in capsys.readouterr().err
    assert train_cli.main(["--resume", last, "--max-epochs", "2", "--save", "best.ckpt"]) == 0
    assert (tmp_path / "a" / "best.ckpt").read_bytes() == original  # the original's, as it was
    assert (tmp_path / "b" / "best.ckpt").read_bytes() != original
    # Once resumed where it is, the copy is a run of its own: its --save is recorded again.
    assert train_cli.main(["--resume", last, "--max-epochs", "3"]) == 0

    # Moved away, with another project now where it was: that one's best model is not touched.
    monkeypatch.chdir(tmp_path)
    shutil.move(tmp_path / "a", tmp_path / "moved")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "best.ckpt").write_bytes((tmp_path / "b" / "best.ckpt").read_bytes())
    other = (tmp_path / "a" / "best.ckpt").read_bytes()
    moved_last = tmp_path / "moved" / last
    assert train_cli.main(["--resume", str(moved_last), "--max-epochs", "2"]) == 2
    assert "this run was moved or copied from" in capsys.readouterr().err
    assert (tmp_path / "a" / "best.ckpt").read_bytes() == other


def test_a_run_in_use_is_not_resumed_by_a_second_process(tmp_path, tiny_tarball, capsys):
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    run_dir = tmp_path / "lstm" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with run_lock(run_dir):  # as a first resume would hold it
        code = train_cli.main(["--resume", str(last), "--max-epochs", "2",
                               "--save", str(tmp_path / "b.ckpt")])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "in use by another training" in err
    assert "resuming" not in out  # it was not
    assert last.read_bytes() == before


def test_a_run_is_not_resumed_on_other_reviews(tmp_path, tiny_tarball, capsys):
    """--data may move on --resume; data with another vocabulary would change what every
    index means, and is refused."""
    from .conftest import make_reviews, write_tarball

    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    last = tmp_path / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    other = write_tarball(make_reviews(seed=5, per_folder=10), tmp_path / "other.tar.gz")
    capsys.readouterr()
    code = train_cli.main(["--resume", str(last), "--max-epochs", "2", "--data", str(other),
                           "--save", str(tmp_path / "b.ckpt")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "vocabulary differs" in err, err
    assert last.read_bytes() == before


def test_a_run_is_not_resumed_on_its_reviews_relabelled(tmp_path, tiny_tarball, review_files,
                                                        capsys):  # fmt: skip
    """The same words, the labels swapped: the vocabulary alone cannot tell. The same reviews
    moved elsewhere are the run's data."""
    from .conftest import write_tarball

    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    last = tmp_path / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    swap = {"/pos/": "/neg/", "/neg/": "/pos/"}
    swapped = {re.sub("/(pos|neg)/", lambda m: swap[m.group()], name): text
               for name, text in review_files.items()}  # fmt: skip
    relabelled = write_tarball(swapped, tmp_path / "relabelled.tar.gz")
    capsys.readouterr()
    code = train_cli.main(["--resume", str(last), "--max-epochs", "2", "--data", str(relabelled)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "are not the ones the run was trained on" in err
    moved = shutil.copy(tiny_tarball, tmp_path / "moved.tar.gz")
    code = train_cli.main(["--resume", str(last), "--max-epochs", "2", "--data", str(moved),
                           "--no-progress"])  # fmt: skip
    assert code == 0 and len(history(tmp_path / "lstm" / "version_0")) == 2


def test_data_named_anew_for_a_checkpoint_without_a_digest_is_taken_with_a_word(
    tmp_path, tiny_tarball
):
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    last = tmp_path / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    del checkpoint["IMDBDataModule"]["training_reviews"]  # as imdb-torch 0.3 wrote it
    torch.save(checkpoint, last)
    moved = shutil.copy(tiny_tarball, tmp_path / "moved.tar.gz")
    with pytest.warns(UserWarning, match="holds no digest of its training reviews"):
        code = train_cli.main(["--resume", str(last), "--max-epochs", "2", "--data", str(moved),
                               "--no-progress"])  # fmt: skip
    assert code == 0


def test_resuming_a_finished_run_says_so(tmp_path, tiny_tarball, capsys):
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "2")) == 0
    last = tmp_path / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert train_cli.main(["--resume", str(last), "--save", str(tmp_path / "b.ckpt")]) == 0
    finished, copied = capsys.readouterr().out.strip().splitlines()
    assert "has finished (2 of at most 2 epochs" in finished
    assert train_cli.main(["--resume", str(last), "--max-epochs", "1"]) == 0
    assert "has finished (2 epochs, more than --max-epochs 1" in capsys.readouterr().out
    # --save given again: the best model is copied there too, and nothing is trained.
    assert copied.startswith("best model:") and (tmp_path / "b.ckpt").is_file()


def test_a_resumed_run_copies_its_best_model_where_it_was_started_to(
    tmp_path, tiny_tarball, monkeypatch, capsys
):
    # Started with --save mine.ckpt, resumed from elsewhere without it: the best model goes to
    # mine.ckpt, and the best.ckpt of another experiment in this folder is left alone.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other").mkdir()
    assert train_cli.main(relative_flags(tiny_tarball, "--max-epochs", "1")) == 0  # best.ckpt
    others = (tmp_path / "best.ckpt").read_bytes()
    argv = relative_flags(tiny_tarball, "--arch", "gru", "--max-epochs", "1")
    argv[argv.index("best.ckpt")] = "mine.ckpt"
    assert train_cli.main(argv) == 0
    (tmp_path / "mine.ckpt").unlink()
    monkeypatch.chdir(tmp_path / "other")
    last = tmp_path / "lightning_logs" / "gru" / "version_0" / "checkpoints" / "last.ckpt"
    assert train_cli.main(["--resume", str(last), "--max-epochs", "2", "--no-progress"]) == 0
    assert "best model:  " in capsys.readouterr().out
    assert (tmp_path / "mine.ckpt").is_file() and not (tmp_path / "other" / "best.ckpt").exists()
    assert (tmp_path / "best.ckpt").read_bytes() == others


def test_a_run_stopped_before_copying_its_best_model_copies_it_on_resume(
    tmp_path, tiny_tarball, capsys
):
    # As a run killed after its last checkpoint was written, before the copy to --save.
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "2")) == 0
    (tmp_path / "best.ckpt").unlink()
    last = tmp_path / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    assert train_cli.main(["--resume", str(last)]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    (best,) = (tmp_path / "lstm" / "version_0" / "checkpoints").glob("best-*.ckpt")
    assert (tmp_path / "best.ckpt").read_bytes() == best.read_bytes()


def test_what_a_checkpoint_records_as_its_save_is_used_with_care(tmp_path, tiny_tarball, capsys):
    # A checkpoint may come from someone else: its record names where train.py writes.
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    checkpoints = tmp_path / "lstm" / "version_0" / "checkpoints"
    last = checkpoints / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["save_path"] == str(tmp_path / "best.ckpt")
    capsys.readouterr()
    for recorded, phrase in (
        (str(tmp_path / "authorized_keys"), "no usable --save"),
        (str(tmp_path / "gone" / "b.ckpt"), "whose folder no longer exists"),
    ):
        checkpoint["save_path"] = recorded
        torch.save(checkpoint, last)
        assert train_cli.main(["--resume", str(last), "--max-epochs", "2"]) == 2
        err = capsys.readouterr().err
        assert phrase in err and "resume with --save PATH" in err
    assert not (tmp_path / "authorized_keys").exists()
    # A finished run's best checkpoint is copied only if it is one.
    checkpoint["save_path"] = str(tmp_path / "copy.ckpt")
    torch.save(checkpoint, last)
    (best,) = checkpoints.glob("best-*.ckpt")
    best.write_text("ssh-ed25519 AAAA not a checkpoint")
    assert train_cli.main(["--resume", str(last)]) == 2
    assert not (tmp_path / "copy.ckpt").exists()


def test_a_finished_run_leaves_another_model_at_its_save_and_says_so(tmp_path, tiny_tarball,
                                                                      capsys):  # fmt: skip
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    # Another experiment's best model, at the same --save.
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1", "--arch", "gru")) == 0
    other = (tmp_path / "best.ckpt").read_bytes()
    last = tmp_path / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert train_cli.main(["--resume", str(last)]) == 0
    out = capsys.readouterr().out
    assert "best.ckpt holds another; --save" in out
    assert (tmp_path / "best.ckpt").read_bytes() == other


def test_resuming_an_older_checkpoint_than_the_runs_last_is_refused(tmp_path, tiny_tarball, capsys):
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    checkpoints = tmp_path / "lstm" / "version_0" / "checkpoints"
    shutil.copy(checkpoints / "last.ckpt", checkpoints / "old.ckpt")
    assert train_cli.main(["--resume", str(checkpoints / "last.ckpt"), "--max-epochs", "2"]) == 0
    before = sorted(p.name for p in checkpoints.iterdir())
    capsys.readouterr()
    assert train_cli.main(["--resume", str(checkpoints / "old.ckpt"), "--max-epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "old.ckpt holds 1 epoch, the run's last.ckpt 2" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in checkpoints.iterdir()) == before


@pytest.mark.parametrize(
    ("save", "made"),
    [("logs", None), ("logs/lstm", "logs"), ("logs/lstm/b.ckpt", "logs/lstm")],
    ids=["the log directory", "the experiment's", "a file in the experiment's"],
)
def test_save_cannot_be_where_the_logs_go(tmp_path, tiny_tarball, capsys, save, made):
    # Else a whole run trains, and then cannot copy its best model (or copies it among runs).
    logs = tmp_path / "logs"
    if made:
        (tmp_path / made).mkdir(parents=True)
    argv = flags(tiny_tarball, tmp_path, "--max-epochs", "1")
    argv[argv.index("--logdir") + 1] = str(logs)
    argv[argv.index("--save") + 1] = str(tmp_path / save)
    assert train_cli.main(argv) == 2
    assert "that is where the logs go" in capsys.readouterr().err
    assert not any(logs.rglob("version_*")) if logs.exists() else True


def test_temporary_files_of_a_killed_run_are_cleared_on_resume(tmp_path, tiny_tarball):
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    checkpoints = tmp_path / "lstm" / "version_0" / "checkpoints"
    orphan = checkpoints / ".last.ckpt.x1y2z3.tmp"  # as atomic_path names them
    orphan.write_bytes(b"half a checkpoint")
    assert train_cli.main(["--resume", str(checkpoints / "last.ckpt"), "--max-epochs", "2",
                           "--save", str(tmp_path / "b.ckpt")]) == 0  # fmt: skip
    assert not orphan.exists()


@pytest.mark.parametrize(
    ("flag", "value", "phrase"),
    [
        ("--lr", "nan", "--lr must be a finite number"),
        ("--lr", "inf", "--lr must be a finite number"),
        ("--lr", "100", "--lr must be at most 10"),
        ("--ngram-lr", "1e39", "--ngram-lr must be at most 10"),
        ("--grad-clip", "nan", "--grad-clip must be a finite number"),
        ("--dropout", "nan", "--dropout must be a finite number"),
        ("--ema", "nan", "--ema must be a finite number"),
        ("--val-size", "nan", "--val-size must be a finite number"),
        ("--val-size", "0.99999", "leaves"),
        ("--seed", "-1", "--seed must be a whole number from 0"),
        ("--seed", str(2**32), "--seed must be a whole number from 0"),
        ("--split-seed", "-5", "--split-seed must be a whole number from 0"),
        ("--num-workers", "-1", "--num-workers must be a whole number from 0"),
        ("--num-layers", "1000000", "--num-layers must be a whole number from 1 to 16"),
        ("--accelerator", "banana", "--accelerator 'banana': choose from"),
        ("--accelerator", "gpu", "no CUDA GPU is available here"),
        ("--precision", "8-bit", "--precision '8-bit': choose from"),
        ("--precision", "16-mixed", "--precision 16-mixed needs a GPU"),
        ("--precision", "bf16-mixed", "--precision bf16-mixed needs a GPU"),
        ("--devices", "two", "--devices 'two'"),
        ("--devices", "0", "--devices '0'"),
        ("--devices", "-1", "--devices -1: on the CPU give a number of processes"),
        ("--devices", "0,1", "--devices 0,1: on the CPU give a number of processes"),
        ("--strategy", "nope", "--strategy 'nope'"),
        ("--strategy", "ddp_fork", "use --strategy ddp"),  # its workers keep the history
        ("--strategy", "fsdp", "requires a GPU accelerator"),  # refused by Lightning itself
        ("--strategy", "deepspeed", "--strategy deepspeed"),  # a package not installed
        ("--accelerator", "tpu", "--accelerator tpu"),  # listed, but no TPU here
        ("--name", "../escape", "--name '../escape': give a plain name"),
        ("--name", "a\nb", "--name 'a\\nb': give a plain name"),
        ("--name", "version_1", "--name version_1: version_N names the runs' own folders"),
        ("--seed", "abc", "expected a whole number, got 'abc'"),
        ("--num-nodes", "2", "none is set here"),  # not a wait for machines that never come
        ("--num-nodes", "99999999999999999999", "at most"),
    ],
)
def test_bad_values_are_one_line_errors_before_any_work(tmp_path, tiny_tarball, capsys, flag,
                                                        value, phrase, monkeypatch):  # fmt: skip
    if torch.cuda.is_available() and value == "gpu":
        pytest.skip("this machine has a GPU")
    from imdb_torch.cli.common import CLUSTER_VARIABLES

    for name in CLUSTER_VARIABLES:  # this machine alone, whatever runs the tests
        monkeypatch.delenv(name, raising=False)
    logdir = tmp_path / "logs"  # not made yet: a run directory in it would be a leftover
    args = relative_flags(tiny_tarball, "--logdir", str(logdir), "--save", str(tmp_path / "b.ckpt"))
    try:
        code = train_cli.main([*args, flag, value])
    except SystemExit as exit_info:  # argparse's own one-line errors
        code = exit_info.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert phrase in err, err
    assert not logdir.exists() or not any(logdir.rglob("version_*")), "a run directory was made"


def test_a_logdir_that_is_a_file(tmp_path, tiny_tarball, capsys):
    (tmp_path / "logs").write_text("not a directory")
    code = train_cli.main(flags(tiny_tarball, tmp_path, "--logdir", str(tmp_path / "logs")))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is a file, not a directory" in err


@pytest.mark.parametrize(
    ("extra", "remedy"),
    [([], "a smaller --lr or --grad-clip"),
     (["--ngrams", "2"], "a smaller --lr, --ngram-lr or --grad-clip")],  # its own rate
)  # fmt: skip
def test_a_loss_that_becomes_nan_stops_the_run_and_keeps_the_best(
    tmp_path, tiny_tarball, capsys, monkeypatch, extra, remedy
):
    step = SentimentClassifier.training_step

    def breaks_in_epoch_3(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        return loss * float("nan") if self.current_epoch == 2 else loss

    monkeypatch.setattr(SentimentClassifier, "training_step", breaks_in_epoch_3)
    code = train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "5", *extra))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "train_loss became nan in epoch 3" in err and remedy in err
    assert "best checkpoint so far is kept" in err
    (run_dir,) = tmp_path.glob("*/version_0")
    assert [row["epoch"] for row in history(run_dir)] == [1, 2]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1  # the last finite epoch
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    weights = torch.load(best, weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_files_get_the_users_permissions(tmp_path, tiny_tarball):
    previous = os.umask(0o022)
    try:
        assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    finally:
        os.umask(previous)
    run_dir = tmp_path / "lstm" / "version_0"
    for path in [tmp_path / "best.ckpt", run_dir / "history.json", run_dir / "loss.png",
                 run_dir / "checkpoints" / "last.ckpt"]:  # fmt: skip
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_a_full_disk_is_found_before_training(tmp_path, tiny_tarball, capsys, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=10_000))
    code = train_cli.main(flags(tiny_tarball, tmp_path / "logs"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "bytes are free" in err
    assert not any((tmp_path / "logs").rglob("version_*"))


def test_a_disk_that_fills_while_saving_is_one_line(tmp_path, tiny_tarball, capsys, monkeypatch):
    from imdb_torch.training.checkpoint import AtomicCheckpointIO

    def full(self, checkpoint, path, storage_options=None):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", full)
    code = train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "the disk is full" in err
    # The first epoch's checkpoint failed: nothing to resume, and no empty run directory.
    assert err.endswith("no epoch was saved: free some space and start the run again"), err
    assert not (tmp_path / "lstm").exists()

    # A writer's staging copy in the system's temporary folder is not named: the run is.
    def full_while_staging(self, checkpoint, path, storage_options=None):
        raise OSError(28, "No space left on device", tempfile.mktemp())

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", full_while_staging)
    code = train_cli.main(flags(tiny_tarball, tmp_path / "b", "--max-epochs", "1"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"the disk is full (while saving in {tmp_path / 'b'}" in err, err

    # Once an epoch is saved, the run is left to resume.
    monkeypatch.undo()
    assert train_cli.main(flags(tiny_tarball, tmp_path / "c", "--max-epochs", "1")) == 0
    last = tmp_path / "c" / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", full)
    code = train_cli.main(["--resume", str(last), "--max-epochs", "2",
                           "--save", str(tmp_path / "c.ckpt")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("intact: free some space and continue with --resume"), err


def test_history_json_is_valid_after_resume(tmp_path, tiny_tarball):
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    rows = json.loads((tmp_path / "lstm" / "version_0" / "history.json").read_text())
    assert rows[0]["epoch"] == 1


def test_a_resumed_run_says_when_its_test_result_is_not_of_the_best_model(
    tmp_path, tiny_tarball, capsys
):
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    out = capsys.readouterr().out
    assert "test it:     python scripts/test.py --ckpt " in out and "test.json" not in out
    run_dir = tmp_path / "lstm" / "version_0"
    # As test.py records it, of a model that is not the best once the run has gone on.
    assert test_cli.main(["--ckpt", str(tmp_path / "best.ckpt"), "--no-progress"]) == 0
    record = json.loads((run_dir / "test.json").read_text())
    (run_dir / "test.json").write_text(json.dumps({**record, "epoch": 7}))
    last = run_dir / "checkpoints" / "last.ckpt"
    assert train_cli.main(["--resume", str(last), "--max-epochs", "2", "--no-progress"]) == 0
    assert "(the run's test.json is of epoch 7's model, not the best)" in capsys.readouterr().out


def test_every_epoch_is_saved_for_resume_not_only_the_improving_ones(tmp_path, tiny_tarball):
    # Lightning's save_last writes last.ckpt only where it writes a best checkpoint (since
    # 2.6): a run whose later epochs do not improve would resume from its best, train those
    # epochs again, and a finished run would not be seen to have finished.
    argv = flags(tiny_tarball, tmp_path, "--lr", "10", "--max-epochs", "5", "--patience", "5")
    assert train_cli.main(argv) == 0
    run_dir = tmp_path / "lstm" / "version_0"
    rows = json.loads((run_dir / "history.json").read_text())
    best = min(rows, key=lambda row: row["val_loss"])["epoch"]
    assert best < len(rows) == 5  # the last epochs did not improve: what this test is about
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] + 1 == 5
    assert [p.name for p in (run_dir / "checkpoints").glob("last*")] == ["last.ckpt"]
    # The finished run is seen to be finished; its best model, lost, is copied from the best
    # epoch's checkpoint, not from last.ckpt.
    (tmp_path / "best.ckpt").unlink()
    code = train_cli.main(["--resume", str(run_dir / "checkpoints" / "last.ckpt"), "--no-progress"])
    assert code == 0 and json.loads((run_dir / "history.json").read_text()) == rows
    assert torch.load(tmp_path / "best.ckpt", weights_only=True)["epoch"] + 1 == best


def test_a_run_whose_last_checkpoint_is_behind_its_history_says_so(tmp_path, tiny_tarball):
    # As imdb-torch 0.3 left a run whose last epochs did not improve: last.ckpt at the best.
    argv = flags(tiny_tarball, tmp_path, "--lr", "10", "--max-epochs", "5", "--patience", "5")
    assert train_cli.main(argv) == 0
    run_dir = tmp_path / "lstm" / "version_0"
    rows = json.loads((run_dir / "history.json").read_text())
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    checkpoint = torch.load(best, weights_only=True)
    del checkpoint["processes"]  # as 0.3 wrote them
    torch.save(checkpoint, run_dir / "checkpoints" / "last.ckpt")
    epochs = checkpoint["epoch"] + 1
    assert epochs < 4  # more than one epoch behind: what this test is about
    said = (f"history.json holds 5 epochs, its last checkpoint {epochs} (imdb-torch 0.3 saved "
            f"last.ckpt only in epochs that improved): epochs {epochs + 1} to 5 are trained "
            "again")  # fmt: skip
    with pytest.warns(UserWarning, match=re.escape(said)):
        code = train_cli.main(["--resume", str(run_dir / "checkpoints" / "last.ckpt"),
                               "--no-progress"])  # fmt: skip
    assert code == 0
    # The same seed's generators: the same epochs again.
    again = json.loads((run_dir / "history.json").read_text())
    assert [row["val_loss"] for row in again] == pytest.approx([row["val_loss"] for row in rows])


def test_the_best_checkpoint_is_the_one_that_monitors_the_validation_loss(tmp_path):
    from imdb_torch.cli.resume import _best_checkpoint

    (tmp_path / "checkpoints").mkdir()
    for name in ("last.ckpt", "best-epoch002-val_loss0.5000.ckpt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"")
    checkpoint = {"callbacks": {  # the last epoch's callback first: its "best" is the newest
        "ModelCheckpoint{'monitor': None}": {"monitor": None, "best_model_path": "x/last.ckpt"},
        "ModelCheckpoint{'monitor': 'val_loss'}": {
            "monitor": "val_loss", "best_model_path": "x/best-epoch002-val_loss0.5000.ckpt"},
    }}  # fmt: skip
    best = _best_checkpoint(tmp_path, checkpoint)
    assert best == tmp_path / "checkpoints" / "best-epoch002-val_loss0.5000.ckpt"


def test_stale_temporary_files_in_the_cache_are_cleared(tmp_path, tiny_tarball, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("IMDB_TORCH_CACHE", str(cache))
    stale, fresh = cache / ".corpus-a.npz.1.tmp", cache / ".corpus-b.npz.2.tmp"
    for path in (stale, fresh):
        path.write_bytes(b"half written")
    os.utime(stale, (1, 1))  # left by a run killed long ago
    assert train_cli.main(flags(tiny_tarball, tmp_path / "logs", "--max-epochs", "1")) == 0
    assert not stale.exists() and fresh.exists()  # another run may still be writing that one


def test_a_logdir_below_a_file(tmp_path, tiny_tarball, capsys):
    (tmp_path / "afile").write_text("not a directory")
    below = str(tmp_path / "afile" / "sub")
    code = train_cli.main(flags(tiny_tarball, tmp_path, "--logdir", below))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "afile is a file, not a directory" in err


def test_a_place_that_cannot_be_written_is_refused_before_training(
    tmp_path, tiny_tarball, capsys, monkeypatch
):
    # Found when the run starts, not after it has trained (running as root, chmod would not
    # stop the writes: the file system's refusal is simulated).
    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(common.tempfile, "TemporaryFile", read_only)
    code = train_cli.main(flags(tiny_tarball, tmp_path / "logs"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "cannot write in" in err and "Read-only file system" in err
    assert not any((tmp_path / "logs").rglob("version_*")), "a run directory was made"


def test_resume_with_an_empty_path_is_refused(tmp_path, tiny_tarball, capsys):
    # e.g. --resume "$CKPT" with CKPT unset: not a new run that overwrites --save.
    with pytest.raises(SystemExit) as stopped:  # refused as the flags are parsed, as argparse does
        train_cli.main(flags(tiny_tarball, tmp_path, "--resume", ""))
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and "--resume" in err and "Traceback" not in err
    assert not (tmp_path / "lstm").exists()


@pytest.mark.parametrize(
    "extra, phrase",
    [
        (["--preset", "gru"], "resume without --preset"),
        (["--name", "other"], "resume without --name"),
        (["--logdir", "ELSEWHERE"], "resume without --logdir"),
    ],
)
def test_resume_from_a_checkpoint_refuses_flags_naming_another_run(
    tmp_path, tiny_tarball, capsys, extra, phrase
):
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    last = tmp_path / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    extra = [str(tmp_path / "elsewhere") if arg == "ELSEWHERE" else arg for arg in extra]
    capsys.readouterr()
    code = train_cli.main(["--resume", str(last), "--max-epochs", "2", "--no-progress",
                           "--save", str(tmp_path / "b.ckpt"), *extra])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and phrase in err, err
    assert len(history(tmp_path / "lstm" / "version_0")) == 1
    assert not (tmp_path / "elsewhere").exists()
    # The run's own directory, named as it is, is no mistake.
    same = ["--logdir", str(tmp_path), "--name", "lstm"]
    code = train_cli.main(["--resume", str(last), "--max-epochs", "2", "--no-progress",
                           "--save", str(tmp_path / "b.ckpt"), *same])  # fmt: skip
    assert code == 0 and len(history(tmp_path / "lstm" / "version_0")) == 2


def test_an_empty_logdir_is_refused(tmp_path, tiny_tarball, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an empty path would have put the run
    code = train_cli.main(flags(tiny_tarball, tmp_path / "logs", "--logdir", ""))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--logdir ''" in err, err
    assert not (tmp_path / "lstm").exists()


def test_save_replaces_a_checkpoint_but_nothing_else(tmp_path, tiny_tarball, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    args = [*relative_flags(tiny_tarball, "--logdir", str(tmp_path / "logs")), "--max-epochs", "1"]
    code = train_cli.main([*args, "--save", str(notes)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is not a checkpoint" in err, err
    assert notes.read_text() == "precious"
    assert not any((tmp_path / "logs").rglob("version_*"))
    # Nor a file torch.save wrote that is not a checkpoint of these tools, nor a pipe (which
    # would be waited on for good if it were opened).
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    below_a_file = notes / "best.ckpt"
    for other, phrase in ((tensor, "is not a checkpoint"), (fifo, "not a regular file"),
                          (below_a_file, "notes.txt is a file, not a directory")):  # fmt: skip
        code = train_cli.main([*args, "--save", str(other)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and phrase in err, err
    assert torch.load(tensor).tolist() == [0, 0, 0]
    # An earlier run's best model at the same place is replaced, as Keras replaces its .h5.
    best = tmp_path / "best.ckpt"
    assert train_cli.main([*args, "--save", str(best)]) == 0
    first = best.read_bytes()
    assert train_cli.main([*args, "--save", str(best), "--seed", "4"]) == 0
    assert best.read_bytes() != first


def test_a_cache_dir_that_is_a_file(tmp_path, tiny_tarball, capsys):
    cache = tmp_path / "cache_file"
    cache.write_text("not a directory")
    args = relative_flags(tiny_tarball, "--logdir", str(tmp_path / "logs"))
    args += ["--cache-dir", str(cache)]
    code = train_cli.main([*args, "--save", str(tmp_path / "b.ckpt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is a file" in err, err
    assert cache.read_text() == "not a directory"


def test_run_leaves_other_broken_pipes_and_pythons_warnings_as_they_were():
    import warnings

    from imdb_torch.cli.common import run

    def broken(argv):
        raise BrokenPipeError  # not standard output's reader: a fault, not `| head`

    before = warnings.formatwarning
    with pytest.raises(BrokenPipeError):
        run(broken, [], "train.py")
    assert warnings.formatwarning is before


def test_warnings_are_one_line_without_source_lines():
    import subprocess
    import sys

    code = (
        "import warnings\n"
        "from imdb_torch.cli.common import run\n"
        "run(lambda argv: warnings.warn('the data loader may be slow'), [], 'train.py')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.stderr == "train.py: warning: the data loader may be slow\n"


def test_a_checkpoint_whose_callback_states_are_not_a_table_is_read_without_them(
    tmp_path, tiny_tarball, capsys
):
    assert train_cli.main(flags(tiny_tarball, tmp_path, "--max-epochs", "1")) == 0
    last = tmp_path / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["callbacks"] = ["not", "a", "table"]
    torch.save(checkpoint, last)
    capsys.readouterr()
    assert train_cli.main(["--resume", str(last)]) == 0
    assert "has finished (1 of at most 1 epochs" in capsys.readouterr().out
