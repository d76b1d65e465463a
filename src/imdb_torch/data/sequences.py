"""Variable-length integer sequences in two flat arrays, and Keras's ``pad_sequences``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .text import OOV, PAD

PADDING_SIDES = ("pre", "post")


@dataclass(frozen=True)
class RaggedSequences:
    """Sequences stored as one ``values`` array and ``offsets`` (length n + 1).

    Sequence ``i`` is ``values[offsets[i]:offsets[i + 1]]``. Two flat arrays save without
    pickling, which keeps caches safe to load and fast to read.
    """

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_lists(cls, sequences: Iterable[Sequence[int]]) -> RaggedSequences:
        sequences = list(sequences)
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter(
            (token for sequence in sequences for token in sequence),
            dtype=np.int32,
            count=int(offsets[-1]),
        )
        return cls(values, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]


def cap_vocabulary(values: np.ndarray, num_words: int) -> np.ndarray:
    """Replace every index >= ``num_words`` with the out-of-vocabulary index (Keras's rule)."""
    return np.where(values < num_words, values, OOV).astype(values.dtype, copy=False)


def pad_sequences(
    sequences: RaggedSequences | Sequence[Sequence[int]],
    maxlen: int,
    padding: str = "pre",
    truncating: str = "pre",
    value: int = PAD,
) -> np.ndarray:
    """Keras's ``pad_sequences``: an ``(n, maxlen)`` int64 array, from ``RaggedSequences`` or
    a list of sequences as Keras takes them.

    ``truncating="pre"`` keeps the last ``maxlen`` tokens; ``padding="pre"`` puts the padding
    in front, so the last time step always holds a real token (Keras's defaults for both).
    """
    if padding not in PADDING_SIDES or truncating not in PADDING_SIDES:
        raise ValueError(f"padding and truncating must be one of {PADDING_SIDES}")
    if maxlen < 1:
        raise ValueError("maxlen must be at least 1")
    out = np.full((len(sequences), maxlen), value, dtype=np.int64)
    for row in range(len(sequences)):
        tokens = sequences[row]
        tokens = tokens[-maxlen:] if truncating == "pre" else tokens[:maxlen]
        if len(tokens) == 0:
            continue
        if padding == "pre":
            out[row, maxlen - len(tokens) :] = tokens
        else:
            out[row, : len(tokens)] = tokens
    return out
