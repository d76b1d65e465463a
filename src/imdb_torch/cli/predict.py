"""Classify raw reviews with a trained checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from ..predictor import Predictor
from .common import ArgumentParser, add_plain_rnn_flag, positive_int, run

PROG = "predict.py"

EPILOG = """\
input:
  Reviews come from the arguments, else from --file (one review per line), else from standard
  input (one per line). Blank lines are skipped. Text is encoded as the model's training data
  was: lower case, punctuation and <br /> removed, words outside the model's vocabulary
  (num_words most frequent) become "unknown". A review longer than the model's maxlen is cut
  the way training data was (by default keeping its last maxlen words). The "known" column
  counts, among the words the model reads, those it has learnt (known/read). A review with no
  known word, or most of whose words lie outside what the model reads, still gets a
  probability, but a warning on stderr (and the "warning" field of --json) says why it means
  little.

examples:
  python scripts/predict.py --ckpt best.ckpt "This film was wonderful" "A dull, boring mess"
  python scripts/predict.py --ckpt best.ckpt --file reviews.txt --json
  cat reviews.txt | python scripts/predict.py --ckpt best.ckpt
"""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Print each review's probability of being positive, and its label.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("reviews", nargs="*", help="review texts (quote each one)")
    parser.add_argument("--ckpt", required=True, help="checkpoint from train.py (e.g. best.ckpt)")
    parser.add_argument("--file", help="a UTF-8 text file with one review per line")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--batch-size", type=positive_int, default=1024, help="reviews per batch (default 1024)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    add_plain_rnn_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


def _read_reviews(args) -> list[str]:
    """Reviews from the arguments, --file or stdin, decoded alike: UTF-8, with any bytes that
    are not replaced by U+FFFD; one review per line, lines split at newlines only."""
    if args.reviews:
        # Arguments that were not UTF-8 reach Python as lone surrogates; decode them as bytes.
        raw = [text.encode("utf-8", "surrogateescape") for text in args.reviews]
        lines = [text.decode("utf-8", "replace") for text in raw]
    else:
        if args.file:
            path = Path(args.file)
            if path.is_dir():
                raise UserError(f"--file {path}: a directory, not a file of reviews")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise UserError(f"cannot read {path}: {exc.strerror}") from exc
        else:
            if sys.stdin.isatty():
                print("reading reviews from standard input, one per line (Ctrl-D ends)",
                      file=sys.stderr)  # fmt: skip
            data = sys.stdin.buffer.read()
        # Not str.splitlines: that also splits at form feeds and Unicode line separators.
        text = data.decode("utf-8", "replace")
        lines = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]
    reviews = [line for line in lines if line.strip()]
    if len(reviews) < len(lines):
        print(f"skipped {len(lines) - len(reviews)} blank review(s)", file=sys.stderr)
    if not reviews:
        raise UserError("no reviews to classify: give texts as arguments, --file, or stdin")
    return reviews


def _warn(predictions) -> None:
    for number, p in enumerate(predictions, start=1):
        if p.warning:
            print(f"review {number}: {p.warning}", file=sys.stderr)


def printable(text: str) -> str:
    """``text`` with control characters and escape sequences shown as escapes, not obeyed."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    predictor = Predictor.from_path(args.ckpt, device=args.device, fused_rnn=not args.plain_rnn)
    reviews = _read_reviews(args)
    predictions = predictor.predict(reviews, batch_size=args.batch_size)
    # A terminal or pipe that cannot show a character gets an escape, not a crash.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    _warn(predictions)
    if args.json:
        utf8 = (sys.stdout.encoding or "").lower().replace("-", "") == "utf8"
        for p in predictions:
            record = {"text": p.text, "positive": round(p.positive, 6), "label": p.label,
                      "known_words": p.known_words, "words_read": p.words,
                      "words": p.total_words, "warning": p.warning}  # fmt: skip
            # allow_nan=False: every line is JSON (the weights are checked to be finite).
            print(json.dumps(record, ensure_ascii=not utf8, allow_nan=False))
        return 0
    print(f"{'positive':>8}  {'label':<8}  {'known':>9}  review")
    for p in predictions:
        known = f"{p.known_words}/{p.words}"
        text = printable(p.text)
        text = text if len(text) <= 70 else text[:67] + "..."
        print(f"{p.positive:8.3f}  {p.label:<8}  {known:>9}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
