"""Classify raw reviews with a trained checkpoint."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from ..predictor import Predictor
from .common import run
from .parsers import build_predict_parser

PROG = "predict.py"


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


def _read_reviews(args) -> list[str]:
    """Reviews from the arguments, --file or stdin, decoded alike: UTF-8, with any bytes that
    are not replaced by U+FFFD; one review per line, lines split at newlines only."""
    if args.reviews and args.file is not None:
        raise UserError("give reviews as arguments or with --file, not both")
    if args.file == "":
        raise UserError("--file '': give a file of reviews, one per line")
    if args.reviews:
        # Arguments that were not UTF-8 reach Python as lone surrogates; decode them as bytes.
        raw = [text.encode("utf-8", "surrogateescape") for text in args.reviews]
        lines = [text.decode("utf-8", "replace") for text in raw]
    else:
        if args.file is not None:
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
        lines = lines if text else []  # an empty input holds no line, not one blank one
    reviews = [line for line in lines if line.strip()]
    if len(reviews) < len(lines):
        print(f"skipped {len(lines) - len(reviews)} blank review(s)", file=sys.stderr)
    if not reviews:
        raise UserError("no reviews to classify: give texts as arguments, --file, or stdin")
    return reviews


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


def _warn(predictions) -> None:
    for number, p in enumerate(predictions, start=1):
        if p.warning:
            print(f"review {number}: {p.warning}", file=sys.stderr)


def printable(text: str) -> str:
    """``text`` with control characters and escape sequences shown as escapes, not obeyed."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def _main(argv: Sequence[str] | None) -> int:
    args = build_predict_parser().parse_args(argv)
    _check_device(args.device)
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
