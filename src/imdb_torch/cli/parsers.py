"""What each tool accepts: its flags and help, built without importing PyTorch or Lightning.

Importing those takes seconds, so ``launch`` (``cli/__init__.py``) parses a tool's flags with
these parsers first: ``--help`` and a mistyped flag answer at once. The tool then parses the
same flags again itself.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from pathlib import Path

from ..config import (
    EXPERIMENTS,
    PRESETS,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    resolve,
)
from ..errors import UserError
from .flags import add_setting_flags, given_settings


def program_name(tool: str) -> str:
    """The name a tool's usage and messages begin with: the installed command's when it was
    called by it (``imdb-torch-train``), the script's otherwise (``train.py``)."""
    installed = f"imdb-torch-{tool}"
    return installed if Path(sys.argv[0]).name == installed else f"{tool}.py"


def command_for(tool: str) -> str:
    """What to type to run ``tool``, for messages that tell the user to: the way the running
    tool was started (an installed command, ``python -m``, or a script, whose neighbour
    ``tool`` is)."""
    running = Path(sys.argv[0])
    if running.name.startswith("imdb-torch-"):
        return f"imdb-torch-{tool}"
    if running.resolve().parent == Path(__file__).resolve().parent:
        return f"python -m {__package__}.{tool}"  # the module itself, run with -m
    if running.suffix == ".py" and running.with_name(f"{tool}.py").is_file():
        return f"python {shlex.quote(str(running.with_name(f'{tool}.py')))}"
    return f"python scripts/{tool}.py"  # called from Python, not as a script


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are a single line on stderr (exit status 2).

    Each help text states its default itself, once: argparse's defaults formatter would add a
    second, and "None" where there is no default.
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_hardware_flags(parser: argparse.ArgumentParser, precision_note: str = ""):
    """The flags passed to Lightning's ``Trainer``; returns their group for tools to extend.
    ``precision_note``: what limits --precision in this tool."""
    group = parser.add_argument_group("hardware (passed to Lightning's Trainer)")
    group.add_argument(
        "--accelerator",
        default="auto",
        help="cpu, gpu, cuda, mps, or auto: a GPU when one is present (default auto)",
    )
    group.add_argument(
        "--devices", default="auto", help="how many devices, or which: e.g. 2 or 0,1 (default auto)"
    )
    group.add_argument(
        "--precision",
        default=None,
        help=f"e.g. 32-true or, on a GPU, bf16-mixed{precision_note} (default: 32-true)",
    )
    add_plain_rnn_flag(group)
    return group


def add_plain_rnn_flag(parser) -> None:
    parser.add_argument(
        "--plain-rnn",
        action="store_true",
        help="run PyTorch's own code, as it is: on the CPU, nn.LSTM/nn.GRU rather than the fused "
        "recurrent kernel (same results to 1e-5, several times slower); on a GPU, training "
        "launches each kernel rather than replaying CUDA graphs",
    )


DEFAULT_LOGDIR = "lightning_logs"
DEFAULT_SAVE = "best.ckpt"

TRAIN_EPILOG = """\
presets (the lesson's four experiments; flags given as well override them):
  lstm          LSTM(8)
  lstm-dropout  LSTM(8, dropout=0.3)
  lstm-2layer   two stacked LSTM(8, dropout=0.3)
  gru           GRU(8)
  strong        beyond the book: vocabulary 10,000, maxlen 400, two-layer bidirectional
                LSTM(64, dropout=0.5) read through mean and max pooling, word dropout 0.3,
                Adam 5e-4 halved after each epoch without a lower validation loss,
                gradient clipping at 1.0, patience 3, at most 7 epochs

examples:
  python scripts/train.py --arch gru
  python scripts/train.py --preset lstm-2layer --data aclImdb_v1.tar.gz
  python scripts/test.py --ckpt best.ckpt
"""


class TrainParser(ArgumentParser):
    """train.py's parser, which also resolves a new run's settings (``args.settings``, from
    ``config.resolve``, no PyTorch needed): a value out of range (``--dropout 1.5``) answers at
    once, as a mistyped flag does. On ``--resume``, ``args.settings`` is None: the settings come
    from the checkpoint, and train.py checks the flags given against them."""

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        parsed.settings = None
        if parsed.resume == "":
            self.error("argument --resume: give a checkpoint, or no value for the newest run")
        if not parsed.resume:
            try:
                parsed.settings = resolve(parsed.preset, given_settings(parsed))
            except UserError as exc:
                self.error(str(exc))
        return parsed


