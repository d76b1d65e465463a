"""examples/lesson_9_3.py, the chapter step by step, runs from start to end (on tiny data)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_lesson_runs_its_four_experiments_and_the_test(tiny_tarball, tmp_path):
    out = tmp_path / "lesson"
    out.mkdir()
    (out / "best-lstm-model.ckpt").write_text("an earlier run's")  # replaced, as Keras's .h5
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lesson_9_3.py"), "--data", str(tiny_tarball),
         "--epochs", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "IMDB_TORCH_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("lstm", "lstm-dropout", "2rnn", "gru"):
        assert f"{name}: best epoch" in done.stdout
        assert (out / f"{name}-loss.png").stat().st_size > 0
        assert (out / f"best-{name}-model.ckpt").is_file()
        assert f"{name}: SentimentNet(" in done.stdout
    assert not list(out.glob("*-v1.ckpt"))
    # A line per epoch, as Keras's fit prints, and nothing of Lightning's that is noise here.
    assert done.stdout.count("Epoch 2/2 - ") == 4
    assert "Tip" not in done.stdout + done.stderr and "no logger" not in done.stderr
    result = done.stdout.split("test set, best two-layer model: loss ")[1].split()
    loss, accuracy = float(result[0].rstrip(",")), float(result[2])
    assert loss > 0 and 0 <= accuracy <= 1
    # model.summary(): the network as the lesson builds it (with the CPU's fused twins)
    assert "(0): FusedLSTM(16, 8, batch_first=True)\n    (1): FusedLSTM(8, 8, " in done.stdout


def test_the_lesson_without_its_data_says_so_in_one_line(tmp_path):
    out = tmp_path / "lesson"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lesson_9_3.py"), "--data",
         str(tmp_path / "missing.tar.gz"), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "IMDB_TORCH_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "missing.tar.gz" in done.stderr
    assert not out.exists()
