"""``IMDBDataModule``: IMDB reviews as padded integer sequences, split as in the Keras lesson."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset

from ..config import DataConfig, ModelConfig, Settings
from ..errors import UserError
from ..fileio import default_cache_dir, nearest_existing
from .batches import DeviceBatches
from .corpus import (
    KERAS_NPZ,
    NAMED_SOURCES,
    Corpus,
    DataSource,
    keras_words,
    load_corpus,
    prepare_corpus,
    resolve_source,
)
from .sequences import cap_vocabulary, pad_sequences
from .text import INDEX_FROM


class PaddedReviews(Dataset):
    """Padded token rows and labels, handed out a whole batch at a time.

    ``__getitems__`` lets the DataLoader slice a batch with one indexing operation instead of
    collating 64 single samples, which costs more than the model's step at these sizes.
    """

    def __init__(self, tokens: np.ndarray, labels: np.ndarray):
        self.tokens = torch.from_numpy(tokens)
        self.labels = torch.from_numpy(labels.astype(np.float32))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        return self.tokens[index], self.labels[index]


def keep_batch(batch):
    """Collate function for ``PaddedReviews``: the batch is already assembled."""
    return batch


class IMDBDataModule(L.LightningDataModule):
    """The Keras lesson's data pipeline.

    ``imdb.load_data(num_words=500)`` → ``train_test_split(test_size=0.2, random_state=42)``
    → ``pad_sequences(maxlen=100)``; the 25,000 test reviews form the test set. (``setup``
    pads before it caps the vocabulary and splits: the same result, see there.) On one
    process its loaders are ``DeviceBatches``, which cut each batch from tensors kept on the
    model's device, rather than ``DataLoader``s: the same batches in the same order.

    Args:
        data: ``None``/``"keras"`` for Keras's ``imdb.npz`` (downloaded and verified),
            ``"tfds"`` for TensorFlow Datasets' copy (an optional extra), or a path to
            ``imdb.npz``, an aclImdb tar archive, or an extracted ``aclImdb/``.
        num_words: vocabulary size; every index >= ``num_words`` becomes out-of-vocabulary (2).
        maxlen, padding, truncating: as in Keras's ``pad_sequences`` (``pre`` keeps the end).
        val_size, split_seed: ``train_test_split``'s ``test_size`` and ``random_state``.
        batch_size: training batch size; ``eval_batch_size`` for validation and test, where
            it changes speed only, not results.
        cache_dir: where downloads and encoded data are kept (default ``~/.cache/imdb-torch``).
    """

    def __init__(
        self,
        data: str | None = None,
        num_words: int = 500,
        maxlen: int = 100,
        padding: str = "pre",
        truncating: str = "pre",
        val_size: float = 0.2,
        split_seed: int = 42,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ):
        super().__init__()
        data = data or os.environ.get("IMDB_TORCH_DATA") or None
        if data is not None and data not in NAMED_SOURCES:
            data = str(Path(data).expanduser().resolve())
        _check_settings(
            num_words, maxlen, padding, truncating, val_size, batch_size, eval_batch_size
        )
        cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        existing = nearest_existing(cache)
        if not existing.is_dir():
            raise UserError(f"the cache directory {cache} cannot be made: {existing} is a file "
                            "(set --cache-dir or $IMDB_TORCH_CACHE)")  # fmt: skip
        self.save_hyperparameters()
        self.words: list[str] = []
        self.source: DataSource | None = None
        self.train_set = self.val_set = self.test_set = None
        self._uncached: Corpus | None = None  # built by prepare_data, where no cache took it

    @classmethod
    def from_settings(cls, settings: Settings) -> IMDBDataModule:
        """A run's data module: ``settings.data``, with the model's vocabulary size."""
        return cls(num_words=settings.model.num_words, **asdict(settings.data))

    @property
    def cache_dir(self) -> Path | None:
        return Path(self.hparams.cache_dir) if self.hparams.cache_dir else None

    def prepare_data(self) -> None:
        # Runs once per machine: the download and the tokenisation land in the shared cache.
        # A cached corpus is not read here: setup() reads it once, in every process.
        if self.train_set is not None:  # set up already (the tools do so before fit)
            return
        source = resolve_source(self.hparams.data, self.cache_dir)
        self._uncached = prepare_corpus(source, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        # Every stage gets all three sets: one read of the corpus makes them, and padding and
        # splitting the training reviews takes a fraction of a second.
        if self.train_set is not None:
            return
        source = self.source = resolve_source(self.hparams.data, self.cache_dir)
        corpus, self._uncached = self._uncached, None
        if corpus is None:
            corpus = load_corpus(source, self.cache_dir)
        words = corpus.words
        if source.kind == KERAS_NPZ:
            # The npz holds indices only; Keras's word index maps raw text onto them.
            words = keras_words(self.cache_dir)
        self.words = words[: self.hparams.num_words - INDEX_FROM - 1]
        self._make_sets(corpus)

    def _make_sets(self, corpus: Corpus) -> None:
        hp = self.hparams

        # The lesson's order is load_data(num_words) → split → pad. Here the rows are padded
        # first and capped after (the same tokens: capping touches each index alone), then
        # split by row (the same split: it depends only on the number of rows).
        def padded(sequences):
            tokens = pad_sequences(sequences, hp.maxlen, hp.padding, hp.truncating)
            return cap_vocabulary(tokens, hp.num_words)

        _check_memory(hp.maxlen, len(corpus.train), len(corpus.test))
        train_tokens = padded(corpus.train)
        validation = math.ceil(hp.val_size * len(train_tokens))  # as train_test_split counts
        if not 0 < validation < len(train_tokens):
            raise UserError(
                f"--val-size {hp.val_size} of {len(train_tokens):,} training reviews leaves "
                f"{validation:,} for validation and {len(train_tokens) - validation:,} for training"
            )
        train_idx, val_idx = train_test_split(
            np.arange(len(train_tokens)), test_size=hp.val_size, random_state=hp.split_seed
        )
        self.train_set = PaddedReviews(train_tokens[train_idx], corpus.train_labels[train_idx])
        self.val_set = PaddedReviews(train_tokens[val_idx], corpus.train_labels[val_idx])
        self.test_set = PaddedReviews(padded(corpus.test), corpus.test_labels)

    @cached_property
    def training_reviews(self) -> str:
        """A digest of what a run learns from, tokens and labels (after ``setup``): a resumed
        run must go on with the same. Made when first asked for, by a checkpoint or a resume:
        test.py and predict.py never need it."""
        digest = hashlib.sha256()
        for reviews in (self.train_set, self.val_set):
            digest.update(reviews.tokens.numpy())  # their memory, not a copy
            digest.update(reviews.labels.numpy())
        return digest.hexdigest()

    def _loader(
        self, dataset: PaddedReviews, batch_size: int, shuffle: bool
    ) -> DataLoader | DeviceBatches:
        workers = self.hparams.num_workers
        trainer = self.trainer
        if trainer is not None and trainer.world_size == 1 and workers == 0:
            # One process: the batches are cut where the model is (see batches.py).
            return DeviceBatches(dataset.tokens, dataset.labels, batch_size, shuffle,
                                 trainer.strategy.root_device)  # fmt: skip
        # Workers started anew each epoch (not persistent_workers): each pass then draws the
        # random numbers a pass without workers draws, and --num-workers changes speed only.
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=keep_batch,
            num_workers=workers,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.train_set, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.val_set, self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.test_set, self.hparams.eval_batch_size, shuffle=False)

    def source_record(self) -> dict[str, str]:
        """Which data this is: its kind, path and fingerprint (after ``setup``)."""
        if self.source is None:
            return {}
        return {"kind": self.source.kind, "path": str(self.source.path),
                "fingerprint": self.source.fingerprint}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        # Saved in every checkpoint, so raw text can later be encoded as the training data
        # was, and a measurement can tell whether it was made on the training data's source.
        return {"words": list(self.words), "source": self.source_record(),
                "training_reviews": self.training_reviews}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.words = list(state_dict.get("words", []))


def _check_memory(maxlen: int, train_reviews: int, test_reviews: int) -> None:
    """Padded to ``maxlen``, every review is a row of int64 tokens, the training rows twice
    while they are split: refused in one line where that would not fit in memory."""
    needed = 8 * maxlen * (2 * train_reviews + test_reviews)
    available = _available_memory()
    if available is not None and needed > available:
        raise UserError(
            f"--maxlen {maxlen}: {train_reviews + test_reviews:,} reviews padded to it need about "
            f"{needed / 2**30:.1f} GiB of memory, and {available / 2**30:.1f} GiB is free; "
            "choose a smaller --maxlen"
        )


def _available_memory() -> int | None:
    """Bytes of memory free for a new allocation (Linux's MemAvailable), if known."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_settings(num_words, maxlen, padding, truncating, val_size, batch_size, eval_batch_size):
    DataConfig(maxlen=maxlen, padding=padding, truncating=truncating, val_size=val_size,
               batch_size=batch_size, eval_batch_size=eval_batch_size).check()  # fmt: skip
    ModelConfig(num_words=num_words).check()
