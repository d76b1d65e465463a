"""Evaluate a trained checkpoint on the test reviews of its data (IMDB's 25,000), as the lesson's
``model.evaluate(test_seq, test_target)``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix

from ..data.datamodule import IMDBDataModule
from ..errors import UserError
from ..fileio import TMP_SUFFIX
from ..reporting.runs import TEST_FILE, own_run_dir, write_test_result
from ..training.checkpoint import (
    check_vocabulary,
    datamodule_settings,
    model_from_checkpoint,
    read_checkpoint,
    records_its_data,
)
from ..training.module import is_positive
from ..training.trainer import evaluate
from .common import (
    hardware_from_flags,
    quiet_lightning,
    run,
    shown,
)
from .parsers import build_test_parser, program_name

PROG = program_name("test")


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


def _main(argv: Sequence[str] | None) -> int:
    args = build_test_parser().parse_args(argv)
    hardware = hardware_from_flags(args)
    if args.batch_size > 65536:
        raise UserError(f"--batch-size must be at most 65536, got {args.batch_size}")
    if not Path(args.ckpt).exists():
        raise UserError(f"checkpoint {args.ckpt} does not exist: train.py writes one, at its "
                        "--save (best.ckpt unless told otherwise)")  # fmt: skip
    checkpoint = read_checkpoint(args.ckpt)
    if args.data is None and not records_its_data(checkpoint):
        # Else the default data would be taken for it, perhaps with another vocabulary.
        raise UserError(f"{args.ckpt} does not record the data it was trained on (it was not "
                        "written by train.py): name that data with --data")  # fmt: skip
    model = model_from_checkpoint(checkpoint, fused_rnn=not args.plain_rnn)
    quiet_lightning()

    settings = datamodule_settings(checkpoint)
    trained_on = settings.get("data")  # a path, or a name ("keras", "tfds"), or None
    named = trained_on in (None, "keras", "tfds")
    if args.data is None and not named and not Path(trained_on).expanduser().exists():
        raise UserError(f"{args.ckpt} was trained on {trained_on}, which is not there any "
                        "more: name that data with --data")  # fmt: skip
    settings["eval_batch_size"] = args.batch_size
    for key in ("data", "cache_dir"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    datamodule = IMDBDataModule(**settings)
    datamodule.setup("test")
    check_vocabulary(checkpoint, datamodule.words, "evaluate")

    metrics = evaluate(model, datamodule, hardware, progress=not args.no_progress)
    probabilities = torch.cat(model.test_probabilities).numpy()
    labels = datamodule.test_set.labels.numpy().astype(np.int64)
    predicted = is_positive(probabilities).astype(np.int64)  # as test_acc counts hits

    # Recorded before anything is printed: a reader that stops early (| head) loses nothing.
    try:
        note, recorded = _record(checkpoint, Path(args.ckpt), metrics, len(labels),
                                 datamodule.source_record(), args.data is not None)  # fmt: skip
    except OSError as exc:
        # Named by the file it was to become, not by the temporary file written first.
        where = exc.filename2 or exc.filename
        if where and Path(where).name.startswith(".") and Path(where).name.endswith(TMP_SUFFIX):
            where = Path(where).parent / TEST_FILE
        note = f"the result is not recorded in the run directory: {exc.strerror}: {where}"
        recorded = None
    print(f"test reviews: {len(labels):,}")
    print(f"test_loss: {metrics['test_loss']:.4f}")
    print(f"test_acc:  {metrics['test_acc']:.4f}")
    print()
    print(
        classification_report(
            labels, predicted, target_names=["negative", "positive"], digits=4, zero_division=0
        )
    )  # a class never predicted: 0, not a warning
    matrix = confusion_matrix(labels, predicted)
    print("confusion matrix (rows: true, columns: predicted)")
    print(f"{'':>10}{'negative':>10}{'positive':>10}")
    for name, row in zip(("negative", "positive"), matrix, strict=True):
        print(f"{name:>10}{row[0]:>10}{row[1]:>10}")
    if recorded:
        print(f"\nrecorded in {shown(recorded)}, for compare.py and TensorBoard (test/acc)")
    if note:
        print(f"\n({note})", file=sys.stderr)
    return 0


def _record(
    checkpoint: dict, ckpt_path: Path, metrics: dict, reviews: int, data: dict, other_data: bool
) -> tuple[str, Path | None]:
    """Leave the result in the run directory, where compare.py finds it: only a measurement
    on the data the run was trained on, and only in the run that holds this checkpoint.
    Returns what a user should know about it, if anything, and the file written, if any."""
    run_dir = own_run_dir(checkpoint, ckpt_path)
    if run_dir is None:
        return "", None
    # 0.1 recorded no source: there the data is the run's own unless --data named another.
    recorded = checkpoint.get("IMDBDataModule", {}).get("source")
    same_data = recorded.get("fingerprint") == data["fingerprint"] if recorded else not other_data
    if not same_data:
        return (f"measured on other data than {run_dir} was trained on: its {TEST_FILE} is "
                "left as it was"), None  # fmt: skip
    epoch = checkpoint.get("epoch", 0) + 1 if isinstance(checkpoint.get("epoch"), int) else 1
    write_test_result(run_dir, metrics, reviews, ckpt_path, data, epoch)
    return "", run_dir / TEST_FILE


if __name__ == "__main__":
    sys.exit(main())
