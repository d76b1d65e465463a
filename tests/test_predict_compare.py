"""predict.py and compare.py on a tiny model trained here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imdb_torch.cli import compare as compare_cli
from imdb_torch.cli import predict as predict_cli
from imdb_torch.cli import test as test_cli
from imdb_torch.cli import train as train_cli
from imdb_torch.data.datamodule import IMDBDataModule
from imdb_torch.data.sequences import RaggedSequences, pad_sequences
from imdb_torch.data.text import encode, tokenize
from imdb_torch.predictor import Prediction, Predictor
from imdb_torch.training.checkpoint import datamodule_settings, read_checkpoint

from .conftest import make_reviews, write_tarball

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_tarball):
    tmp_path = tmp_path_factory.mktemp("runs")
    common = ["--data", str(tiny_tarball), "--maxlen", "20", "--num-words", "30",
              "--optimizer", "adam", "--lr", "0.02", "--batch-size", "16", "--no-progress",
              "--logdir", str(tmp_path / "logs")]  # fmt: skip
    for arch in ("gru", "lstm"):
        argv = [
            *common,
            "--arch",
            arch,
            "--max-epochs",
            "4",
            "--save",
            str(tmp_path / f"{arch}.ckpt"),
        ]
        assert train_cli.main(argv) == 0
    return tmp_path


def test_predict_classifies_texts_from_arguments(runs, capsys):
    code = predict_cli.main(["--ckpt", str(runs / "gru.ckpt"), "A wonderful, brilliant film!",
                             "   ", "Awful and boring, I hated it."])  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["review", "positive", "label", "known"]
    # Each row names its review by its place among the arguments, the blank one counted.
    assert [line.split()[0] for line in lines[1:]] == ["1", "3"]
    assert lines[1].split()[2] == "positive" and lines[2].split()[2] == "negative"
    assert float(lines[1].split()[1]) > 0.5 > float(lines[2].split()[1])


def test_predict_json_from_file_skips_blank_lines(runs, tmp_path, capsys):
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("excellent superb movie\n\n   \nterrible dull plot\nЭто фильм\n")
    assert predict_cli.main(["--ckpt", str(runs / "gru.ckpt"), "--file", str(reviews),
                             "--json"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["label"] for r in records[:2]] == ["positive", "negative"]
    assert records[2]["known_words"] == 0 and records[2]["words"] == 2  # unknown words only
    assert 0 <= records[2]["positive"] <= 1
    assert "skipped 2 blank" in captured.err
    # Each result names its line in the file, blank lines counted, as does its warning.
    assert [r["number"] for r in records] == [1, 4, 5]
    assert "line 5: no word the model knows" in captured.err


def test_predict_reads_standard_input(runs):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "predict.py"), "--ckpt", str(runs / "gru.ckpt")],
        input="loved it, great film\n", capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "positive" in result.stdout.splitlines()[1]


def test_predict_reads_standard_input_as_file_dash_and_says_when_it_is_closed(runs):
    predict = [sys.executable, str(ROOT / "scripts" / "predict.py"), "--ckpt",
               str(runs / "gru.ckpt")]  # fmt: skip
    result = subprocess.run([*predict, "--file", "-"], input="loved it, great film\n",
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and "positive" in result.stdout.splitlines()[1]
    for closed, phrase in (("stdin", "standard input is closed"),
                           ("stdout", "standard output is closed")):  # fmt: skip
        result = subprocess.run(
            predict, capture_output=closed == "stdin", text=True, timeout=120,
            stdin=subprocess.DEVNULL if closed == "stdout" else None,
            stderr=subprocess.PIPE if closed == "stdout" else None,
            # The descriptor closed as the shell's <&- and >&- close it.
            preexec_fn=lambda fd=(0 if closed == "stdin" else 1): os.close(fd),
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == f"predict.py: error: {phrase}" + (
            ": give reviews as arguments or --file"
            if closed == "stdin"
            else ": nowhere to print the results"
        )


def test_a_tool_whose_output_finds_no_room_says_so_in_one_line(runs, tmp_path, tiny_tarball):
    """`> /dev/full`: one line, and train.py leaves no run directory behind."""
    scripts = ROOT / "scripts"
    with open("/dev/full", "w") as full:
        for command in (
            [str(scripts / "predict.py"), "--ckpt", str(runs / "gru.ckpt"), "great film"],
            [str(scripts / "train.py"), "--data", str(tiny_tarball), "--num-words", "30",
             "--maxlen", "20", "--max-epochs", "2", "--logdir", str(tmp_path / "logs"),
             "--save", str(tmp_path / "b.ckpt")],
        ):  # fmt: skip
            result = subprocess.run([sys.executable, *command], stdout=full, stderr=subprocess.PIPE,
                                    text=True, timeout=300)  # fmt: skip
            tool = Path(command[0]).name
            assert result.returncode == 1, result.stderr
            assert result.stderr.splitlines()[-1] == (
                f"{tool}: error: no space left for the output (No space left on device)"
            )
            assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("logs/*/version_*")) and not (tmp_path / "b.ckpt").exists()


def test_predict_encodes_like_the_training_data(runs, review_files):
    checkpoint = read_checkpoint(runs / "gru.ckpt")
    datamodule = IMDBDataModule(**datamodule_settings(checkpoint))
    datamodule.setup("test")
    predictor = Predictor(checkpoint)
    raw = review_files["aclImdb/test/neg/0_2.txt"]  # sorts first in the test split
    encoded = encode(tokenize(raw), predictor.index, predictor.num_words)
    ours = pad_sequences(RaggedSequences.from_lists([encoded]), predictor.maxlen)
    assert ours[0].tolist() == datamodule.test_set.tokens[0].tolist()


def test_very_long_and_empty_inputs(runs, capsys):
    long_review = "great " * 5000 + "awful"
    assert predict_cli.main(["--ckpt", str(runs / "gru.ckpt"), long_review]) == 0
    captured = capsys.readouterr()
    assert "20/20" in captured.out  # known/read: the model reads the last maxlen = 20 words
    assert "the model reads 20 of the review's 5001 words" in captured.err
    code = predict_cli.main(["--ckpt", str(runs / "gru.ckpt"), "  "])
    assert code == 2 and "no reviews" in capsys.readouterr().err


def test_predict_refuses_a_bad_checkpoint(tmp_path, capsys):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(b"\x00" * 100)
    assert predict_cli.main(["--ckpt", str(path), "text"]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_compare_overlays_runs_and_reports_test_accuracy(runs, capsys):
    assert test_cli.main(["--ckpt", str(runs / "gru.ckpt")]) == 0
    capsys.readouterr()
    out_png = runs / "compare.png"
    code = compare_cli.main([str(runs / "logs" / "gru"), str(runs / "lstm.ckpt"),
                             "--out", str(out_png)])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    gru_line = next(line for line in out.splitlines() if line.startswith("gru/version_0"))
    lstm_line = next(line for line in out.splitlines() if line.startswith("lstm/version_0"))
    assert gru_line.split()[1] == "4" and gru_line.split()[-1] != "-"
    assert lstm_line.split()[-1] == "-"  # not evaluated yet
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_compare_marks_a_test_result_of_another_epoch_than_the_best(runs, capsys):
    # As after --resume found a better epoch than the one test.py measured.
    assert test_cli.main(["--ckpt", str(runs / "gru.ckpt"), "--no-progress"]) == 0
    run_dir = runs / "logs" / "gru" / "version_0"
    record = json.loads((run_dir / "test.json").read_text())
    capsys.readouterr()
    assert compare_cli.main([str(run_dir), "--out", str(runs / "c.png")]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "gru/" in line)
    best = int(line.split()[2])
    assert record["epoch"] == best and not line.endswith("*")

    record["epoch"] = best - 1 if best > 1 else best + 1
    (run_dir / "test.json").write_text(json.dumps(record))
    assert compare_cli.main([str(run_dir), "--out", str(runs / "c.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert next(line for line in lines if line.startswith("gru/")).endswith("*")
    assert f"test_acc is epoch {record['epoch']}'s model, not the best epoch {best}'s" in (
        "\n".join(lines)
    )


def test_test_py_calls_reviews_as_its_accuracy_counts_them(runs, tmp_path, capsys):
    # Every probability exactly 0.5 (a head of zeros), on a test set of 40 positive and 20
    # negative reviews: Keras's rule calls them all negative, test_acc and the report alike.
    checkpoint = torch.load(runs / "gru.ckpt", weights_only=True)
    for name in ("net.head.weight", "net.head.bias"):
        checkpoint["state_dict"][name].zero_()
    torch.save(checkpoint, tmp_path / "undecided.ckpt")
    files = {name: text for name, text in make_reviews().items()
             if not any(name.startswith(f"aclImdb/test/neg/{i}_") for i in range(20))}  # fmt: skip
    data = write_tarball(files, tmp_path / "fewer_negatives.tar.gz")
    argv = ["--ckpt", str(tmp_path / "undecided.ckpt"), "--data", str(data), "--no-progress"]
    assert test_cli.main(argv) == 0
    out = capsys.readouterr().out
    test_acc = float(next(line for line in out.splitlines() if line.startswith("test_acc:"))[9:])
    report_acc = next(line for line in out.splitlines() if line.strip().startswith("accuracy"))
    assert test_acc == pytest.approx(20 / 60, abs=1e-4)
    assert float(report_acc.split()[1]) == pytest.approx(test_acc, abs=1e-4)


def test_a_checkpoint_that_does_not_record_its_data(runs, tiny_tarball, tmp_path, capsys):
    # As examples/lesson_9_3.py writes them: a Trainer fitted on plain DataLoaders.
    checkpoint = torch.load(runs / "gru.ckpt", weights_only=True)
    del checkpoint["datamodule_hyper_parameters"], checkpoint["IMDBDataModule"]
    torch.save(checkpoint, tmp_path / "weights_only.ckpt")
    ckpt = str(tmp_path / "weights_only.ckpt")
    assert test_cli.main(["--ckpt", ckpt, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "does not record the data it was trained on" in err and "--data" in err
    assert test_cli.main(["--ckpt", ckpt, "--data", str(tiny_tarball), "--no-progress"]) == 0
    capsys.readouterr()
    assert predict_cli.main(["--ckpt", ckpt, "a fine film"]) == 2
    assert "it was not written by train.py" in capsys.readouterr().err


def test_a_checkpoint_whose_data_was_moved_asks_for_it(runs, tmp_path, capsys):
    checkpoint = torch.load(runs / "gru.ckpt", weights_only=True)
    checkpoint["datamodule_hyper_parameters"]["data"] = str(tmp_path / "moved.tar.gz")
    torch.save(checkpoint, tmp_path / "moved.ckpt")
    assert test_cli.main(["--ckpt", str(tmp_path / "moved.ckpt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "was trained on" in err and "moved.tar.gz" in err and "--data" in err
    assert len(err.strip().splitlines()) == 1


def test_a_probability_of_one_half_is_called_negative():
    prediction = Prediction(text="", positive=0.5, known_words=1, words=1, total_words=1)
    assert prediction.label == "negative"


def test_compare_refuses_what_is_not_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert compare_cli.main([str(tmp_path / "empty"), "--out", str(tmp_path / "c.png")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("a file given by mistake")
    assert compare_cli.main([str(tmp_path / "notes.txt"), "--out", str(tmp_path / "c.png")]) == 2
    assert "notes.txt is neither a checkpoint nor a run directory" in capsys.readouterr().err
    assert compare_cli.main([str(tmp_path / "logs"), "--out", str(tmp_path / "c.png")]) == 2
    assert capsys.readouterr().err.strip().endswith("logs does not exist")


@pytest.mark.parametrize("script", ["predict.py", "compare.py"])
def test_help(script):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert "usage:" in result.stdout
    if script == "predict.py":
        assert "unknown" in result.stdout and "maxlen" in result.stdout


@pytest.mark.parametrize("device", ["foo", "", "cuda:7"])
def test_predict_refuses_a_device_it_cannot_use(runs, device, capsys):
    code = predict_cli.main(["--ckpt", str(runs / "gru.ckpt"), "--device", device, "text"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "--device" in err


def test_a_checkpoint_that_is_a_directory_is_called_one(runs, capsys):
    assert test_cli.main(["--ckpt", str(runs / "logs")]) == 2
    assert "is a directory, not a checkpoint file" in capsys.readouterr().err


def test_test_py_prints_its_results_where_it_cannot_record_them(runs, capsys, monkeypatch):
    # A run directory on a read-only disk: the results are still the user's.
    def read_only(*args):
        raise OSError(30, "Read-only file system", str(runs / "logs" / "test.json"))

    monkeypatch.setattr(test_cli, "_record", read_only)
    assert test_cli.main(["--ckpt", str(runs / "gru.ckpt"), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "test_acc:" in out and "confusion matrix" in out
    assert "not recorded" in err and "Read-only file system" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["--file", "REVIEWS", "a text"], "not both"),
        (["--file", ""], "give a file of reviews"),
    ],
)
def test_predict_refuses_reviews_from_two_places_or_none(runs, tmp_path, capsys, argv, phrase):
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("a fine film\n")
    argv = [str(reviews) if arg == "REVIEWS" else arg for arg in argv]
    code = predict_cli.main(["--ckpt", str(runs / "gru.ckpt"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and phrase in err, err


def test_compare_writes_only_a_png_and_never_over_another_file(tmp_path, capsys):
    """--out given a run's own history or checkpoint by mistake leaves it as it was."""
    history_file = tmp_path / "history.json"
    history_file.write_text("[]")
    for out, phrase in (
        (history_file, "ending in .png"),
        (tmp_path / "c.pdf", "ending in .png"),
        (tmp_path / "a_file" / "c.png", "is a file, not a directory"),
    ):
        (tmp_path / "a_file").write_text("x")
        code = compare_cli.main([str(tmp_path), "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and phrase in err, err
    not_png = tmp_path / "looks.png"
    not_png.write_bytes(b"PK\x03\x04 a checkpoint")
    code = compare_cli.main([str(tmp_path), "--out", str(not_png)])
    assert code == 2 and "is not a PNG" in capsys.readouterr().err
    assert not_png.read_bytes() == b"PK\x03\x04 a checkpoint"
    assert history_file.read_text() == "[]"
    # A PNG, but the run's own loss plot, which nothing would draw again.
    loss_plot = tmp_path / "loss.png"
    loss_plot.write_bytes(b"\x89PNG\r\n\x1a\n the run's plot")
    code = compare_cli.main([str(tmp_path), "--out", str(loss_plot)])
    assert code == 2 and "that is a run's own loss plot" in capsys.readouterr().err
    assert loss_plot.read_bytes() == b"\x89PNG\r\n\x1a\n the run's plot"


def test_the_best_epoch_is_never_one_whose_loss_is_not_a_number():
    from imdb_torch.training.callbacks import best_epoch

    rows = [{"epoch": 1, "val_loss": float("nan")}, {"epoch": 2, "val_loss": 0.5},
            {"epoch": 3, "val_loss": float("-inf")}, {"epoch": 4}]  # fmt: skip
    assert best_epoch(rows)["epoch"] == 2
    assert best_epoch(rows[:1]) is None and best_epoch([]) is None


def test_compare_a_run_without_epochs_draws_no_empty_legend(tmp_path, capsys, recwarn):
    run_dir = tmp_path / "lstm" / "version_0"
    run_dir.mkdir(parents=True)
    (run_dir / "history.json").write_text("[]")
    assert compare_cli.main([str(run_dir), "--out", str(tmp_path / "c.png")]) == 0
    assert not [w for w in recwarn if "legend" in str(w.message)], [str(w.message) for w in recwarn]
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
