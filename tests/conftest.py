"""Tiny datasets built by the tests themselves: an aclImdb archive and a Keras-style npz."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from imdb_torch.config import Settings
from imdb_torch.training.module import SentimentClassifier

POSITIVE = ["great", "wonderful", "excellent", "loved", "brilliant", "superb"]
NEGATIVE = ["awful", "boring", "terrible", "hated", "dull", "worst"]
FILLER = ["the", "movie", "film", "a", "was", "and", "it", "plot", "actor", "scene", "of", "this"]


def make_reviews(seed: int = 0, per_folder: int = 40) -> dict[str, str]:
    """``{"aclImdb/train/pos/0_9.txt": text, ...}`` with sentiment a model can learn."""
    rng = random.Random(seed)
    files = {}
    for split in ("train", "test"):
        for label, cue in (("pos", POSITIVE), ("neg", NEGATIVE)):
            for review_id in range(per_folder):
                words = rng.choices(FILLER, k=rng.randint(5, 30)) + rng.choices(cue, k=3)
                rng.shuffle(words)
                text = " ".join(words).capitalize() + ".<br /><br />" + rng.choice(cue) + "!"
                rating = 9 if label == "pos" else 2
                files[f"aclImdb/{split}/{label}/{review_id}_{rating}.txt"] = text
    files["aclImdb/README"] = "Large Movie Review Dataset (synthetic test copy)"
    files["aclImdb/train/unsup/0_0.txt"] = "unlabelled reviews are ignored"
    return files


def write_tarball(files: dict[str, str], path: Path) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_tree(files: dict[str, str], root: Path) -> Path:
    for name, text in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root / "aclImdb"


def write_keras_npz(path: Path, n_train: int = 60, n_test: int = 40, seed: int = 0) -> Path:
    """Same structure as Keras's imdb.npz: object arrays of word-rank lists (ranks from 1)."""
    rng = np.random.default_rng(seed)

    def reviews(n):
        labels = rng.integers(0, 2, n)
        # Ranks 1-5 are "positive" words, 6-10 "negative", the rest filler up to rank 700.
        seqs = []
        for label in labels:
            cue = rng.integers(1, 6, 4) if label else rng.integers(6, 11, 4)
            body = rng.integers(11, 700, rng.integers(3, 150))
            seqs.append([int(w) for w in np.concatenate([body, cue])])
        array = np.empty(n, dtype=object)
        array[:] = seqs
        return array, labels

    x_train, y_train = reviews(n_train)
    x_test, y_test = reviews(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory) -> Path:
    """One compiled fused kernel for the whole session (a test's own cache would rebuild it)."""
    return tmp_path_factory.mktemp("kernels")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch, kernel_dir):
    """Nothing a test does touches the user's caches, and no source is taken from the env."""
    monkeypatch.setenv("IMDB_TORCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv("IMDB_TORCH_DATA", raising=False)
    monkeypatch.setenv("IMDB_TORCH_KERNELS", str(kernel_dir))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def review_files() -> dict[str, str]:
    return make_reviews()


@pytest.fixture(scope="session")
def tiny_tarball(tmp_path_factory, review_files) -> Path:
    return write_tarball(review_files, tmp_path_factory.mktemp("tar") / "aclImdb_tiny.tar.gz")


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory, review_files) -> Path:
    return write_tree(review_files, tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    return write_keras_npz(tmp_path_factory.mktemp("npz") / "imdb.npz")


def validation_by_hand(model, datamodule) -> tuple[float, float, int]:
    """Mean loss, accuracy and count over the validation reviews, outside Lightning."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for tokens, labels in datamodule.val_dataloader():
            logits = model(tokens)
            loss_sum += torch.nn.functional.binary_cross_entropy_with_logits(
                logits, labels, reduction="sum"
            ).item()
            correct += ((logits > 0) == labels.bool()).sum().item()
            count += len(labels)
    return loss_sum / count, correct / count, count


def classifier(fused_rnn: bool = True, **settings) -> SentimentClassifier:
    """A ``SentimentClassifier`` from settings given by name (the lesson's for the rest)."""
    chosen = Settings.from_flat(settings)
    return SentimentClassifier(chosen.model, chosen.optim, fused_rnn=fused_rnn)


# train.py's flags for a run of seconds on a tiny archive (add --data, --logdir, --save).
TINY_RUN_FLAGS = ("--max-epochs", "3", "--maxlen", "20", "--num-words", "30",
                  "--optimizer", "adam", "--batch-size", "16")  # fmt: skip


def tiny_settings(data, **settings) -> Settings:
    """Settings for a fast run on a tiny archive: 30 words, 40 tokens, batches of 16."""
    values = {"data": str(data), "num_words": 30, "maxlen": 40, "batch_size": 16}
    return Settings.from_flat({**values, **settings})
