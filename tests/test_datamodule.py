import numpy as np
import pytest
import torch
from sklearn.model_selection import train_test_split

from imdb_torch.data.datamodule import IMDBDataModule
from imdb_torch.errors import UserError


def _setup(source, **kwargs):
    datamodule = IMDBDataModule(data=str(source), **kwargs)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_split_sizes_follow_train_test_split(tiny_npz):
    datamodule = _setup(tiny_npz, num_words=100, maxlen=20)
    assert len(datamodule.train_set) == 48 and len(datamodule.val_set) == 12
    assert len(datamodule.test_set) == 40
    # the same rows sklearn picks for test_size=0.2, random_state=42
    _, val_idx = train_test_split(np.arange(60), test_size=0.2, random_state=42)
    full = IMDBDataModule(data=str(tiny_npz), num_words=100, maxlen=20, val_size=0.5)
    full.setup("fit")
    all_rows = torch.cat([full.train_set.tokens, full.val_set.tokens])
    assert all(
        any(torch.equal(row, other) for other in all_rows) for row in datamodule.val_set.tokens
    )
    assert len(val_idx) == len(datamodule.val_set)


def test_split_is_deterministic_and_seeded(tiny_tarball):
    first = _setup(tiny_tarball, maxlen=10)
    again = _setup(tiny_tarball, maxlen=10)
    other = _setup(tiny_tarball, maxlen=10, split_seed=7)
    assert torch.equal(first.val_set.tokens, again.val_set.tokens)
    assert not torch.equal(first.val_set.tokens, other.val_set.tokens)


def test_num_words_maxlen_and_padding_are_applied(tiny_npz):
    datamodule = _setup(tiny_npz, num_words=50, maxlen=30)
    tokens = datamodule.train_set.tokens
    assert tokens.shape[1] == 30 and tokens.dtype == torch.int64
    assert tokens.max() < 50
    assert (tokens == 2).any()  # rarer words became OOV
    # pre-padding: a padded row starts with zeros and ends with a real token
    assert (tokens[:, -1] != 0).all()


def test_post_padding_option(tiny_npz):
    datamodule = _setup(tiny_npz, maxlen=200, padding="post")
    tokens = datamodule.train_set.tokens
    assert (tokens[:, 0] == 1).all()  # start token first
    assert (tokens[:, -1] == 0).any()


def test_loaders_give_whole_batches(tiny_tarball):
    datamodule = _setup(tiny_tarball, maxlen=12, batch_size=16)
    tokens, labels = next(iter(datamodule.train_dataloader()))
    assert tokens.shape == (16, 12) and labels.shape == (16,)
    assert labels.dtype == torch.float32
    total = sum(len(batch[1]) for batch in datamodule.val_dataloader())
    assert total == len(datamodule.val_set)


def test_vocabulary_state_holds_the_words_that_fit_num_words(tiny_tarball):
    datamodule = _setup(tiny_tarball, num_words=10)
    state = datamodule.state_dict()
    assert len(state["words"]) == 6  # indices 4..9
    fresh = IMDBDataModule(data=str(tiny_tarball))
    fresh.load_state_dict(state)
    assert fresh.words == state["words"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_words": 0},
        {"num_words": -5},
        {"maxlen": 0},
        {"batch_size": 0},
        {"batch_size": -1},
        {"padding": "middle"},
        {"val_size": 1.0},
    ],
)
def test_bad_data_settings_are_user_errors(kwargs):
    with pytest.raises(UserError):
        IMDBDataModule(**kwargs)


def test_prepare_data_leaves_an_existing_cache_unread(tiny_tarball, monkeypatch):
    import imdb_torch.data.corpus as corpus_module

    IMDBDataModule(data=str(tiny_tarball)).prepare_data()  # builds the cache

    def refuse(path):
        raise AssertionError("cache read in prepare_data")

    monkeypatch.setattr(corpus_module, "_read_cache", refuse)
    IMDBDataModule(data=str(tiny_tarball)).prepare_data()


def test_a_maxlen_whose_padded_reviews_would_not_fit_in_memory(tiny_tarball, monkeypatch):
    import imdb_torch.data.datamodule as datamodule

    # 80 training and 80 test reviews of 1,000 tokens: 1.9 MB, against 1 MB free.
    monkeypatch.setattr(datamodule, "_available_memory", lambda: 2**20)
    with pytest.raises(UserError, match="--maxlen 1000: 160 reviews padded to it need about"):
        IMDBDataModule(data=str(tiny_tarball), maxlen=1000).setup("fit")
    monkeypatch.setattr(datamodule, "_available_memory", lambda: 2**30)
    IMDBDataModule(data=str(tiny_tarball), maxlen=1000).setup("fit")


def test_free_memory_is_read_on_linux():
    from pathlib import Path

    import imdb_torch.data.datamodule as datamodule

    free = datamodule._available_memory()
    assert (free is not None) == Path("/proc/meminfo").is_file()
    assert free is None or free > 2**20


def test_reviews_that_cannot_be_cached_are_read_once(tiny_tarball, monkeypatch, recwarn):
    import imdb_torch.data.corpus as corpus_module

    builds = []
    build = corpus_module._build
    monkeypatch.setattr(corpus_module, "_build", lambda source: builds.append(1) or build(source))

    def disk_refuses(corpus, path):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(corpus_module, "_write_cache", disk_refuses)
    datamodule = IMDBDataModule(data=str(tiny_tarball))
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.prepare_data()  # as Lightning's fit calls it again, after the tools' setup
    datamodule.setup("fit")
    assert len(builds) == 1 and len(datamodule.train_set) > 0
    assert sum("could not cache" in str(w.message) for w in recwarn) == 1
