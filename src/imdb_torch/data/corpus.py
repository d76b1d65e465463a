"""Where the reviews come from, and their encoded form cached on disk.

A *corpus* is the train and test reviews as integer sequences over the full vocabulary (the
``num_words`` cap and padding are applied later, in memory, so changing them never re-reads
the source). It is cached under a key made of the source's fingerprint and ``CORPUS_FORMAT``.
"""

from __future__ import annotations

import json
import os
import tarfile
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fileio import (
    atomic_path,
    default_cache_dir,
    file_digest,
    files_fingerprint,
    remove_stale_temporaries,
)
from .download import IMDB_NPZ, IMDB_WORD_INDEX, OFFLINE_HINT, fetch
from .imdb_archive import read_reviews, review_files
from .keras_npz import load_keras_imdb
from .sequences import RaggedSequences
from .text import encode, rank_words, tokenize, word_to_index
from .tfds_source import read_tfds_reviews, tfds_data_dir, tfds_fingerprint

# Bump whenever tokenisation or the cache layout changes: old cache files are then ignored.
# 2: the words as one UTF-8 text (a fixed-width array grew with the longest); 3: every .txt
# file in a class folder is a review, not only aclImdb's <id>_<rating>.txt.
CORPUS_FORMAT = 3

KERAS_NPZ = "keras-npz"
ACLIMDB = "aclimdb"
TFDS = "tfds"
NAMED_SOURCES = ("keras", "tfds")  # values of --data that name a source instead of a path


@dataclass(frozen=True)
class DataSource:
    kind: str
    path: Path

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the file (a directory's: of its files' names, sizes and times)."""
        if self.kind == TFDS:
            return tfds_fingerprint(self.path)
        if self.path.is_dir():
            return files_fingerprint(self.path, review_files(self.path))
        return file_digest(self.path)


@dataclass
class Corpus:
    train: RaggedSequences
    train_labels: np.ndarray
    test: RaggedSequences
    test_labels: np.ndarray
    words: list[str]
    """Words by frequency rank (``words[r - 1]`` has index ``r + 3``); empty if unknown."""


def resolve_source(data: str | os.PathLike | None, cache_dir: Path | None = None) -> DataSource:
    """Turn ``--data`` (or ``$IMDB_TORCH_DATA``, or nothing) into a checked local source.

    Nothing, or ``keras``, means Keras's ``imdb.npz``: reused from the cache or ``~/.keras``,
    else downloaded and verified; ``tfds`` means tensorflow-datasets' ``imdb_reviews``. A path
    is recognised by its content: a zip is an ``.npz``, a tar archive or a directory is aclImdb.
    """
    data = data or os.environ.get("IMDB_TORCH_DATA") or "keras"
    if str(data) == "keras":
        return DataSource(KERAS_NPZ, fetch(IMDB_NPZ, cache_dir))
    if str(data) == "tfds":
        return DataSource(TFDS, tfds_data_dir())
    path = Path(data).expanduser().resolve()
    if not path.exists():
        raise UserError(f"data path {path} does not exist; {OFFLINE_HINT}")
    if not os.access(path, os.R_OK):
        raise UserError(f"data path {path} is not readable (permission denied)")
    if path.is_dir():
        if (path / "aclImdb").is_dir():
            path = path / "aclImdb"
        if not ((path / "train").is_dir() and (path / "test").is_dir()):
            raise UserError(
                f"{path} is not an aclImdb directory: expected train/ and test/ folders "
                "holding pos/ and neg/ reviews"
            )
        return DataSource(ACLIMDB, path)
    if not path.is_file():  # reading a device or a pipe could wait, or go on, for ever
        raise UserError(f"data path {path} is neither a regular file nor a directory")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == b"PK\x03\x04":
        return DataSource(KERAS_NPZ, path)
    compressed = magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zX"
    if compressed or tarfile.is_tarfile(path):
        return DataSource(ACLIMDB, path)
    raise UserError(f"{path} is neither an .npz file nor a tar archive; {OFFLINE_HINT}")


def _cache_file(source: DataSource, cache_dir: Path) -> Path:
    return cache_dir / f"corpus-{source.kind}-{source.fingerprint[:24]}-v{CORPUS_FORMAT}.npz"


def prepare_corpus(source: DataSource, cache_dir: Path | None = None) -> Corpus | None:
    """Build and cache the source's corpus unless it is cached already; reads nothing then.
    Returns the corpus where it was built but could not be cached, for the caller to keep
    rather than build it a second time."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if _cache_file(source, cache_dir).is_file():
        return None
    corpus = load_corpus(source, cache_dir)
    return None if _cache_file(source, cache_dir).is_file() else corpus


