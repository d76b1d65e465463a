"""Every setting, written once: its default (the lesson's value), its help text, its check.

Four dataclasses group them by who uses them: ``ModelConfig`` builds the network,
``OptimConfig`` the optimiser and its Keras details, ``DataConfig`` the data module and
``RunConfig`` the Trainer. The command-line flags (``cli/flags.py``), the presets below,
``hparams.yaml`` and the checkpoints are all derived from these classes.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import UserError

ARCHS = ("lstm", "gru")
POOLINGS = ("last", "max", "mean-max")
OPTIMIZERS = ("rmsprop", "adam")
INITS = ("keras", "torch")
SIDES = ("pre", "post")
MAX_EMBEDDING_WEIGHTS = 200_000_000  # 800 MB of float32, 2.4 GB with Adam's two moments
DEFAULT_LR = {"rmsprop": 1e-4, "adam": 1e-3}  # the lesson's RMSprop rate; Keras's Adam default


def setting(default: Any, help: str, **flag: Any) -> Any:
    """A dataclass field with its help text; ``flag`` holds extra argparse options."""
    return field(default=default, metadata={"help": help, **flag})


MIN_NUM_WORDS = 5  # indices 0-3 are reserved (data/text.py): one word at least


@dataclass(frozen=True)
class ModelConfig:
    """The network. The lesson's: ``Embedding(500, 16)`` → ``LSTM(8)`` → ``Dense(1)``."""

    arch: str = setting("lstm", "recurrent layer type", choices=ARCHS)
    num_words: int = setting(
        500, "vocabulary size, load_data(num_words=...); rarer words become index 2"
    )
    embedding_dim: int = setting(16, "embedding width")
    hidden_size: int = setting(8, "units per recurrent layer")
    num_layers: int = setting(1, "stacked recurrent layers")
    dropout: float = setting(0.0, "Keras-style input dropout on every recurrent layer, in [0, 1)")
    word_dropout: float = setting(
        0.0,
        "drop each vocabulary word from a training batch with this probability, its "
        "embedding zeroed wherever it occurs, in [0, 1) (Keras has no such layer)",
    )
    bidirectional: bool = setting(False, "read each review in both directions")
    packed: bool = setting(
        False, "run the recurrent layers on packed sequences, skipping padding (Keras runs "
        "over the padding)"
    )  # fmt: skip
    pooling: str = setting(
        "last",
        "what the classifier reads: last = the final hidden state, as Keras's "
        "return_sequences=False; max / mean-max = the top layer's outputs pooled over the "
        "review's tokens (padding left out)",
        choices=POOLINGS,
    )

    ngrams: int = setting(
        0,
        "beyond the lesson: beside the network, NBSVM's linear model over the review's "
        "word n-grams of 1 to N words (hashed, naive-Bayes-weighted), trained on its own "
        "loss; the answer is the mean of the two logits; 0: none",
        metavar="N",
    )
    ngram_buckets: int = setting(
        2**22, "weights the n-grams are hashed into (with --ngrams)", metavar="COUNT"
    )

    def check(self) -> None:
        _choice("arch", self.arch, ARCHS)
        _choice("pooling", self.pooling, POOLINGS)
        _check_types(self)
        _within("embedding_dim", self.embedding_dim, 1, 4096)
        _within("hidden_size", self.hidden_size, 1, 4096)
        _within("num_layers", self.num_layers, 1, 16)
        _within("num_words", self.num_words, MIN_NUM_WORDS, 2_000_000)
        if self.num_words * self.embedding_dim > MAX_EMBEDDING_WEIGHTS:
            raise UserError(
                f"--num-words {self.num_words} x --embedding-dim {self.embedding_dim} weights "
                f"exceed {MAX_EMBEDDING_WEIGHTS:,}; choose a smaller vocabulary or width"
            )
        _fraction("dropout", self.dropout)
        _fraction("word_dropout", self.word_dropout)
        _within("ngrams", self.ngrams, 0, 5)
        _within("ngram_buckets", self.ngram_buckets, 1, MAX_EMBEDDING_WEIGHTS)