def build_train_parser() -> TrainParser:
    parser = TrainParser(
        prog=program_name("train"),
        # Wrapped here: the raw formatter, which keeps the epilog's lines, keeps this one's.
        description=textwrap.fill(
            "Train a sentiment classifier on IMDB: Embedding(500, 16) -> LSTM/GRU -> Dense(1), "
            "RMSprop(1e-4), batch 64, early stopping on validation loss with patience 3. "
            "Writes TensorBoard logs and checkpoints under --logdir, the best model to --save, "
            "and a train/val loss plot.",
            width=78,
        ),
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("model (defaults: the preset's, else the lesson's LSTM(8))")
    model.add_argument("--preset", choices=PRESETS, help="a named configuration (see below)")
    add_setting_flags(model, ModelConfig, skip=("num_words",))
    add_setting_flags(parser.add_argument_group("optimisation"), OptimConfig)
    data = parser.add_argument_group("data")
    add_setting_flags(data, ModelConfig, only=("num_words",))
    add_setting_flags(data, DataConfig)
    add_setting_flags(parser.add_argument_group("training"), RunConfig)

    hardware = add_hardware_flags(
        parser, " (16-mixed needs --optimizer adam or --dense-embedding-updates)"
    )
    hardware.add_argument(
        "--strategy",
        default="auto",
        help="e.g. ddp for several processes: GPUs, or CPU processes with --accelerator cpu",
    )
    hardware.add_argument("--num-nodes", type=positive_int, default=1, help="machines (1)")

    out = parser.add_argument_group("output")
    out.add_argument(
        "--logdir",
        default=DEFAULT_LOGDIR,
        help=f"TensorBoard logs and checkpoints go to LOGDIR/NAME/version_N (default: "
        f"{DEFAULT_LOGDIR})",
    )
    out.add_argument(
        "--name",
        default=None,
        help="experiment name, the run's folder under "
        "--logdir (default: the preset with the same layers, e.g. gru, else one "
        "made from them, e.g. gru-1x32)",
    )
    out.add_argument(
        "--save",
        default=None,
        help="where the best model is copied at the end, replacing an earlier checkpoint but "
        f"no other file (default: {DEFAULT_SAVE}; a resumed run: the --save it was started with)",
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="LAST_CKPT",
        help="continue an interrupted run from its last.ckpt: the newest run of this "
        "experiment (--preset, --name, --logdir pick it), or the checkpoint given; its "
        "settings come from the checkpoint",
    )
    return parser


def build_test_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=program_name("test"),
        description=(
            "Evaluate a checkpoint written by train.py on the IMDB test set: test loss and "
            "accuracy, scikit-learn's classification report and the confusion matrix. The data "
            "is prepared with the checkpoint's own settings (vocabulary size, maxlen, padding)."
        ),
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint from train.py (e.g. best.ckpt)")
    parser.add_argument("--data", default=None,
                        help="data source; default: the one the checkpoint was trained on (a "
                             "checkpoint not written by train.py, e.g. examples/lesson_9_3.py's, "
                             "records none: name it here)")  # fmt: skip
    parser.add_argument(
        "--cache-dir", default=None, help="the cache directory (default: as train.py)"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=512,
        help="evaluation batch size; changes speed, not results (default 512)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_hardware_flags(parser)
    return parser


PREDICT_EPILOG = """\
input:
  Reviews come from the arguments or from --file (one review per line; not both), else from
  standard input (one per line). Blank lines are skipped. Text is encoded as the model's
  training data was: lower case, punctuation and <br /> removed, words outside the model's
  vocabulary (num_words most frequent) become "unknown". A review longer than the model's
  maxlen is cut the way training data was (by default keeping its last maxlen words). The
  "known" column counts, among the words the model reads, those it has learnt (known/read). A
  review with no known word, or most of whose words lie outside what the model reads, still
  gets a probability, but a warning on stderr (and the "warning" field of --json) says why it
  means little.

examples:
  python scripts/predict.py --ckpt best.ckpt "This film was wonderful" "A dull, boring mess"
  python scripts/predict.py --ckpt best.ckpt --file reviews.txt --json
  cat reviews.txt | python scripts/predict.py --ckpt best.ckpt
"""


def build_predict_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=program_name("predict"),
        description="Print each review's probability of being positive, and its label.",
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("reviews", nargs="*", help="review texts (quote each one)")
    parser.add_argument("--ckpt", required=True, help="checkpoint from train.py (e.g. best.ckpt)")
    parser.add_argument(
        "--file",
        help="a UTF-8 text file with one review per line (- for "
        "standard input, which is also read when no review is given)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per review, its number the review's line in the input "
        "(or place among the arguments)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=1024, help="reviews per batch (default 1024)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    add_plain_rnn_flag(parser)
    return parser


def build_compare_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=program_name("compare"),
        description=(
            "Overlay train (dashed) and validation (solid) loss and accuracy per epoch of several "
            "runs in one figure, and print each run's best epoch, validation loss and accuracy, "
            "and test accuracy when test.py has evaluated it. Reads what training logged; "
            "nothing is trained again."
        ),
    )
    parser.add_argument(
        "runs",
        nargs="+",
        help="run directories (lightning_logs/gru/version_0), experiment directories "
        "(lightning_logs/gru: its newest run), log directories (lightning_logs: every run in "
        "it) or checkpoints",
    )
    parser.add_argument(
        "--out", default="compare.png", help="figure to write, PNG (default compare.png)"
    )
    return parser


def build_reproduce_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=program_name("reproduce"),
        description=(
            "Train the lesson's experiments (lstm, lstm-dropout, lstm-2layer, gru) with their "
            "exact settings, once per seed, evaluate each best checkpoint on the test set, and "
            "write OUT/runs/*.json, OUT/summary.md (mean ± std over seeds), OUT/curves.png and "
            "OUT/test_accuracy.png. Finished runs are kept: run it again after an interruption "
            "and it does the rest, resuming a run cut off mid-way from its last epoch."
        ),
    )
    parser.add_argument("--data", default=None, help="data source, as for train.py")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[42], help="one run per seed (default 42)"
    )
    parser.add_argument("--experiments", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS),
                        help="which of the lesson's experiments (default: all four)")  # fmt: skip
    parser.add_argument(
        "--max-epochs", type=positive_int, default=100, help="at most (default 100)"
    )
    parser.add_argument(
        "--patience", type=positive_int, default=3, help="early stopping (default 3)"
    )
    parser.add_argument(
        "--out", default="results/chapter", help="results directory (default results/chapter)"
    )
    parser.add_argument("--cache-dir", default=None, help="as for train.py")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_hardware_flags(parser, " (not 16-mixed: the lesson's RMSprop cannot take it)")
    return parser
