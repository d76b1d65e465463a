"""IMDB from tensorflow-datasets (``imdb_reviews``), an optional source: ``--data tfds``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import UserError
from .imdb_archive import Review

INSTALL_HINT = (
    "--data tfds needs tensorflow-datasets, which brings TensorFlow (about 600 MB): "
    "pip install -e '.[tfds]'"
)


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise UserError(INSTALL_HINT) from exc
    return tfds


def tfds_data_dir() -> Path:
    """tensorflow-datasets' own data directory: ``$TFDS_DATA_DIR``, else its default."""
    return Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def tfds_fingerprint(data_dir: Path) -> str:
    # tfds datasets are versioned and never change in place: name, release and place suffice.
    return hashlib.sha256(f"imdb_reviews|{_tfds().__version__}|{data_dir}".encode()).hexdigest()


def read_tfds_reviews(data_dir: Path) -> dict[str, list[Review]]:
    """The labelled train and test reviews of ``imdb_reviews`` (downloaded by tfds if needed)."""
    tfds = _tfds()
    splits: dict[str, list[Review]] = {}
    for split in ("train", "test"):
        try:
            dataset = tfds.load("imdb_reviews", split=split, data_dir=str(data_dir),
                                as_supervised=True)  # fmt: skip
        except Exception as exc:  # tfds raises many types for download and format problems
            raise UserError(f"tensorflow-datasets could not load imdb_reviews ({exc})") from exc
        splits[split] = [
            Review(split, int(label), number, text.decode("utf-8", errors="replace"))
            for number, (text, label) in enumerate(tfds.as_numpy(dataset))
        ]
        if len({review.label for review in splits[split]}) < 2:
            raise UserError(f"imdb_reviews' {split} split lacks positive or negative reviews")
    return splits