@dataclass(frozen=True)
class OptimConfig:
    """How the network is trained: the lesson's ``RMSprop(learning_rate=1e-4)`` and extras."""

    optimizer: str = setting(
        "rmsprop",
        "rmsprop: Keras's formula, rho 0.9, eps 1e-7; adam: with Keras's eps 1e-7",
        choices=OPTIMIZERS,
    )
    lr: float | None = setting(None, "learning rate (default 1e-4 for rmsprop, 1e-3 for adam)")
    lr_decay: float | None = setting(
        None,
        "multiply the learning rate by FACTOR, in (0, 1), after each epoch that does not lower "
        "the validation loss (Keras's ReduceLROnPlateau, patience 0; default: constant)",
        metavar="FACTOR",
    )
    grad_clip: float | None = setting(
        None, "clip the network's gradient norm to this value (default: off)"
    )
    ngram_lr: float = setting(
        0.003, "learning rate of the n-gram model (--ngrams), which learns faster than the network"
    )
    ema: float | None = setting(
        None,
        "validate, checkpoint and save an exponential moving average of the weights, updated "
        "after every step with this decay, e.g. 0.995 (default: off, as Keras)",
        metavar="DECAY",
    )
    # How the weights start is part of training them as Keras does, so it lives here.
    init: str = setting(
        "keras", "keras: Keras's initialisers; torch: PyTorch's", choices=INITS
    )  # fmt: skip
    dense_embedding_updates: bool = setting(
        False,
        "RMSprop updates the embedding from its dense gradient (Keras 2's rule); "
        "default: per word occurrence, as Keras 3 does",
    )

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

    @property
    def per_occurrence_embedding_updates(self) -> bool:
        """Keras 3's embedding update (``keras_compat.EmbeddingOccurrences``), RMSprop only."""
        return self.optimizer == "rmsprop" and not self.dense_embedding_updates

    def check(self) -> None:
        _check_types(self)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("init", self.init, INITS)
        for name in ("lr", "ngram_lr"):
            value = getattr(self, name)
            _positive(name, value)
            if value is not None and value > 10:
                raise UserError(
                    f"{_flag(name)} must be at most 10 (larger rates diverge at once), got {value}"
                )
        _positive("grad_clip", self.grad_clip)
        for name in ("lr_decay", "ema"):
            value = getattr(self, name)
            _finite(name, value)
            if value is not None and not 0 < value < 1:
                raise UserError(f"{_flag(name)} must lie in (0, 1), got {value}")


@dataclass(frozen=True)
class DataConfig:
    """The data pipeline: ``load_data`` → ``train_test_split`` → ``pad_sequences``, batches.

    ``load_data``'s ``num_words`` is in ``ModelConfig``: it also sizes the ``Embedding``.
    """

    data: str | None = setting(
        None,
        "imdb.npz, aclImdb_v1.tar.gz, an aclImdb/ directory (or reviews of your own laid out "
        "as it is: train/pos, train/neg, test/pos, test/neg, one .txt file per review), or "
        "'tfds' (tensorflow-datasets' imdb_reviews, with the tfds extra); default: "
        "$IMDB_TORCH_DATA, else Keras's imdb.npz (downloaded once, verified)",
    )
    maxlen: int = setting(100, "tokens kept per review, pad_sequences(maxlen=...)")
    padding: str = setting("pre", "where padding goes (Keras's default: pre)", choices=SIDES)
    truncating: str = setting(
        "pre", "pre keeps the last maxlen tokens (Keras's default), post the first", choices=SIDES
    )  # fmt: skip
    val_size: float = setting(0.2, "validation share of the training reviews (IMDB's 25,000)")
    split_seed: int = setting(42, "train_test_split's random_state")
    batch_size: int = setting(64, "training batch size")
    eval_batch_size: int = setting(512, "validation/test batch size; changes speed, not results")
    num_workers: int = setting(0, "DataLoader worker processes (0: the data is in memory)")
    cache_dir: str | None = setting(
        None, "downloads and encoded data (default $IMDB_TORCH_CACHE or ~/.cache/imdb-torch)"
    )

    def check(self) -> None:
        _check_types(self)
        _within("maxlen", self.maxlen, 1, 100_000)
        _choice("padding", self.padding, SIDES)
        _choice("truncating", self.truncating, SIDES)
        _finite("val_size", self.val_size)
        if not 0 < self.val_size < 1:
            raise UserError(f"--val-size must lie strictly between 0 and 1, got {self.val_size}")
        _within("split_seed", self.split_seed, 0, 2**32 - 1)
        _within("batch_size", self.batch_size, 1, 65536)
        _within("eval_batch_size", self.eval_batch_size, 1, 65536)
        _within("num_workers", self.num_workers, 0, 256)
        for name in ("data", "cache_dir"):
            if getattr(self, name) == "":
                raise UserError(f"--{name.replace('_', '-')} must not be empty")


