"""Reading Keras's ``imdb.npz`` without letting its pickles run code.

The file stores each review as a Python list inside a NumPy object array, which NumPy can
only read by unpickling. ``np.load(allow_pickle=True)`` would execute whatever a crafted file
asks for; here the unpickler accepts nothing but NumPy's own array reconstruction.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from .sequences import RaggedSequences
from .text import INDEX_FROM, START

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
KERAS_SHUFFLE_SEED = 113  # imdb.load_data's default seed


class _ArrayOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


# The real imdb.npz unpacks to about 80 MB; a crafted one is refused before it is unpacked
# (its pickled lists grow about tenfold in memory, so the bound is kept low).
MAX_NPZ_BYTES = 2**28


def _read_npy(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    size = archive.getinfo(name).file_size
    with archive.open(name) as handle:
        version = np.lib.format.read_magic(handle)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, _fortran, dtype = read_header(handle)
        if not dtype.hasobject and math.prod(shape) * dtype.itemsize > size:
            # numpy would allocate what the header claims before reading a byte of it
            raise ValueError(f"{name}'s header claims more data than the file holds")
        if dtype.hasobject:
            return _ArrayOnlyUnpickler(handle, encoding="latin1").load()
    with archive.open(name) as handle:
        return np.lib.format.read_array(handle, allow_pickle=False)


def read_imdb_npz(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of an ``imdb.npz``, checked for shape and content."""
    try:
        with zipfile.ZipFile(path) as archive:
            if sum(info.file_size for info in archive.infolist()) > MAX_NPZ_BYTES:
                raise UserError(f"{path} unpacks to more than {MAX_NPZ_BYTES:,} bytes")
            names = {name.removesuffix(".npy") for name in archive.namelist()}
            missing = [name for name in ARRAYS if name not in names]
            if missing:
                raise UserError(
                    f"{path} is an .npz file but lacks {', '.join(missing)}: not Keras's imdb.npz "
                    "(a folder of reviews goes in a .tar.gz archive, not a .zip)"
                )
            arrays = {name: _read_npy(archive, name + ".npy") for name in ARRAYS}
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path} holds pickled objects other than arrays ({exc}); not loaded"
        ) from exc
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        raise UserError(f"{path} is not a readable .npz file ({exc})") from exc
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)) or len(x) != len(y):
            raise UserError(f"{path}: x_{split} and y_{split} do not match in length")
        if len(x) == 0 or not set(np.unique(y)) <= {0, 1}:
            raise UserError(f"{path}: y_{split} must hold 0/1 labels for at least one review")
    return arrays


def _to_ragged(reviews: np.ndarray, path: Path) -> RaggedSequences:
    try:
        lists = [[START, *(int(w) + INDEX_FROM for w in review)] for review in reviews]
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: reviews must be sequences of word indices ({exc})") from exc
    try:
        ragged = RaggedSequences.from_lists(lists)
    except OverflowError:
        raise UserError(f"{path}: word indices must be non-negative and below 2**31") from None
    if (ragged.values < INDEX_FROM).sum() != len(ragged):
        raise UserError(f"{path}: word indices must be non-negative")
    return ragged


def load_keras_imdb(path: Path):
    """``keras.datasets.imdb.load_data()``'s sequences, before ``num_words`` is applied.

    Same order as Keras (train and test each shuffled with ``RandomState(113)``), the start
    token in front and word ranks shifted by 3, so the book's ``train_test_split`` picks the
    same reviews.
    """
    arrays = read_imdb_npz(path)
    rng = np.random.RandomState(KERAS_SHUFFLE_SEED)
    out = {}
    for split in ("train", "test"):
        order = np.arange(len(arrays[f"x_{split}"]))
        rng.shuffle(order)
        out[split] = (
            _to_ragged(arrays[f"x_{split}"][order], path),
            arrays[f"y_{split}"][order].astype(np.int64),
        )
    return out
