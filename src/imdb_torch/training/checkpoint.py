"""Loading checkpoints without trusting them.

A PyTorch checkpoint is a pickle, and unpickling can run arbitrary code. Every checkpoint is
read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ..config import DataConfig, ModelConfig, OptimConfig, RunConfig, Settings
from ..errors import UserError
from ..fileio import atomic_path
from .callbacks import RUN_SETTINGS_KEY
from .module import CHECKPOINT_MARK, SentimentClassifier

# Far above any model this program trains (the strong preset's checkpoints are a few MB).
MAX_CHECKPOINT_BYTES = 4 * 1024**3


def checkpoint_file(path: str | Path) -> Path:
    """``path``, refused in one line unless it is a file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory, not a checkpoint file")
    if path.exists() and not path.is_file():
        raise UserError(f"checkpoint {path} is not a regular file")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, checked to come from this program's training."""
    path = checkpoint_file(path)
    if not zipfile.is_zipfile(path):
        # torch.save writes a zip archive; anything else is damaged or not a checkpoint.
        raise UserError(f"{path} is not a readable checkpoint (corrupt or truncated?)")
    _check_integrity(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise UserError(
                f"{path} contains objects other than tensors and plain data; refusing to load "
                "it, since unpickling such a file can run code"
            ) from exc
        raise UserError(f"{path} is not a readable checkpoint (corrupt or truncated?)") from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path} is not a readable checkpoint (corrupt or truncated?)") from exc
    needed = (CHECKPOINT_MARK, "state_dict", "hyper_parameters")
    if not isinstance(checkpoint, dict) or not all(key in checkpoint for key in needed):
        raise UserError(f"{path} is a PyTorch file but not an imdb-torch checkpoint")
    state, hparams = checkpoint["state_dict"], checkpoint["hyper_parameters"]
    if not isinstance(hparams, dict) or not isinstance(state, dict):
        raise UserError(f"{path}: its settings or weights are not tables, as this program writes")
    if "net.ngrams.weight" in state:
        raise UserError(
            f"{path} holds the n-gram path of an earlier imdb-torch (added to the network, "
            "without naive-Bayes ratios), which this version no longer reads; train it again"
        )
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise UserError(f"{path}: weight {name!r} is not a tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{path}: weight {name!r} holds NaN or infinite values; not used")
    return checkpoint


def _check_integrity(path: Path) -> None:
    """Every member's CRC-32, as torch.save wrote it: a flipped byte in the weights is found
    here, where loading would take it silently."""
    try:
        with zipfile.ZipFile(path) as archive:
            if sum(info.file_size for info in archive.infolist()) > MAX_CHECKPOINT_BYTES:
                raise UserError(f"{path} unpacks to more than {MAX_CHECKPOINT_BYTES:,} bytes")
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise UserError(f"{path} is not a readable checkpoint (corrupt or truncated?)") from exc
    if damaged is not None:
        raise UserError(f"{path} is corrupt: its part {damaged!r} fails its checksum")


def model_from_checkpoint(
    checkpoint: dict[str, Any], fused_rnn: bool = True
) -> SentimentClassifier:
    """A ``SentimentClassifier`` with the checkpoint's settings and weights, in eval mode."""
    hparams, state = checkpoint["hyper_parameters"], checkpoint["state_dict"]
    if "model" not in hparams:  # written by 0.1, whose module held the layers itself
        hparams, state = _from_version_0_1(hparams, state)
    try:
        model = SentimentClassifier(hparams["model"], hparams["optim"], fused_rnn=fused_rnn)
        model.load_state_dict(state)
    except (TypeError, RuntimeError, KeyError) as exc:
        # PyTorch lists every mismatched tensor on its own line; the first says enough.
        lines = str(exc).splitlines() or [repr(exc)]
        named = ("size mismatch", "Missing key", "Unexpected key")
        first = next((line.strip() for line in lines if line.strip().startswith(named)),
                     lines[0])  # fmt: skip
        raise UserError(f"the checkpoint's model does not fit its settings ({first})") from exc
    return model.eval()


def is_version_0_1(checkpoint: dict[str, Any]) -> bool:
    return "model" not in checkpoint["hyper_parameters"]


def epochs_to_resume_from(checkpoint: dict[str, Any]) -> int:
    """How many epochs a checkpoint to be resumed has finished; refused in one line where its
    training cannot be continued (train.py --resume, reproduce.py)."""
    if is_version_0_1(checkpoint):
        raise UserError(
            "this checkpoint was written by imdb-torch 0.1, whose training state this version "
            "cannot continue; test.py and predict.py still read it"
        )
    epoch = checkpoint.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise UserError("the checkpoint records no finished epoch; it cannot be resumed")
    return epoch + 1