def data_name(data: str | None) -> str:
    """How a run's data is named to a person (compare.py, TensorBoard's HParams): the name of
    the file or folder --data gave, or "default" (Keras's imdb.npz, or $IMDB_TORCH_DATA)."""
    return Path(data).name if isinstance(data, str) and data else "default"


@dataclass(frozen=True)
class RunConfig:
    """The Trainer: ``fit(epochs=100)`` with ``EarlyStopping(patience=3)``, and the seed."""

    max_epochs: int = setting(
        100, "stop after this many epochs at most; on --resume, the run's own limit unless given"
    )  # fmt: skip
    patience: int = setting(3, "epochs without a lower validation loss before stopping")
    seed: int = setting(42, "seed for weights, dropout and shuffling")

    def check(self) -> None:
        _check_types(self)
        _within("max_epochs", self.max_epochs, 1, 1_000_000)
        _within("patience", self.patience, 1, 1_000_000)
        _within("seed", self.seed, 0, 2**32 - 1)


@dataclass(frozen=True)
class Settings:
    """All four groups of one training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)

    GROUPS = ("model", "optim", "data", "run")

    @classmethod
    def from_flat(cls, values: dict[str, Any], base: Settings | None = None) -> Settings:
        """``base`` (default: the lesson's settings) with ``values`` by setting name."""
        base = base or cls()
        unknown = set(values) - set(setting_names())
        if unknown:
            raise UserError(f"unknown settings: {', '.join(sorted(unknown))}")
        groups = {}
        for group in cls.GROUPS:
            config = getattr(base, group)
            mine = {key: value for key, value in values.items() if key in _names(type(config))}
            groups[group] = replace(config, **mine)
        return cls(**groups)

    def flat(self) -> dict[str, Any]:
        values = {}
        for group in self.GROUPS:
            values.update(asdict(getattr(self, group)))
        return values

    def check(self) -> Settings:
        for group in self.GROUPS:
            getattr(self, group).check()
        return self


CONFIGS = (ModelConfig, OptimConfig, DataConfig, RunConfig)


def _names(config_class) -> tuple[str, ...]:
    return tuple(f.name for f in fields(config_class))


def setting_names() -> tuple[str, ...]:
    return tuple(name for config_class in CONFIGS for name in _names(config_class))


EXPERIMENTS = ("lstm", "lstm-dropout", "lstm-2layer", "gru")  # the lesson's, as presets below

# The lesson's four experiments, and one beyond the book; a preset overrides some settings,
# flags given on the command line override anything.
PRESETS: dict[str, dict[str, Any]] = {
    "lstm": {"arch": "lstm"},  # LSTM(8)
    "lstm-dropout": {"arch": "lstm", "dropout": 0.3},  # LSTM(8, dropout=0.3)
    "lstm-2layer": {"arch": "lstm", "num_layers": 2, "dropout": 0.3},  # two stacked of those
    "gru": {"arch": "gru"},  # GRU(8)
    # Beyond the book: a bigger vocabulary and window, a two-layer bidirectional LSTM read
    # through mean and max pooling over the review's words, Adam with gradient clipping,
    # whole words dropped from each batch, the learning rate halved when validation stalls.
    # Not packed: on the CPU, packed sequences leave PyTorch's own oneDNN LSTM and a step
    # takes 6.7 times as long (benchmarks/strong_config.py). Each choice was measured
    # (docs/results.md): dropout 0.5 rather than 0.3, pooling rather than the final state,
    # Adam at 5e-4 rather than 1e-3, 10,000 words rather than 20,000 (a smaller model, and
    # no worse); word dropout 0.3 with the halving and patience 3 gave 0.8815 +- 0.0030 over
    # five seeds, against 0.8791 +- 0.0016 over three with word dropout 0.2 and patience 2.
    # At most 7 epochs: each takes about two and a half minutes on a 2-core CPU (8 do not fit
    # in 20 minutes), and three runs of five reached their lowest validation loss at the 7th.
    "strong": {
        "arch": "lstm",
        "embedding_dim": 64,
        "hidden_size": 64,
        "num_layers": 2,
        "dropout": 0.5,
        "bidirectional": True,
        "num_words": 10000,
        "maxlen": 400,
        "pooling": "mean-max",
        "optimizer": "adam",
        "lr": 5e-4,
        "grad_clip": 1.0,
        "word_dropout": 0.3,
        "lr_decay": 0.5,
        "patience": 3,
        "max_epochs": 7,
    },
}


def resolve(preset: str | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """The lesson's defaults, then the preset's, then ``overrides``; checked, and the learning
    rate filled in unless one is given (``DEFAULT_LR``: 1e-4 for RMSprop, as the lesson)."""
    settings = Settings.from_flat(PRESETS[preset]) if preset else Settings()
    settings = Settings.from_flat(overrides or {}, base=settings).check()
    return Settings.from_flat({"lr": settings.optim.learning_rate}, base=settings)


def experiment_name(model: ModelConfig) -> str:
    """The name of the preset with the same layers, else a descriptive one."""
    structure = ("arch", "embedding_dim", "hidden_size", "num_layers", "dropout",
                 "bidirectional", "pooling", "ngrams")  # fmt: skip
    for name in PRESETS:
        preset = resolve(name).model
        if all(getattr(preset, key) == getattr(model, key) for key in structure):
            return name
    name = f"{model.arch}-{model.num_layers}x{model.hidden_size}"
    if model.bidirectional:
        name = "bi" + name
    if model.dropout:
        name += f"-dropout{model.dropout:g}"
    if model.pooling != "last":
        name += f"-{model.pooling}pool"
    if model.ngrams:
        name += f"-{model.ngrams}grams"
    return name


# The checks: each names the flag, so the message reads as a command-line error.
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _finite(name: str, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{_flag(name)} must be a finite number, got {value}")


def _within(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise UserError(f"{_flag(name)} must be a whole number from {low} to {high}, got {value}")


def _check_types(config) -> None:
    """Each field's value is of its annotated type (an int passes for a float, a bool for
    nothing else): settings also come from checkpoints, which anyone can write."""
    for name, hint in typing.get_type_hints(type(config)).items():
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        value = getattr(config, name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        kinds = {type(None): value is None, bool: isinstance(value, bool),
                 str: isinstance(value, str), int: number and isinstance(value, int),
                 float: number}  # fmt: skip
        if not any(kinds[kind] for kind in allowed):
            expected = " or ".join("none" if k is type(None) else k.__name__ for k in allowed)
            raise UserError(f"{_flag(name)} must be {expected}, got {value!r}")


def _fraction(name: str, value: float) -> None:
    _finite(name, value)
    if not 0 <= value < 1:
        raise UserError(f"{_flag(name)} must lie in [0, 1), got {value}")


def _positive(name: str, value: float | None) -> None:
    _finite(name, value)
    if value is not None and not value > 0:
        raise UserError(f"{_flag(name)} must be positive, got {value}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"unknown {_flag(name)} {value!r}; choose from {', '.join(choices)}")
