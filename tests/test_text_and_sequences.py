import numpy as np
import pytest

from imdb_torch.data.sequences import RaggedSequences, cap_vocabulary, pad_sequences
from imdb_torch.data.text import OOV, START, encode, rank_words, tokenize, word_to_index


def test_tokenize_follows_keras_filters_and_strips_html_breaks():
    text = 'I LOVED it!<br /><br />Don\'t miss "Alien" (1979)...great_fun'
    assert tokenize(text) == ["i", "loved", "it", "don't", "miss", "alien", "1979", "great", "fun"]


def test_rank_words_by_frequency_then_alphabet():
    docs = [["b", "a", "c"], ["c", "b"], ["c"]]
    assert rank_words(docs) == ["c", "b", "a"]
    assert rank_words([["z", "y"], ["y", "z"]]) == ["y", "z"]  # tie: alphabetical


def test_keras_indices_start_oov_and_rank_offset():
    index = word_to_index(["the", "and", "movie"])
    assert index == {"the": 4, "and": 5, "movie": 6}
    assert encode(["the", "movie", "unseen"], index) == [START, 4, 6, OOV]
    # num_words=6 keeps indices 0..5: "movie" (6) becomes OOV, as in imdb.load_data
    assert encode(["the", "movie"], index, num_words=6) == [START, 4, OOV]


SEQS = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [], [7]]


@pytest.mark.parametrize(
    ("padding", "truncating", "expected"),
    [
        # Keras defaults: keep the last tokens, pad in front
        ("pre", "pre", [[0, 1, 2, 3], [6, 7, 8, 9], [0, 0, 0, 0], [0, 0, 0, 7]]),
        ("post", "pre", [[1, 2, 3, 0], [6, 7, 8, 9], [0, 0, 0, 0], [7, 0, 0, 0]]),
        ("pre", "post", [[0, 1, 2, 3], [4, 5, 6, 7], [0, 0, 0, 0], [0, 0, 0, 7]]),
        ("post", "post", [[1, 2, 3, 0], [4, 5, 6, 7], [0, 0, 0, 0], [7, 0, 0, 0]]),
    ],
)
def test_pad_sequences_matches_keras(padding, truncating, expected):
    padded = pad_sequences(RaggedSequences.from_lists(SEQS), 4, padding, truncating)
    assert padded.tolist() == expected
    assert padded.dtype == np.int64
    # Lists of lists or of arrays, as Keras takes them, give the same.
    assert pad_sequences(SEQS, 4, padding, truncating).tolist() == expected
    arrays = [np.array(s, dtype=np.int32) for s in SEQS]
    assert pad_sequences(arrays, 4, padding, truncating).tolist() == expected


def test_pad_sequences_rejects_bad_settings():
    ragged = RaggedSequences.from_lists(SEQS)
    with pytest.raises(ValueError):
        pad_sequences(ragged, 4, padding="middle")
    with pytest.raises(ValueError):
        pad_sequences(ragged, 0)


def test_ragged_round_trip():
    ragged = RaggedSequences.from_lists(SEQS)
    assert len(ragged) == 4
    assert [ragged[i].tolist() for i in range(4)] == SEQS


def test_cap_vocabulary_maps_large_indices_to_oov():
    values = np.array([0, 1, 2, 4, 499, 500, 9000])
    assert cap_vocabulary(values, 500).tolist() == [0, 1, 2, 4, 499, OOV, OOV]
