"""What the tools are handed, checked rather than trusted: damaged and crafted checkpoints,
devices and pipes as data, archives and npz files that would unpack to far more than they
hold, text that is not UTF-8, results files that are not what they claim."""

import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from imdb_torch.cli import compare as compare_cli
from imdb_torch.cli import predict as predict_cli
from imdb_torch.cli import reproduce as reproduce_cli
from imdb_torch.cli import test as test_cli
from imdb_torch.cli import train as train_cli
from imdb_torch.data import imdb_archive
from imdb_torch.data.corpus import load_corpus, resolve_source
from imdb_torch.data.keras_npz import read_imdb_npz
from imdb_torch.errors import UserError
from imdb_torch.training.checkpoint import model_from_checkpoint, read_checkpoint

from .conftest import make_reviews, write_tarball

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_tarball):
    tmp_path = tmp_path_factory.mktemp("trained")
    argv = ["--data", str(tiny_tarball), "--maxlen", "20", "--num-words", "30", "--arch", "gru",
            "--optimizer", "adam", "--lr", "0.02", "--batch-size", "16", "--max-epochs", "2",
            "--no-progress", "--logdir", str(tmp_path / "logs"),
            "--save", str(tmp_path / "best.ckpt")]  # fmt: skip
    assert train_cli.main(argv) == 0
    return tmp_path


def one_line(capsys, code, phrase):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert phrase in err, err


def rewritten(source: Path, target: Path, change) -> Path:
    """A copy of the checkpoint at ``source`` with ``change(contents)`` applied."""
    contents = torch.load(source, weights_only=True)
    change(contents)
    torch.save(contents, target)
    return target


# Checkpoints


def test_a_flipped_byte_in_the_weights_is_found(trained, tmp_path, capsys):
    data = bytearray((trained / "best.ckpt").read_bytes())
    with zipfile.ZipFile(trained / "best.ckpt") as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 64)
    with open(trained / "best.ckpt", "rb") as handle:  # the local header's own lengths
        handle.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(handle.read(4), dtype="<u2")
    offset = info.header_offset + 30 + int(name_length) + int(extra_length) + info.file_size // 2
    data[offset] ^= 0xFF
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(bytes(data))
    one_line(capsys, test_cli.main(["--ckpt", str(damaged)]), "fails its checksum")


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        (
            lambda c: c["hyper_parameters"]["model"].update(num_layers="2"),
            "--num-layers must be int",
        ),
        (lambda c: c["hyper_parameters"]["model"].update(num_layers=10**6), "from 1 to 16"),
        (lambda c: c["hyper_parameters"]["model"].update(colour="blue"), "does not fit"),
        (lambda c: c["hyper_parameters"].update(model=[1, 2]), "does not fit"),
        # Settings that do not fit the weights: PyTorch's list of every mismatch, cut to one.
        (lambda c: c["hyper_parameters"]["model"].update(hidden_size=9), "size mismatch for"),
        (lambda c: c["hyper_parameters"]["optim"].update(lr=float("nan")), "--lr must be a finite"),
        (lambda c: c["state_dict"]["net.head.bias"].fill_(float("nan")), "NaN or infinite"),
        (lambda c: c.update(state_dict={"net.head.bias": "zero"}), "is not a tensor"),
        (lambda c: c["datamodule_hyper_parameters"].update(maxlen=-4), "data settings are invalid"),
        (lambda c: c["datamodule_hyper_parameters"].update(shell="rm"), "unknown keys"),
        (lambda c: c["IMDBDataModule"].update(words=[1, 2]), "vocabulary is not a list of words"),
    ],
)
def test_crafted_checkpoints_are_refused_in_one_line(trained, tmp_path, capsys, change, phrase):
    crafted = rewritten(trained / "best.ckpt", tmp_path / "crafted.ckpt", change)
    one_line(capsys, test_cli.main(["--ckpt", str(crafted)]), phrase)
    one_line(capsys, predict_cli.main(["--ckpt", str(crafted), "a fine film"]), phrase)


def test_a_pipe_given_as_a_checkpoint_is_named_for_what_it_is(tmp_path, capsys):
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    one_line(capsys, predict_cli.main(["--ckpt", str(fifo), "a fine film"]), "not a regular file")


