"""--data tfds, on tensorflow-datasets' mock data (the tfds extra is installed in CI)."""

import builtins
import importlib.util
import os

import pytest

from imdb_torch.data.corpus import TFDS, load_corpus, resolve_source
from imdb_torch.data.datamodule import IMDBDataModule
from imdb_torch.errors import UserError


@pytest.fixture
def mock_tfds(tmp_path, monkeypatch):
    if importlib.util.find_spec("tensorflow_datasets") is None:
        message = "the tfds extra is not installed (pip install -e '.[tfds]')"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: never skip there
        pytest.skip(message)
    import tensorflow_datasets

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with tensorflow_datasets.testing.mock_data(num_examples=40):
        yield


def test_tfds_source_goes_through_the_keras_style_pipeline(mock_tfds, tmp_path):
    source = resolve_source("tfds")
    assert source.kind == TFDS and source.path == tmp_path / "tfds"
    corpus = load_corpus(source)
    assert len(corpus.train) == len(corpus.test) == 40
    assert corpus.words  # ranked from the training reviews
    assert all(corpus.train[i][0] == 1 for i in range(len(corpus.train)))  # start token
    datamodule = IMDBDataModule(data="tfds", num_words=50, maxlen=20)
    datamodule.setup("fit")
    assert len(datamodule.train_set) == 32 and len(datamodule.val_set) == 8
    assert datamodule.train_set.tokens.max() < 50


def test_without_the_extra_the_message_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_tfds(name, *args, **kwargs):
        if name.startswith("tensorflow_datasets"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tfds)
    with pytest.raises(UserError, match=r"pip install -e '\.\[tfds\]'"):
        load_corpus(resolve_source("tfds"))
