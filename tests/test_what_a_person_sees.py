"""What a person sees: TensorBoard per epoch with train and validation overlaid and the
HParams table filled, one line per epoch off a terminal, epochs counted from 1 everywhere,
help texts with one default each, predict.py's warnings, compare.py on a log directory."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from imdb_torch.cli import compare as compare_cli
from imdb_torch.cli import predict as predict_cli
from imdb_torch.cli import test as test_cli

from .conftest import TINY_RUN_FLAGS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_tarball):
    tmp_path = tmp_path_factory.mktemp("seen")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            *TINY_RUN_FLAGS,
            "--data",
            str(tiny_tarball),
            "--lr",
            "0.02",
            "--patience",
            "5",
            "--arch",
            "gru",
            "--logdir",
            str(tmp_path / "logs"),
            "--save",
            str(tmp_path / "best.ckpt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "IMDB_TORCH_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip  (stdout and stderr are pipes, not a terminal)
    assert done.returncode == 0, done.stderr[-3000:]
    assert test_cli.main(["--ckpt", str(tmp_path / "best.ckpt")]) == 0
    return tmp_path, done


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return accumulator


def test_tensorboard_plots_each_epoch_at_its_number(run):
    tmp_path, _ = run
    run_dir = tmp_path / "logs" / "gru" / "version_0"
    history = json.loads((run_dir / "history.json").read_text())
    board = events(run_dir)
    tags = set(board.Tags()["scalars"])
    assert tags == {
        "loss/train",
        "loss/val",
        "accuracy/train",
        "accuracy/val",
        "best/val_loss",
        "best/val_acc",
        "test/acc",
    }  # fmt: skip  (no "epoch")
    for tag, key in (("loss/train", "train_loss"), ("accuracy/val", "val_acc")):
        points = [(event.step, event.value) for event in board.Scalars(tag)]
        assert points == [(row["epoch"], pytest.approx(row[key])) for row in history]
    assert [event.step for event in board.Scalars("loss/val")] == [1, 2, 3]
    best = min(history, key=lambda row: row["val_loss"])
    assert board.Scalars("best/val_loss")[-1].value == pytest.approx(best["val_loss"])
    test_record = json.loads((run_dir / "test.json").read_text())
    assert board.Scalars("test/acc")[-1].value == pytest.approx(test_record["test_acc"])


def test_train_and_validation_share_a_chart_and_hparams_are_filled(run):
    tmp_path, _ = run
    board = events(tmp_path / "logs" / "gru" / "version_0")
    (config,) = board.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for c in layout.category for chart in c.chart}
    assert charts == {"loss": ["loss/train", "loss/val"],
                      "accuracy": ["accuracy/train", "accuracy/val"]}  # fmt: skip
    content = board.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metrics = {m.name.tag for m in experiment.experiment.metric_infos}
    assert metrics == {"best/val_loss", "best/val_acc", "test/acc"}
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = start.session_start_info.hparams
    assert values["arch"].string_value == "gru" and values["hidden_size"].number_value == 8
    assert values["lr"].number_value == pytest.approx(0.02)
    assert values["bidirectional"].string_value == "no"
    assert values["data"].string_value == "aclImdb_tiny.tar.gz"  # by name, not where it lies


def test_off_a_terminal_each_epoch_is_one_line_and_lightnings_noise_is_gone(run):
    _, done = run
    lines = [line for line in done.stdout.splitlines() if line.startswith("Epoch ")]
    assert len(lines) == 3 and "\r" not in done.stdout + done.stderr
    assert re.fullmatch(
        r"Epoch 1/3 - \d+\.\ds - loss: \d\.\d{4} - acc: \d\.\d{4} - val_loss: \d\.\d{4} - "
        r"val_acc: \d\.\d{4}",
        lines[0],
    ), lines[0]
    everything = done.stdout + done.stderr
    for noise in ("GPU available: False", "TPU available", "| Name", "Trainable params",
                  "`Trainer.fit` stopped", "logging interval",
                  # TensorFlow's start-up lines, where it is installed (CI installs it): the
                  # event files are written without it (imdb_torch/cli/__init__.py).
                  "TensorFlow"):  # fmt: skip
        assert noise not in everything
    assert "preparing aclImdb_tiny.tar.gz: reading and encoding the reviews, once" in done.stdout
    # The lesson's shapes: 80 training reviews, a fifth of them for validation; 80 test reviews.
    assert (
        "reviews: 64 for training, 16 for validation, 80 for test.py (num_words 30, maxlen 20)\n"
        in done.stdout
    )


def test_epochs_are_counted_from_one_in_file_names_and_the_summary(run):
    tmp_path, done = run
    run_dir = tmp_path / "logs" / "gru" / "version_0"
    history = json.loads((run_dir / "history.json").read_text())
    best = min(history, key=lambda row: row["val_loss"])["epoch"]
    (best_file,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    assert best_file.name.startswith(f"best-epoch{best:03d}-")
    assert f"best epoch {best} of 3:" in done.stdout


@pytest.mark.parametrize("script", ["train.py", "test.py", "predict.py", "compare.py",
                                    "reproduce.py"])  # fmt: skip
def test_help_states_each_default_once(script):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    text = re.sub(r"\s+", " ", done.stdout)
    options = re.split(r" (?=--[a-z])", text)
    for option in options:
        assert option.count("default") <= 1, option
        assert "None" not in option, option


def test_predict_says_when_its_probability_means_little(run, capsys):
    tmp_path, _ = run
    ckpt = str(tmp_path / "best.ckpt")
    long_review = "great movie " * 50
    assert predict_cli.main(["--ckpt", ckpt, "--json", "😀🎬!!", long_review, "great plot"]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert records[0]["known_words"] == 0 and "no word the model knows" in records[0]["warning"]
    assert records[1]["words_read"] == 20 and records[1]["words"] == 100  # maxlen 20
    assert (
        records[1]["known_words"] == 20 and "reads 20 of the review's 100" in records[1]["warning"]
    )
    assert records[2]["warning"] is None
    assert "review 1: no word the model knows" in captured.err  # the arguments' places
    assert "review 2: the model reads 20" in captured.err
    assert [record["number"] for record in records] == [1, 2, 3]


def test_compare_takes_a_log_directory_and_shows_each_run_once(run, tmp_path, capsys):
    logs = run[0] / "logs"
    checkpoint = next((logs / "gru" / "version_0" / "checkpoints").glob("best-*.ckpt"))
    out = str(tmp_path / "c.png")
    assert compare_cli.main([str(logs), str(checkpoint), "--out", out]) == 0
    table = capsys.readouterr().out
    assert table.count("gru/version_0") == 1 and "test_acc" in table
    assert "\ndata: aclImdb_tiny.tar.gz\n" in table
    copy = tmp_path / "other" / "logs"
    copy.parent.mkdir()
    shutil.copytree(logs, copy)
    assert compare_cli.main([str(logs), str(copy), "--out", out]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:] if line.strip()]
    rows = [row for row in rows if row not in ("figure:", "data:")]
    assert len(rows) == 2 and len(set(rows)) == 2, rows
    # The same reviews under another name are the same data; other reviews are said to be.
    hparams = copy / "gru" / "version_0" / "hparams.yaml"
    hparams.write_text(re.sub(r"(?m)^data: .*$", "data: /elsewhere/mine.tar.gz",
                              hparams.read_text()))  # fmt: skip
    assert compare_cli.main([str(logs), str(copy), "--out", out]) == 0
    (same,) = [line for line in capsys.readouterr().out.splitlines() if "data" in line]
    assert same == "data: aclImdb_tiny.tar.gz = mine.tar.gz"
    last = copy / "gru" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["IMDBDataModule"]["source"]["fingerprint"] = "f" * 64  # other reviews
    torch.save(checkpoint, last)
    assert compare_cli.main([str(logs), str(copy), "--out", out]) == 0
    (differs,) = [line for line in capsys.readouterr().out.splitlines() if "data" in line]
    assert differs.startswith("data differs: ") and differs.count(" on ") == 2
    assert " on aclImdb_tiny.tar.gz (" in differs and differs.endswith(" on mine.tar.gz (ffffffff)")
    # A checkpoint of the copied run is that run, as test.py takes it: not the run it names
    # inside (where it was first written), whose test results it would otherwise show.
    copied = next((copy / "gru" / "version_0" / "checkpoints").glob("best-*.ckpt"))
    assert compare_cli.main([str(logs / "gru" / "version_0"), str(copied), "--out", out]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:] if line.strip()]
    assert len([row for row in rows if row not in ("figure:", "data:")]) == 2, rows


@pytest.mark.parametrize("script", ["test.py", "predict.py"])
def test_a_reader_that_stops_early_gets_no_traceback_and_nothing_is_lost(run, script):
    # As `python scripts/test.py --ckpt best.ckpt | head -3`, with the reader gone at once.
    tmp_path, _ = run
    test_json = tmp_path / "logs" / "gru" / "version_0" / "test.json"
    test_json.unlink()
    extra = ["a fine film", "a dull film"] if script == "predict.py" else ["--no-progress"]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / script), "--ckpt", str(tmp_path / "best.ckpt"),
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "IMDB_TORCH_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=300) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    if script == "test.py":
        assert json.loads(test_json.read_text())["test_reviews"] > 0


def test_the_bar_leaves_out_lightnings_version_number(tmp_path):
    from types import SimpleNamespace

    from lightning.pytorch.loggers import TensorBoardLogger

    from imdb_torch.training.console import EpochProgressBar

    logger = TensorBoardLogger(tmp_path, version=3)
    trainer = SimpleNamespace(loggers=[logger], logger=logger, progress_bar_metrics={"acc": 0.5})
    assert EpochProgressBar().get_metrics(trainer, None) == {"acc": 0.5}


def test_on_a_terminal_each_epochs_bar_stays_with_its_figures(tmp_path, tiny_tarball):
    """As Keras's verbose=1 leaves a line per epoch: the bar of a finished epoch is not
    overwritten by the next one's."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    screen, terminal = pty.openpty()  # train.py's output: a terminal of 80 columns
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    flags = [*TINY_RUN_FLAGS, "--data", str(tiny_tarball), "--max-epochs", "3",
             "--patience", "5", "--logdir", str(tmp_path / "logs"),
             "--save", str(tmp_path / "best.ckpt")]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *flags],
        stdin=terminal, stdout=terminal, stderr=terminal,
        env={**os.environ, "IMDB_TORCH_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    os.close(terminal)
    seen = b""
    try:
        while select.select([screen], [], [], 300)[0]:
            try:
                chunk = os.read(screen, 65536)
            except OSError:  # train.py has ended and closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        process.kill()
        process.wait(timeout=60)
        os.close(screen)
    raw = seen.decode(errors="replace")
    assert "Validation DataLoader 0: " in raw and "Validation0" not in raw, raw[-2000:]
    shown = on_screen(raw)
    bars = [line for line in shown if line.startswith("Epoch ")]
    assert [bar.split(":")[0] for bar in bars] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"], shown
    # Every figure, in Keras's order and under its names, within the 80 columns.
    names = re.compile(r", loss=[\d.]+, acc=[\d.]+, val_loss=[\d.]+, val_acc=[\d.]+ \d+s$")
    assert all(names.search(bar) and len(bar) <= 80 for bar in bars), bars
    assert not any("Training" in line for line in shown), shown  # no bar left empty


def test_a_finished_epochs_line_fits_80_columns_with_the_lessons_figures():
    # The lesson's run: 313 batches an epoch, at most 100 epochs, seconds each.
    from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

    from imdb_torch.training.console import EpochProgressBar

    line = Tqdm.format_meter(
        n=313, total=313, elapsed=12.6, ncols=80, prefix="Epoch 26/100:",
        bar_format=EpochProgressBar.FINISHED_FORMAT,
        postfix="loss=0.412, acc=0.813, val_loss=0.447, val_acc=0.792",
    )  # fmt: skip
    assert line == (
        "Epoch 26/100: 313/313, loss=0.412, acc=0.813, val_loss=0.447, val_acc=0.792 13s"
    )  # the lesson's epoch, every figure whole
    # Where a line is longer, the seconds go first, not a figure.
    long = Tqdm.format_meter(
        n=313, total=313, elapsed=3600, ncols=80, prefix="Epoch 100/100:",
        bar_format=EpochProgressBar.FINISHED_FORMAT,
        postfix="loss=0.0412, acc=0.813, val_loss=0.447, val_acc=0.792",
    )  # fmt: skip
    assert len(long) <= 80 and "val_acc=0.792" in long


def test_a_terminal_that_gives_no_width_gets_the_epoch_lines(monkeypatch):
    # Some consoles are terminals of 0 columns: a bar there shows as empty lines.
    import fcntl
    import pty
    import struct
    import termios

    from imdb_torch.training.console import shows_a_bar

    screen, terminal = pty.openpty()
    with os.fdopen(terminal, "w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        assert not shows_a_bar(progress=True)
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        assert shows_a_bar(progress=True) and not shows_a_bar(progress=False)
    os.close(screen)


def on_screen(output: str) -> list[str]:
    """The lines a terminal shows after ``output``: carriage returns, new lines, the cursor
    moved up a line (ESC [ A) and a line cleared (ESC [ K), as progress bars use them."""
    rows, row, column = [[]], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|.", output, flags=re.DOTALL):
        if token == "\n":
            row, column = row + 1, 0
            rows.extend([] for _ in range(row + 1 - len(rows)))
        elif token == "\r":
            column = 0
        elif token == "\x1b[A":
            row = max(row - 1, 0)
        elif token == "\x1b[K":
            del rows[row][column:]
        elif not token.startswith("\x1b"):
            line = rows[row]
            line.extend(" " for _ in range(column + 1 - len(line)))
            line[column] = token
            column += 1
    return ["".join(line).rstrip() for line in rows]


def test_the_paths_at_the_end_are_as_typed_from_here(tmp_path, tiny_tarball, monkeypatch, capsys):
    from imdb_torch.cli import train as train_cli

    monkeypatch.chdir(tmp_path)
    argv = [*TINY_RUN_FLAGS, "--max-epochs", "1", "--data", str(tiny_tarball), "--arch", "gru",
            "--no-progress", "--logdir", "logs", "--save", "best.ckpt"]  # fmt: skip
    assert train_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "best model:  best.ckpt  (also logs/gru/version_0/checkpoints/best-epoch001-" in out
    assert "loss plot:   logs/gru/version_0/loss.png" in out
    assert "TensorBoard: tensorboard --logdir logs\n" in out


def test_predict_on_a_file_of_long_reviews_counts_warnings_past_the_first_few(
    run, tmp_path, capsys, monkeypatch
):
    """A file of IMDB reviews warns about four in ten: five lines, then a count. Blocks of
    reviews are printed as they are classified, the same results as one pass."""
    from imdb_torch.cli import predict as predict_cli

    ckpt = str(run[0] / "best.ckpt")
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("".join(f"great movie {'plot ' * 50 * (i % 2)}\n" for i in range(16)))
    assert predict_cli.main(["--ckpt", ckpt, "--file", str(reviews)]) == 0
    whole = capsys.readouterr()
    warned = [line for line in whole.err.splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in warned] == [f"line {n}" for n in (2, 4, 6, 8, 10)]
    assert whole.err.splitlines()[-1] == (
        "... and 3 more reviews with a warning (--json gives each review's)"
    )

    monkeypatch.setattr(predict_cli, "BLOCK", 3)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal watching, output to
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)  # a file: progress is shown
    assert predict_cli.main(["--ckpt", ckpt, "--file", str(reviews)]) == 0
    blocks = capsys.readouterr()
    assert blocks.out == whole.out
    assert "\rclassified 3 of 16 reviews" in blocks.err
    assert "\rclassified 16 of 16 reviews" in blocks.err
    assert blocks.err.endswith(
        "... and 3 more reviews with a warning (--json gives each review's)\n"
    )


def test_predict_stopped_by_sigterm_says_so_and_ends_its_progress_line(run, tmp_path, capsys,
                                                                       monkeypatch):  # fmt: skip
    """SIGTERM stops a tool as Ctrl-C does, with status 143; the progress line is wiped first."""
    import signal

    from imdb_torch.cli import predict as predict_cli
    from imdb_torch.predictor import Predictor

    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # else the test would end pytest
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("great movie\n" * 9 + "great movie " * 60 + "\n")
    predict = Predictor.predict
    calls = []

    def predict_then_terminated(self, texts, batch_size=1024):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return predict(self, texts, batch_size)

    monkeypatch.setattr(Predictor, "predict", predict_then_terminated)
    monkeypatch.setattr(predict_cli, "BLOCK", 3)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert predict_cli.main(["--ckpt", str(run[0] / "best.ckpt"), "--file", str(reviews)]) == 143
    err = capsys.readouterr().err
    assert err.endswith("\rclassified 3 of 10 reviews\r\033[Kpredict.py: interrupted\n"), err
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # given back


def test_predict_counts_a_single_warning_past_the_first_five_in_the_singular(run, tmp_path,
                                                                             capsys):  # fmt: skip
    from imdb_torch.cli import predict as predict_cli

    reviews = tmp_path / "reviews.txt"
    reviews.write_text(("great movie " * 60 + "\n") * 6)
    assert predict_cli.main(["--ckpt", str(run[0] / "best.ckpt"), "--file", str(reviews),
                             "--json"]) == 0  # fmt: skip
    assert capsys.readouterr().err.splitlines()[-1] == "... and 1 more review with a warning"


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_test_py_stopped_while_evaluating_says_so(run, monkeypatch, capsys, signum):
    """Lightning ends an interrupted test with exit(1) after its own tidying up: still an
    interrupt, in one line, with the status a shell gives that signal."""
    import signal

    from imdb_torch.cli import test as test_cli
    from imdb_torch.training.module import SentimentClassifier

    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # else the test would end pytest
    test_step = SentimentClassifier.test_step

    def signalled_at_the_second_batch(self, batch, batch_idx):
        if batch_idx == 1:
            os.kill(os.getpid(), getattr(signal, signum))
        return test_step(self, batch, batch_idx)

    monkeypatch.setattr(SentimentClassifier, "test_step", signalled_at_the_second_batch)
    argv = ["--ckpt", str(run[0] / "best.ckpt"), "--batch-size", "16", "--no-progress"]
    sigint_was = signal.signal(signal.SIGINT, signal.default_int_handler)  # as a shell starts it
    try:
        status = test_cli.main(argv)
        # Given back as found, though Lightning ignores Ctrl-C from its interrupt on.
        assert signal.getsignal(signal.SIGINT) == signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, sigint_was)
    err = capsys.readouterr().err
    assert status == 128 + getattr(signal, signum), err
    assert err.strip().splitlines()[-1] == "test.py: interrupted" and "Traceback" not in err
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
