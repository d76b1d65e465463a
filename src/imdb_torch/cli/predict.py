"""Classify raw reviews with a trained checkpoint."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from ..predictor import Predictor
from .common import run
from .parsers import build_predict_parser, program_name

PROG = program_name("predict")


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


def _read_reviews(args) -> tuple[list[int], list[str]]:
    """Reviews from the arguments, --file or stdin, decoded alike: UTF-8, with any bytes that
    are not replaced by U+FFFD; one review per line, lines split at newlines only. With each
    review its number: its line in the input, or its place among the arguments, so that
    results can be matched with the input after blank lines are skipped."""
    if args.reviews and args.file is not None:
        raise UserError("give reviews as arguments or with --file, not both")
    if args.file == "":
        raise UserError("--file '': give a file of reviews, one per line")
    if args.reviews:
        # Arguments that were not UTF-8 reach Python as lone surrogates; decode them as bytes.
        raw = [text.encode("utf-8", "surrogateescape") for text in args.reviews]
        lines = [text.decode("utf-8", "replace") for text in raw]
    else:
        if args.file is not None and args.file != "-":  # -: standard input, as for cat
            path = Path(args.file)
            if path.is_dir():
                raise UserError(f"--file {path}: a directory, not a file of reviews")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise UserError(f"cannot read {path}: {exc.strerror}") from exc
        else:
            if sys.stdin is None:  # started with standard input closed (<&-)
                raise UserError("standard input is closed: give reviews as arguments or --file")
            if sys.stdin.isatty():
                print("reading reviews from standard input, one per line (Ctrl-D ends)",
                      file=sys.stderr)  # fmt: skip
            data = sys.stdin.buffer.read()
        # Not str.splitlines: that also splits at form feeds and Unicode line separators.
        text = data.decode("utf-8-sig", "replace")  # -sig: a byte-order mark is no word
        lines = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]
        lines = lines if text else []  # an empty input holds no line, not one blank one
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if len(numbered) < len(lines):
        print(f"skipped {len(lines) - len(numbered)} blank review(s)", file=sys.stderr)
    if not numbered:
        raise UserError("no reviews to classify: give texts as arguments, --file, or stdin")
    numbers, reviews = zip(*numbered, strict=True)
    return list(numbers), list(reviews)


def _check_device(text: str) -> None:
    """A device this machine has, in one line rather than PyTorch's traceback."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {text!r}: give cpu or cuda")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise UserError(f"--device {text}: no such CUDA GPU here ({count} available)")


# Reviews are classified and printed this many at a time, so that the first results come
# out within seconds: a 2-core CPU classifies about 5,000 reviews a second with the lesson's
# models (most of it reading the words), under 300 with the strong preset's.
BLOCK = 2_000
# Warnings printed one by one, then counted: in a file of IMDB reviews, four in ten are more
# than twice the lesson's 100 words, and their lines would bury everything else.
WARNINGS_SHOWN = 5


class Progress:
    """Shows "classified 20,000 of 100,000 reviews" on a terminal's stderr, rewritten in
    place, while the results go elsewhere (a file, a pipe): on a terminal they show progress
    themselves."""

    def __init__(self, total: int):
        self.total = total
        self.shown = total > BLOCK and sys.stderr.isatty() and not sys.stdout.isatty()

    def update(self, done: int) -> None:
        if self.shown:
            print(f"\rclassified {done:,} of {self.total:,} reviews", end="", file=sys.stderr,
                  flush=True)  # fmt: skip

    def clear(self) -> None:  # before other lines on stderr, and at the end
        if self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


class Warnings:
    """Each review's warning on stderr, the first ``WARNINGS_SHOWN`` of them; then a count.
    A review is named by its line in the input (``line 5``), or its place among the arguments
    (``review 2``)."""

    def __init__(self, progress: Progress, called: str):
        self.progress, self.called, self.count = progress, called, 0

    def add(self, predictions, numbers: list[int]) -> None:
        for number, p in zip(numbers, predictions, strict=True):
            if p.warning:
                self.count += 1
                if self.count <= WARNINGS_SHOWN:
                    self.progress.clear()
                    print(f"{self.called} {number}: {p.warning}", file=sys.stderr)

    def summary(self, json_output: bool) -> None:
        more = self.count - WARNINGS_SHOWN
        if more > 0:
            reviews = "review" if more == 1 else "reviews"
            where = "" if json_output else " (--json gives each review's)"
            print(f"... and {more:,} more {reviews} with a warning{where}", file=sys.stderr)


def printable(text: str) -> str:
    """``text`` with control characters and escape sequences shown as escapes, not obeyed."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def _main(argv: Sequence[str] | None) -> int:
    args = build_predict_parser().parse_args(argv)
    _check_device(args.device)
    if sys.stdout is None:  # started with standard output closed (>&-)
        raise UserError("standard output is closed: nowhere to print the results")
    predictor = Predictor.from_path(args.ckpt, device=args.device, fused_rnn=not args.plain_rnn)
    numbers, reviews = _read_reviews(args)
    # A terminal or pipe that cannot show a character gets an escape, not a crash.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    called = "review" if args.reviews else "line"  # how a review is numbered
    if not args.json:
        print(f"{called:>6}  {'positive':>8}  {'label':<8}  {'known':>9}  text")
    progress = Progress(len(reviews))
    warned = Warnings(progress, called=called)
    ascii_only = (sys.stdout.encoding or "").lower().replace("-", "") != "utf8"
    try:
        for start in range(0, len(reviews), BLOCK):
            predictions = predictor.predict(reviews[start : start + BLOCK], args.batch_size)
            block_numbers = numbers[start : start + BLOCK]
            warned.add(predictions, block_numbers)
            for number, p in zip(block_numbers, predictions, strict=True):
                print(_json_line(p, number, ascii_only) if args.json else _table_row(p, number))
            sys.stdout.flush()
            progress.update(start + len(predictions))
    finally:  # also when interrupted, or when the reader of the output has gone
        progress.clear()
    warned.summary(args.json)
    return 0


def _json_line(p, number: int, ascii_only: bool) -> str:
    # number: the review's line in --file or stdin, or its place among the arguments.
    record = {"number": number, "text": p.text, "positive": round(p.positive, 6), "label": p.label,
              "known_words": p.known_words, "words_read": p.words,
              "words": p.total_words, "warning": p.warning}  # fmt: skip
    # allow_nan=False: every line is JSON (the weights are checked to be finite).
    return json.dumps(record, ensure_ascii=ascii_only, allow_nan=False)


def _table_row(p, number: int) -> str:
    known = f"{p.known_words}/{p.words}"
    text = printable(p.text)
    text = text if len(text) <= 70 else text[:67] + "..."
    return f"{number:>6}  {p.positive:8.3f}  {p.label:<8}  {known:>9}  {text}"


if __name__ == "__main__":
    sys.exit(main())