def load_corpus(source: DataSource, cache_dir: Path | None = None) -> Corpus:
    """The source's corpus, from the cache when it is there, else built and cached."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = _cache_file(source, cache_dir)
    if cache_file.is_file():
        try:
            return _read_cache(cache_file)
        except (OSError, ValueError, KeyError) as exc:
            warnings.warn(f"ignoring unreadable cache {cache_file} ({exc})", stacklevel=2)
    # On stdout, with the run's other news; stderr stays for errors.
    print(f"preparing {source.path.name}: reading and encoding the reviews, once (the "
          f"result is cached in {cache_dir})", flush=True)  # fmt: skip
    corpus = _build(source)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # What a run killed while writing left behind; other runs may be writing now, so
        # only files an hour old (a write takes seconds).
        remove_stale_temporaries(cache_dir, older_than=3600)
        _write_cache(corpus, cache_file)
    except OSError as exc:
        warnings.warn(f"could not cache the encoded data in {cache_dir} ({exc})", stacklevel=2)
    return corpus


def _build(source: DataSource) -> Corpus:
    if source.kind == KERAS_NPZ:
        splits = load_keras_imdb(source.path)
        return Corpus(*splits["train"], *splits["test"], words=[])
    reviews = read_tfds_reviews(source.path) if source.kind == TFDS else read_reviews(source.path)
    tokens = {split: [tokenize(r.text) for r in items] for split, items in reviews.items()}
    # Ranked on the training reviews only, so nothing about the test set leaks into the model.
    words = rank_words(tokens["train"])
    index = word_to_index(words)

    def encoded(split: str) -> tuple[RaggedSequences, np.ndarray]:
        sequences = RaggedSequences.from_lists(encode(t, index) for t in tokens[split])
        return sequences, np.array([r.label for r in reviews[split]], dtype=np.int64)

    return Corpus(*encoded("train"), *encoded("test"), words=words)


def _write_cache(corpus: Corpus, cache_file: Path) -> None:
    with atomic_path(cache_file) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            train_values=corpus.train.values,
            train_offsets=corpus.train.offsets,
            train_labels=corpus.train_labels,
            test_values=corpus.test.values,
            test_offsets=corpus.test.offsets,
            test_labels=corpus.test_labels,
            # One UTF-8 text of newline-separated words (tokens never hold whitespace): its
            # size is the words' size, where a fixed-width array would give every word the
            # room of the longest one.
            words=np.frombuffer("\n".join(corpus.words).encode("utf-8"), dtype=np.uint8),
        )


def _read_cache(cache_file: Path) -> Corpus:
    with np.load(cache_file, allow_pickle=False) as cached:
        return Corpus(
            RaggedSequences(cached["train_values"], cached["train_offsets"]),
            cached["train_labels"],
            RaggedSequences(cached["test_values"], cached["test_offsets"]),
            cached["test_labels"],
            words=_words_from_utf8(cached["words"]),
        )


def _words_from_utf8(blob: np.ndarray) -> list[str]:
    text = blob.tobytes().decode("utf-8")
    return text.split("\n") if text else []


def keras_words(cache_dir: Path | None = None, download: bool = True) -> list[str]:
    """Words by rank from Keras's ``imdb_word_index.json``, so raw text maps to the npz's indices.

    Returns an empty list, with a warning, when the file cannot be had (offline): training
    still works, only encoding new text needs it.
    """
    try:
        path = fetch(IMDB_WORD_INDEX, cache_dir, timeout=10, download=download)
        ranks = json.loads(path.read_text(encoding="utf-8"))
    except (UserError, ValueError) as exc:
        warnings.warn(
            f"Keras's imdb_word_index.json is unavailable, so models trained now cannot encode "
            f"raw text later (training is unaffected): {exc}",
            stacklevel=2,
        )
        return []
    words = [""] * max(ranks.values())
    for word, rank in ranks.items():
        words[rank - 1] = word
    return words