def test_a_checkpoint_without_an_epoch_is_not_resumed(trained, tmp_path, capsys):
    last = next((trained / "logs").rglob("last.ckpt"))
    crafted = tmp_path / "gru" / "version_0" / "checkpoints" / "last.ckpt"
    crafted.parent.mkdir(parents=True)
    rewritten(last, crafted, lambda c: c.pop("epoch"))
    code = train_cli.main(["--resume", str(crafted), "--save", str(tmp_path / "x.ckpt")])
    one_line(capsys, code, "records no finished epoch")


def test_a_checkpoint_naming_another_run_does_not_make_test_write_there(trained, tmp_path):
    victim = tmp_path / "victim" / "version_0"
    victim.mkdir(parents=True)

    def point_elsewhere(contents):
        for key, state in contents["callbacks"].items():
            if "Checkpoint" in key:
                state["dirpath"] = str(victim / "checkpoints")

    crafted = rewritten(trained / "best.ckpt", tmp_path / "crafted.ckpt", point_elsewhere)
    assert test_cli.main(["--ckpt", str(crafted)]) == 0
    assert not (victim / "test.json").exists()


def test_test_json_records_the_data_and_is_kept_from_other_data(trained, tmp_path, capsys):
    run_dir = next((trained / "logs").glob("gru/version_0"))
    assert test_cli.main(["--ckpt", str(trained / "best.ckpt")]) == 0
    record = json.loads((run_dir / "test.json").read_text())
    assert len(record["data_sha256"]) == 64 and record["data"].endswith(".tar.gz")
    other = write_tarball(make_reviews(seed=9), tmp_path / "other.tar.gz")
    capsys.readouterr()
    # Other reviews with the same vocabulary still evaluate; the run's own result stays.
    code = test_cli.main(["--ckpt", str(trained / "best.ckpt"), "--data", str(other)])
    if code == 0:
        assert "left as it was" in capsys.readouterr().err
    assert json.loads((run_dir / "test.json").read_text()) == record


# Data


def test_a_pipe_or_a_device_as_data_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "train.py"), "--data", str(path),
             "--logdir", str(tmp_path / "logs"), "--save", str(tmp_path / "b.ckpt")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "neither a regular file nor a directory" in done.stderr
        assert "Traceback" not in done.stderr


def bomb(path: Path, size: int, name="aclImdb/train/pos/0_9.txt") -> Path:
    """A gzip'd tar whose one member unpacks to ``size`` zero bytes."""
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.size = size
        archive.addfile(info, io.BytesIO(bytes(size)))
    return path


def test_an_archive_that_would_unpack_to_far_more_is_refused(tmp_path, monkeypatch):
    big_review = bomb(tmp_path / "review.tar.gz", 3 * 2**20)
    with pytest.raises(UserError, match="far more than a review"):
        load_corpus(resolve_source(str(big_review)), tmp_path / "cache")
    monkeypatch.setattr(imdb_archive, "MAX_ARCHIVE_BYTES", 2**20)  # as if 1 MB were too much
    big_member = bomb(tmp_path / "member.tar.gz", 2 * 2**20, name="aclImdb/README")
    with pytest.raises(UserError, match="unpacks to more than"):
        load_corpus(resolve_source(str(big_member)), tmp_path / "cache")


def test_the_cache_grows_with_the_data_not_with_its_longest_word(tmp_path):
    reviews = make_reviews(seed=1)
    reviews["aclImdb/train/pos/999_9.txt"] = "great " + "x" * 100_000
    archive = write_tarball(reviews, tmp_path / "long.tar.gz")
    corpus = load_corpus(resolve_source(str(archive)), tmp_path / "cache")
    assert "x" * 100_000 in corpus.words
    (cache_file,) = (tmp_path / "cache").glob("corpus-*.npz")
    assert cache_file.stat().st_size < 200_000  # a fixed-width array: over 100 MB
    again = load_corpus(resolve_source(str(archive)), tmp_path / "cache")
    assert again.words == corpus.words


@pytest.mark.parametrize("length", [10**10, 10**30])
def test_an_npz_header_claiming_more_than_the_file_holds(tmp_path, length):
    path = tmp_path / "imdb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("x_train", "y_train", "x_test", "y_test"):
            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                buffer, {"descr": "<i8", "fortran_order": False, "shape": (length,)}
            )
            archive.writestr(name + ".npy", buffer.getvalue() + bytes(16))
    with pytest.raises(UserError, match="header claims more data"):
        read_imdb_npz(path)


# Text in and out of predict.py


