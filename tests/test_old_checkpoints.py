"""Checkpoints of imdb-torch 0.1 (flat settings, the layers at the module's top level) still
evaluate and predict; resuming one is refused in one line."""

from __future__ import annotations

import torch

from imdb_torch.cli import predict as predict_cli
from imdb_torch.cli import test as test_cli
from imdb_torch.cli import train as train_cli
from imdb_torch.data.datamodule import IMDBDataModule
from imdb_torch.training.checkpoint import model_from_checkpoint, read_checkpoint

from .conftest import classifier

# hyper_parameters exactly as 0.1's SentimentRNN saved them for `--arch gru --num-words 30`
FLAT_SETTINGS = {
    "arch": "gru", "num_words": 30, "embedding_dim": 16, "hidden_size": 8, "num_layers": 1,
    "dropout": 0.0, "init": "keras", "optimizer": "rmsprop", "lr": 0.0001,
    "bidirectional": False, "packed": False, "grad_clip": None,
    "sparse_embedding_updates": True, "pooling": "last", "ema": None, "word_dropout": 0.0,
    "lr_decay": None,
}  # fmt: skip


def words_of(data) -> list[str]:
    datamodule = IMDBDataModule(str(data), num_words=30, maxlen=20)
    datamodule.setup()
    return datamodule.words


def write_old_checkpoint(path, data) -> torch.nn.Module:
    """A 0.1-style checkpoint of a fresh model's weights; returns that model."""
    torch.manual_seed(3)
    model = classifier(arch="gru", num_words=30).eval()
    state = {key.removeprefix("net."): value for key, value in model.state_dict().items()}
    assert list(state) == ["embedding.weight", "rnns.0.weight_ih_l0", "rnns.0.weight_hh_l0",
                           "rnns.0.bias_ih_l0", "rnns.0.bias_hh_l0", "head.weight",
                           "head.bias"]  # 0.1's names  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "imdb_torch": {"version": "0.1.0"},
            "epoch": 1,
            "hyper_parameters": FLAT_SETTINGS,
            "state_dict": state,
            "datamodule_hyper_parameters": {
                "data": str(data),
                "num_words": 30,
                "maxlen": 20,
                "padding": "pre",
                "truncating": "pre",
                "val_size": 0.2,
                "split_seed": 42,
                "batch_size": 64,
                "eval_batch_size": 512,
                "num_workers": 0,
                "cache_dir": None,
            },  # fmt: skip
            "IMDBDataModule": {"words": words_of(data)},
        },
        path,
    )
    return model


def test_a_0_1_checkpoint_loads_with_its_weights(tmp_path, tiny_tarball):
    path = tmp_path / "old.ckpt"
    original = write_old_checkpoint(path, tiny_tarball)
    loaded = model_from_checkpoint(read_checkpoint(path))
    assert loaded.model_config.arch == "gru" and loaded.model_config.num_words == 30
    assert loaded.optim_config.dense_embedding_updates is False
    tokens = torch.randint(0, 30, (4, 20))
    torch.testing.assert_close(loaded(tokens), original(tokens))


def test_a_0_1_checkpoint_is_evaluated_and_predicts(tmp_path, tiny_tarball, capsys):
    path = tmp_path / "old.ckpt"
    write_old_checkpoint(path, tiny_tarball)
    assert test_cli.main(["--ckpt", str(path)]) == 0
    assert "test_acc" in capsys.readouterr().out
    assert predict_cli.main(["--ckpt", str(path), "a movie with a plot"]) == 0


def test_resuming_a_0_1_checkpoint_is_refused_in_one_line(tmp_path, tiny_tarball, capsys):
    last = tmp_path / "gru" / "version_0" / "checkpoints" / "last.ckpt"
    write_old_checkpoint(last, tiny_tarball)
    assert train_cli.main(["--resume", str(last), "--save", str(tmp_path / "b.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "written by imdb-torch 0.1" in err and "test.py and predict.py still read it" in err
