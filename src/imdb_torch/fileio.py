"""Atomic file writes, run locks, temporary-file clean-up, content fingerprints, the cache."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

try:
    import fcntl
except ImportError:  # Windows: runs are not locked there
    fcntl = None


TMP_SUFFIX = ".tmp"


def _umask() -> int:
    """The process's umask, read without changing it where /proc allows."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(directory: str | os.PathLike, older_than: float = 0.0) -> int:
    """Delete ``atomic_path``'s temporary files that a killed process left in ``directory``.

    ``older_than`` (seconds) spares files that a live process may still be writing; 0 is
    right only where this process holds the directory alone (``run_lock``). Returns how many.
    """
    removed = 0
    cutoff = time.time() - older_than
    for path in Path(directory).glob(f".*{TMP_SUFFIX}"):
        try:
            if path.is_file() and path.stat().st_mtime <= cutoff:
                path.unlink()
                removed += 1
        except OSError:
            pass  # gone already, or not ours to remove
    return removed


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold ``run_dir`` alone for as long as the block runs; raise ``UserError`` if another
    process holds it. The lock is the kernel's (``flock``): it goes with the process, also one
    killed with SIGKILL, so a dead run never blocks its resume."""
    lock_file = Path(run_dir) / ".lock"
    handle = open(lock_file, "a+")  # noqa: SIM115 - held open for the block's duration
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise UserError(
                    f"{run_dir} is in use by another training process ({holder}); "
                    "wait for it to finish, or resume another run"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
        yield
    finally:
        handle.close()


def abandoned(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds only the lock of a run that has gone (``run_lock`` free
    though it names a process): what a run killed outright before writing anything leaves.
    Told by the lock itself, the kernel's or the file server's, not by a pid, which would
    mean nothing on another machine; never on Windows, which has no such lock."""
    run_dir = Path(run_dir)
    if fcntl is None:
        return False
    try:
        if [entry.name for entry in run_dir.iterdir()] != [".lock"]:
            return False
        with open(run_dir / ".lock") as lock:
            if not lock.read().startswith("pid "):
                return False  # a run between opening its lock and taking it
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held (BlockingIOError), or unreadable
        return False
    return True


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    A crash or kill at any moment leaves either the old file or the new one, never a torn one,
    because the rename is atomic on one filesystem. On failure the temporary file is removed.
    """
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # mkstemp makes the file private (0600); what the user keeps and shares gets the
        # permissions any new file of theirs gets (where the filesystem has permissions).
        with contextlib.suppress(OSError):
            tmp.chmod(0o666 & ~_umask())
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


def files_fingerprint(root: str | os.PathLike, files: list[Path]) -> str:
    """Cheap fingerprint of files below ``root``: their paths, sizes and modification times.

    Hashing every byte of 50,000 reviews would cost more than reading them; a change to any
    file's size or modification time is what a cache needs to notice. A file that cannot be
    looked at (a broken link) counts as absent; a name need not be UTF-8.
    """
    digest = hashlib.sha256()
    for path in sorted(files):
        try:
            stat = path.stat()
        except OSError:
            continue
        name = os.fsencode(path.relative_to(root))
        digest.update(name + f"\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def nearest_existing(path: Path) -> Path:
    """``path`` if it exists, else its nearest parent that does: where a directory still to
    be made will be made, to check before anything is written."""
    return next(place for place in (path, *path.parents) if place.exists())


def default_cache_dir() -> Path:
    """``$IMDB_TORCH_CACHE``, else ``$XDG_CACHE_HOME/imdb-torch``, else ``~/.cache/imdb-torch``."""
    if os.environ.get("IMDB_TORCH_CACHE"):
        return Path(os.environ["IMDB_TORCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "imdb-torch"
