"""Atomic file writes and content fingerprints."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    A crash or kill at any moment leaves either the old file or the new one, never a torn one,
    because the rename is atomic on one filesystem. On failure the temporary file is removed.
    """
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in chunks so large archives need little memory."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_fingerprint(root: str | os.PathLike, pattern: str = "*.txt") -> str:
    """Cheap fingerprint of a directory tree: relative path, size and mtime of matching files.

    Hashing every byte of 50,000 reviews would cost more than reading them; a change to any
    file's size or modification time is what a cache needs to notice.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(root.rglob(pattern)):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$IMDB_TORCH_CACHE``, else ``$XDG_CACHE_HOME/imdb-torch``, else ``~/.cache/imdb-torch``."""
    if os.environ.get("IMDB_TORCH_CACHE"):
        return Path(os.environ["IMDB_TORCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "imdb-torch"
