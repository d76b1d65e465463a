"""Keras-style text encoding: the rules behind ``keras.datasets.imdb``'s integer sequences.

Index conventions (Keras's ``imdb.load_data`` defaults): 0 is padding, 1 marks the start of a
review, 2 stands for any word outside the vocabulary, 3 is never used, and the word of frequency
rank ``r`` (1 = most frequent) has index ``r + 3``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

PAD = 0
START = 1
OOV = 2
INDEX_FROM = 3

# Keras's ``Tokenizer`` default ``filters``: these characters become word separators.
# The apostrophe is not among them, so "don't" stays one word, as in Keras.
KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
_SEPARATE = str.maketrans(dict.fromkeys(KERAS_FILTERS, " "))


def tokenize(text: str) -> list[str]:
    """Lower-case words of a review, HTML line breaks and Keras's filter characters removed."""
    return text.replace("<br />", " ").lower().translate(_SEPARATE).split()


def rank_words(documents: Iterable[Sequence[str]]) -> list[str]:
    """Words by descending frequency; ``result[r - 1]`` is the word of rank ``r``.

    Ties are broken alphabetically rather than by first appearance (Keras's ``Tokenizer``),
    so the ranking does not depend on the order in which an archive lists its files.
    """
    counts: Counter[str] = Counter()
    for words in documents:
        counts.update(words)
    return sorted(counts, key=lambda word: (-counts[word], word))


def word_to_index(ranked_words: Sequence[str]) -> dict[str, int]:
    """Map each word to its Keras index (rank + 3)."""
    return {word: rank + INDEX_FROM for rank, word in enumerate(ranked_words, start=1)}


def encode(words: Iterable[str], index: dict[str, int], num_words: int | None = None) -> list[int]:
    """Start token followed by word indices; unknown words and indices >= num_words become OOV."""
    limit = num_words if num_words is not None else float("inf")
    encoded = [START]
    for word in words:
        value = index.get(word, OOV)
        encoded.append(value if value < limit else OOV)
    return encoded