def _from_version_0_1(hparams: dict, state: dict) -> tuple[dict, dict]:
    """0.1's flat settings and ``embedding.weight``-style keys in today's form."""
    model_keys = {"arch", "num_words", "embedding_dim", "hidden_size", "num_layers", "dropout",
                  "word_dropout", "bidirectional", "packed", "pooling"}  # fmt: skip
    model = {key: value for key, value in hparams.items() if key in model_keys}
    optim = {key: hparams[key] for key in ("optimizer", "lr", "lr_decay", "grad_clip", "ema",
                                           "init") if key in hparams}  # fmt: skip
    optim["dense_embedding_updates"] = not hparams.get("sparse_embedding_updates", True)
    return {"model": model, "optim": optim}, {f"net.{key}": value for key, value in state.items()}


def settings_from_checkpoint(checkpoint: dict[str, Any]) -> Settings:
    """The settings a checkpoint was trained with (a checkpoint of this version)."""
    hparams = checkpoint["hyper_parameters"]
    data = {key: value for key, value in datamodule_settings(checkpoint).items()
            if key in DataConfig.__dataclass_fields__}  # fmt: skip
    try:
        return Settings(
            ModelConfig(**hparams["model"]),
            OptimConfig(**hparams["optim"]),
            DataConfig(**data),
            RunConfig(**checkpoint.get(RUN_SETTINGS_KEY, {})),
        ).check()
    except TypeError as exc:
        raise UserError(f"the checkpoint's settings are not this version's ({exc})") from exc


def datamodule_settings(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The data module's settings, checked as flags are (``IMDBDataModule(**settings)``)."""
    settings = checkpoint.get("datamodule_hyper_parameters", {})
    if not isinstance(settings, dict):
        raise UserError("the checkpoint's data settings are not a table")
    known = set(DataConfig.__dataclass_fields__) | {"num_words"}
    unknown = set(settings) - known
    if unknown:
        raise UserError(f"the checkpoint's data settings hold unknown keys: {sorted(unknown)}")
    data = {key: value for key, value in settings.items() if key != "num_words"}
    try:
        DataConfig(**data).check()
        ModelConfig(num_words=settings.get("num_words", 500)).check()
    except UserError as exc:
        raise UserError(f"the checkpoint's data settings are invalid: {exc}") from None
    return dict(settings)


def records_its_data(checkpoint: dict[str, Any]) -> bool:
    """Whether ``checkpoint`` says which data it was trained on, as train.py's do (the data
    module's settings). A Trainer fitted on plain DataLoaders, as examples/lesson_9_3.py's
    is, saves the weights and the model's settings alone."""
    return "datamodule_hyper_parameters" in checkpoint


def vocabulary(checkpoint: dict[str, Any]) -> list[str]:
    """Words by rank that the model was trained with (``words[r - 1]`` has index ``r + 3``)."""
    state = checkpoint.get("IMDBDataModule", {})
    words = state.get("words", []) if isinstance(state, dict) else None
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise UserError("the checkpoint's vocabulary is not a list of words")
    return list(words)


def check_vocabulary(checkpoint: dict[str, Any], words: list[str], doing: str) -> None:
    """Refuse data whose vocabulary is not the one ``checkpoint`` was trained with: the same
    indices would mean other words. ``doing``: what would be done with it ("evaluate")."""
    trained_words = vocabulary(checkpoint)
    if trained_words and words and trained_words != words:
        raise UserError(
            f"this data's vocabulary differs from the one the checkpoint was trained with: "
            f"{doing} on the same data source (--data) the model was trained on"
        )


def check_same_reviews(checkpoint: dict[str, Any], training_reviews: str, moved: bool) -> None:
    """Refuse to resume on other training reviews than the run's (other labels, say, under
    the same words): the run would go on learning something else. Checkpoints of 0.3 and
    before record none: data named anew (``moved``, --data given) is then taken with a word."""
    state = checkpoint.get("IMDBDataModule")
    recorded = state.get("training_reviews") if isinstance(state, dict) else None
    if not recorded:
        if not moved:
            return
        warnings.warn(
            "the checkpoint (of imdb-torch 0.3 or before) holds no digest of its training "
            "reviews: only their vocabulary could be checked to be the run's",
            stacklevel=2,
        )
        return
    if isinstance(recorded, str) and recorded != training_reviews:
        raise UserError(
            "the training reviews of this --data are not the ones the run was trained on "
            "(other reviews or labels, or other settings of the data): resume on the run's data"
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic on one filesystem.

    Lightning stages a local checkpoint in the system's temporary directory and moves it into
    place, which is a copy, not a rename, when that is another filesystem. Writing beside the
    target and renaming means a run killed while saving leaves the previous ``last.ckpt`` whole.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
