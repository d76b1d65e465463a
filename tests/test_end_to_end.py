"""Training and testing on the real IMDB reviews (../shared/data, or $IMDB_TORCH_E2E_DATA)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(
    os.environ.get("IMDB_TORCH_E2E_DATA", ROOT.parent / "shared/data/aclImdb_v1_labeled.tar.gz")
)


@pytest.fixture(scope="module")
def real_data():
    if not REAL_DATA.is_file():
        message = f"real IMDB archive not found at {REAL_DATA} (set IMDB_TORCH_E2E_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has it: never skip there
        pytest.skip(message)
    return REAL_DATA


def run(script, *args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_gru_learns_on_real_reviews_and_test_script_evaluates_it(real_data, tmp_path):
    train = run(
        "train.py", "--arch", "gru", "--data", str(real_data), "--max-epochs", "2",
        "--optimizer", "adam", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    assert (tmp_path / "best.ckpt").is_file()
    run_dir = tmp_path / "lightning_logs" / "gru" / "version_0"
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "loss.png").is_file()
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history) == 2
    assert max(row["val_acc"] for row in history) > 0.7  # chance is 0.5
    assert "8,633 trainable parameters (the same model in Keras: 8,633)" in train.stdout

    test = run("test.py", "--ckpt", "best.ckpt", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test reviews: 25,000" in test.stdout
    accuracy = float(test.stdout.split("test_acc:")[1].split()[0])
    assert accuracy > 0.7