def test_text_that_is_not_utf8_reads_alike_from_stdin_and_file(trained, tmp_path):
    data = b"a fine film \xff\xfe with a plot\nline two\x0cstill two\xe2\x80\xa8also two\n"
    (tmp_path / "reviews.txt").write_bytes(data)
    ckpt = str(trained / "best.ckpt")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "ascii"}
    outputs = []
    for extra, stdin in ((["--file", str(tmp_path / "reviews.txt")], None), ([], data)):
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "predict.py"), "--ckpt", ckpt, "--json",
             *extra], input=stdin, capture_output=True, timeout=120, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    records = [json.loads(line) for line in outputs[0].decode("ascii").splitlines()]
    assert len(records) == 2  # reviews split at newlines only
    assert "\ufffd" in records[0]["text"] and "\x0c" in records[1]["text"]


def test_an_empty_input_is_no_reviews_not_a_blank_one(trained, tmp_path, capsys):
    (tmp_path / "empty.txt").write_bytes(b"")
    code = predict_cli.main(["--ckpt", str(trained / "best.ckpt"), "--file",
                             str(tmp_path / "empty.txt")])  # fmt: skip
    one_line(capsys, code, "no reviews to classify")


def test_control_characters_are_shown_escaped_in_the_table(trained, capsys):
    code = predict_cli.main(["--ckpt", str(trained / "best.ckpt"), "great\x1b[31m film\x07"])
    out = capsys.readouterr().out
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "\\x1b[31m" in out


# The other tools


def test_compare_meets_malformed_files_and_stray_directories(trained, tmp_path, capsys):
    experiment = tmp_path / "logs" / "gru"
    (experiment / "version_0_backup").mkdir(parents=True)
    (experiment / "version_0_backup" / "history.json").write_text("[]")
    good = experiment / "version_1"
    good.mkdir()
    (good / "history.json").write_text(json.dumps([{"epoch": 1, "val_loss": 0.5}]))
    assert compare_cli.main([str(experiment), "--out", str(tmp_path / "c.png")]) == 0
    capsys.readouterr()
    (good / "history.json").write_text('{"epoch": "one"}')
    one_line(capsys, compare_cli.main([str(good), "--out", str(tmp_path / "c.png")]),
             "not a history of epochs")  # fmt: skip
    (good / "history.json").write_bytes(b"\xff\xfe")
    one_line(capsys, compare_cli.main([str(good), "--out", str(tmp_path / "c.png")]),
             "cannot read")  # fmt: skip
    (good / "history.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line(capsys, compare_cli.main([str(good), "--out", str(tmp_path / "c.png")]),
             "nested too deeply")  # fmt: skip
    (good / "history.json").write_text(json.dumps([{"epoch": 1, "val_loss": 0.5}]))
    # A damaged test result leaves its run in the comparison, without a test accuracy.
    for damaged in ('{"test_acc": "high"}', ""):
        (good / "test.json").write_text(damaged)
        with pytest.warns(UserWarning, match="test.json.*left out"):
            assert compare_cli.main([str(good), "--out", str(tmp_path / "c.png")]) == 0
        row = capsys.readouterr().out.splitlines()[1]
        assert row.startswith("gru/version_1") and row.split()[-1] == "-"
    one_line(capsys, compare_cli.main([str(good), "--out", str(tmp_path)]), "is a directory")


def test_reproduce_meets_malformed_records_and_damaged_checkpoints(tiny_tarball, tmp_path,
                                                                   capsys):  # fmt: skip
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    argv = ["--data", str(tiny_tarball), "--experiments", "gru", "--seeds", "1",
            "--max-epochs", "1", "--out", str(out), "--no-progress"]  # fmt: skip
    (out / "runs" / "imdb-torch-gru-seed1.json").write_text("{not json")
    one_line(capsys, reproduce_cli.main(argv), "cannot read")
    (out / "runs" / "imdb-torch-gru-seed1.json").unlink()
    last = out / "lightning_logs" / "gru" / "version_1" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 truncated")
    one_line(capsys, reproduce_cli.main(argv), "not a readable checkpoint")


def test_model_from_a_checkpoint_with_non_finite_weights_is_refused(trained, tmp_path):
    def infinite(contents):
        contents["state_dict"]["net.head.weight"].fill_(float("inf"))

    crafted = rewritten(trained / "best.ckpt", tmp_path / "inf.ckpt", infinite)
    with pytest.raises(UserError, match="NaN or infinite"):
        model_from_checkpoint(read_checkpoint(crafted))
