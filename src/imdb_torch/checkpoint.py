"""Loading checkpoints without trusting them.

A PyTorch checkpoint is a pickle, and unpickling can run arbitrary code. Every checkpoint is
read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from .errors import UserError
from .fileio import atomic_path
from .model import SentimentRNN

MARK = "imdb_torch"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, checked to come from this program's training."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        # torch.save writes a zip archive; anything else is damaged or not a checkpoint.
        raise UserError(f"{path} is not a readable checkpoint (corrupt or truncated?)")
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
    needed = (MARK, "state_dict", "hyper_parameters")
    if not isinstance(checkpoint, dict) or not all(key in checkpoint for key in needed):
        raise UserError(f"{path} is a PyTorch file but not an imdb-torch checkpoint")
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any]) -> SentimentRNN:
    """A ``SentimentRNN`` with the checkpoint's settings and weights, in eval mode."""
    try:
        model = SentimentRNN(**checkpoint["hyper_parameters"])
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, RuntimeError) as exc:
        raise UserError(f"the checkpoint's model does not fit its settings ({exc})") from exc
    return model.eval()


def datamodule_settings(checkpoint: dict[str, Any]) -> dict[str, Any]:
    return dict(checkpoint.get("datamodule_hyper_parameters", {}))


def vocabulary(checkpoint: dict[str, Any]) -> list[str]:
    """Words by rank that the model was trained with (``words[r - 1]`` has index ``r + 3``)."""
    state = checkpoint.get("IMDBDataModule", {})
    return list(state.get("words", []))


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
