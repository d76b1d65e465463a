"""Reading the Large Movie Review Dataset (``aclImdb``) from its archive or an extracted copy,
and any reviews laid out as it is: ``{train,test}/{pos,neg}/*.txt``, one review per file."""

from __future__ import annotations

import re
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import UserError

# aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt; train/unsup has no label and is skipped.
# Any other name of a .txt file is a review too, as Keras's text_dataset_from_directory reads a
# folder per class, but for hidden files (a macOS archive's ._ copies). Only files right in
# the four folders: in a folder given as --data, below it; in an archive, below at most one
# folder (aclImdb/). Not anywhere deeper, where a backup's train/pos would be taken for it.
_REVIEW_IN_FOLDER = re.compile(r"^(train|test)/(pos|neg)/([^/.][^/]*)\.txt$")
_REVIEW_IN_ARCHIVE = re.compile(r"^(?:\./)?(?:[^/]+/)?(train|test)/(pos|neg)/([^/.][^/]*)\.txt$")
_IMDB_NAME = re.compile(r"(\d+)_\d+")  # aclImdb's <id>_<rating>
LABELS = {"neg": 0, "pos": 1}
LABEL_NAMES = {label: name for name, label in LABELS.items()}
# Bounds on what is unpacked, far above the real set (its longest review is about 14 KB, the
# whole official archive about 500 MB), so that a crafted archive is refused as soon as its
# headers say what it would unpack, instead of filling the memory.
MAX_REVIEW_BYTES = 2**20
MAX_ARCHIVE_BYTES = 2**30


@dataclass(frozen=True)
class Review:
    split: str
    label: int
    id: int | None  # aclImdb's review number; None for a file named otherwise
    text: str
    name: str = ""  # the file's name without .txt
    utf8: bool = True  # False: the file was not UTF-8 text, and was read with U+FFFD for it

    @property
    def sort_key(self) -> tuple:
        # By label, then aclImdb's numbers in order, then other names: a fixed order, on which
        # the validation split depends.
        return (self.split, self.label, self.id is None, self.id or 0, self.name)


def _parse(pattern: re.Pattern, name: str, raw: bytes) -> Review | None:
    match = pattern.match(name)
    if not match:
        return None
    split, label, stem = match.groups()
    number = _IMDB_NAME.fullmatch(stem)
    try:
        text, utf8 = raw.decode("utf-8-sig"), True  # -sig: a byte-order mark is no word
    except UnicodeDecodeError:  # read all the same, what is not UTF-8 as U+FFFD
        text, utf8 = raw.decode("utf-8-sig", errors="replace"), False
    review_id = int(number.group(1)) if number else None
    return Review(split, LABELS[label], review_id, text, stem, utf8)


def _from_archive(path: Path) -> Iterator[Review]:
    try:
        with tarfile.open(path, "r:*") as archive:
            unpacked = 0
            for member in archive:
                unpacked += member.size
                _check_size(path, member.name, member.size, unpacked)
                if member.isfile() and _REVIEW_IN_ARCHIVE.match(member.name):
                    handle = archive.extractfile(member)
                    review = _parse(_REVIEW_IN_ARCHIVE, member.name, handle.read())
                    if review:
                        yield review
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        # tarfile's message may list each compression it tried, one per line.
        reason = " ".join(str(exc).split())
        raise UserError(f"{path} is truncated or not a readable tar archive ({reason})") from exc


def _check_size(source: Path, name: str, size: int, total: int) -> None:
    if total > MAX_ARCHIVE_BYTES:
        raise UserError(f"{source} unpacks to more than {MAX_ARCHIVE_BYTES:,} bytes: not aclImdb")
    if size > MAX_REVIEW_BYTES and _REVIEW_IN_ARCHIVE.match(name):
        raise UserError(f"{source}: {name} holds {size:,} bytes, far more than a review")


def review_files(root: Path) -> list[Path]:
    """The .txt files right in root's train/pos, train/neg, test/pos and test/neg (a class
    folder may be a link to one elsewhere)."""
    return sorted(file for split in ("train", "test") for label in ("pos", "neg")
                  for file in (root / split / label).glob("*.txt"))  # fmt: skip


def _from_directory(path: Path) -> Iterator[Review]:
    total = 0
    for file in review_files(path):
        if not file.is_file():
            continue  # a directory, device, pipe or broken link that happens to end in .txt
        size = file.stat().st_size
        total += size
        _check_size(path, file.relative_to(path).as_posix(), size, total)
        review = _parse(_REVIEW_IN_FOLDER, file.relative_to(path).as_posix(), file.read_bytes())
        if review:
            yield review


def read_reviews(path: Path) -> dict[str, list[Review]]:
    """Labelled train and test reviews, each split in a fixed order (``Review.sort_key``)."""
    source = _from_directory(path) if path.is_dir() else _from_archive(path)
    found: dict[tuple[str, int, str], Review] = {}
    for review in tqdm(
        source, desc=f"reading {path.name}", unit=" reviews", leave=False, disable=None
    ):
        # A file met again replaces the first, as unpacking the archive would: an archive
        # appended to (tar -r) holds both copies.
        found[review.split, review.label, review.name] = review
    splits: dict[str, list[Review]] = {"train": [], "test": []}
    for review in found.values():
        splits[review.split].append(review)
    not_text = [r for reviews in splits.values() for r in reviews if not r.utf8]
    if not_text:  # aclImdb's files are all UTF-8: another encoding, or not text at all
        first = not_text[0]
        warnings.warn(
            f"{len(not_text)} review file(s) in {path.name} are not UTF-8 text (the first: "
            f"{first.split}/{LABEL_NAMES[first.label]}/{first.name}.txt): they were read with "
            "U+FFFD in place of each byte that is not, so their words may not be yours",
            stacklevel=2,
        )
    for split, reviews in splits.items():
        # A classifier needs both classes: name the folders that gave none.
        empty = [f"{split}/{name}" for name, label in LABELS.items()
                 if not any(r.label == label for r in reviews)]  # fmt: skip
        if empty:
            raise UserError(
                f"{path} has no review in {' or '.join(empty)}: expected aclImdb's layout, "
                "one review per .txt file in train/pos, train/neg, test/pos, test/neg"
            )
        reviews.sort(key=lambda r: r.sort_key)
    return splits
