"""Downloads verified by checksum, cached, and written atomically."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import UserError
from ..fileio import atomic_path, default_cache_dir, file_digest

KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    digest: str
    algorithm: str = "sha256"


# The digests are the ones Keras itself verifies these files against.
IMDB_NPZ = RemoteFile(
    "imdb.npz",
    KERAS_ORIGIN + "imdb.npz",
    "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f",
)
IMDB_WORD_INDEX = RemoteFile(
    "imdb_word_index.json",
    KERAS_ORIGIN + "imdb_word_index.json",
    "bfafd718b763782e994055a2d397834f",
    algorithm="md5",
)

OFFLINE_HINT = (
    "point at local data with --data PATH (or the IMDB_TORCH_DATA environment variable): "
    "Keras's imdb.npz, aclImdb_v1.tar.gz, an extracted aclImdb/ directory, or reviews of "
    "your own laid out as aclImdb (train/pos, train/neg, test/pos, test/neg)"
)


def keras_datasets_dir() -> Path:
    """Where Keras keeps its downloads, so a copy it already verified can be reused."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "datasets"


def fetch(
    remote: RemoteFile,
    cache_dir: Path | None = None,
    timeout: float = 30.0,
    download: bool = True,
) -> Path:
    """Return a verified local copy of ``remote``, downloading it into the cache if needed."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    for candidate in (cache_dir / remote.name, keras_datasets_dir() / remote.name):
        if candidate.is_file() and file_digest(candidate, remote.algorithm) == remote.digest:
            return candidate
    if not download:
        raise UserError(f"no verified copy of {remote.name} in {cache_dir} or ~/.keras/datasets")

    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / remote.name
    try:
        with atomic_path(target) as tmp:
            _download(remote.url, tmp, timeout)
            actual = file_digest(tmp, remote.algorithm)
            if actual != remote.digest:
                raise UserError(
                    f"downloaded {remote.name} has {remote.algorithm} {actual}, expected "
                    f"{remote.digest}: the download is corrupt or was tampered with; "
                    "nothing was saved, try again or " + OFFLINE_HINT
                )
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"could not download {remote.url} ({reason}); {OFFLINE_HINT}") from exc
    return target


def _download(url: str, destination: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        name = url.rsplit("/")[-1]
        with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
