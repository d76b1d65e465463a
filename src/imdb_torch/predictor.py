"""Sentiment of raw text from a trained checkpoint, encoded exactly as its training data was."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.sequences import RaggedSequences, pad_sequences
from .data.text import OOV, encode, tokenize, word_to_index
from .errors import UserError
from .training.checkpoint import (
    datamodule_settings,
    model_from_checkpoint,
    read_checkpoint,
    records_its_data,
    vocabulary,
)
from .training.module import is_positive


@dataclass(frozen=True)
class Prediction:
    text: str
    positive: float
    """Probability that the review is positive."""
    known_words: int
    """Words the model has an embedding for, among those it reads."""
    words: int
    """Words the model reads: the review's last (or first) ``maxlen``."""
    total_words: int
    """Words in the whole review."""

    @property
    def warning(self) -> str | None:
        """Why the probability means little, if it does."""
        if self.known_words == 0:
            return "no word the model knows: the probability says nothing about this review"
        if self.total_words > 2 * self.words:
            return (f"the model reads {self.words} of the review's {self.total_words} words "
                    "(its maxlen); the rest does not count")  # fmt: skip
        return None

    @property
    def label(self) -> str:
        return "positive" if is_positive(self.positive) else "negative"


class Predictor:
    """A checkpoint's model with its vocabulary and padding rules, ready for raw text.

    Words outside the model's vocabulary become the out-of-vocabulary index, as in training;
    a review longer than the model's ``maxlen`` is cut the same way its training data was
    (by default keeping the end).
    """

    def __init__(self, checkpoint: dict, device: str = "cpu", fused_rnn: bool = True):
        self.model = model_from_checkpoint(checkpoint, fused_rnn=fused_rnn).to(device)
        self.device = device
        settings = datamodule_settings(checkpoint)
        self.num_words = self.model.model_config.num_words
        self.maxlen = settings.get("maxlen", 100)
        self.padding = settings.get("padding", "pre")
        self.truncating = settings.get("truncating", "pre")
        words = vocabulary(checkpoint)
        if not words:
            why = (
                "it was trained on imdb.npz while Keras's word index was unavailable"
                if records_its_data(checkpoint)
                else "it was not written by train.py, e.g. examples/lesson_9_3.py wrote it"
            )
            raise UserError(
                f"this checkpoint carries no vocabulary ({why}), so raw text cannot be encoded "
                "for it"
            )
        self.index = word_to_index(words)

    @classmethod
    def from_path(cls, path: str | Path, device: str = "cpu", fused_rnn: bool = True) -> Predictor:
        return cls(read_checkpoint(path), device, fused_rnn)

    def predict(self, texts: list[str], batch_size: int = 1024) -> list[Prediction]:
        tokenized = [tokenize(text) for text in texts]
        encoded = [encode(words, self.index, self.num_words) for words in tokenized]
        tokens = pad_sequences(
            RaggedSequences.from_lists(encoded), self.maxlen, self.padding, self.truncating
        )
        probabilities = np.empty(len(texts), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = torch.from_numpy(tokens[start : start + batch_size]).to(self.device)
                probabilities[start : start + batch_size] = (
                    torch.sigmoid(self.model(batch)).float().cpu().numpy()
                )
        return [
            Prediction(text, float(p), *self._read(codes), len(words))
            for text, p, codes, words in zip(texts, probabilities, encoded, tokenized, strict=True)
        ]

    def _read(self, codes: list[int]) -> tuple[int, int]:
        """Known words and words within the window the model reads (the start mark left out),
        cut as ``pad_sequences`` cuts."""
        window = codes[-self.maxlen :] if self.truncating == "pre" else codes[: self.maxlen]
        words = window[1:] if len(window) == len(codes) else window  # the start mark is codes[0]
        return sum(code != OOV for code in words), len(words)
