"""Train an LSTM or GRU sentiment classifier on IMDB, as in the Keras lesson."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from ..callbacks import MAX_EPOCHS_KEY
from ..checkpoint import read_checkpoint
from ..errors import UserError
from ..fileio import atomic_path
from ..model import ARCHS, INITS, POOLINGS, SentimentRNN
from ..optim import OPTIMIZERS
from ..plots import plot_losses
from ..presets import DEFAULTS, MODEL_KEYS, PRESETS, experiment_name, resolve_settings
from ..training import Hardware, prepare
from .common import (
    ArgumentParser,
    add_hardware_flags,
    devices_value,
    positive_int,
    quiet_lightning,
    run,
)

PROG = "train.py"

EPILOG = """\
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


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description=(
            "Train a sentiment classifier on IMDB: Embedding(500, 16) -> LSTM/GRU -> Dense(1), "
            "RMSprop(1e-4), batch 64, early stopping on validation loss with patience 3. "
            "Writes TensorBoard logs and checkpoints under --logdir, the best model to --save, "
            "and a train/val loss plot."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("model (defaults: the preset's, else LSTM(8))")
    model.add_argument("--preset", choices=PRESETS, help="a named configuration (see below)")
    model.add_argument("--arch", choices=ARCHS, help="recurrent layer type (default lstm)")
    model.add_argument("--num-layers", type=positive_int, help="stacked recurrent layers (1)")
    model.add_argument("--hidden-size", type=positive_int, help="units per layer (8)")
    model.add_argument("--embedding-dim", type=positive_int, help="embedding width (16)")
    model.add_argument(
        "--dropout",
        type=float,
        help="Keras-style input dropout on every recurrent layer, in [0, 1) (0)",
    )
    model.add_argument(
        "--word-dropout",
        type=float,
        help="drop each vocabulary word from a training batch with this probability, its "
        "embedding zeroed wherever it occurs, in [0, 1) (0; Keras has no such layer)",
    )
    model.add_argument(
        "--bidirectional",
        action=argparse.BooleanOptionalAction,
        help="read each review in both directions (off)",
    )
    model.add_argument(
        "--packed",
        action=argparse.BooleanOptionalAction,
        help="run the recurrent layers on packed sequences, skipping padding (off; Keras "
        "runs over the padding)",
    )
    model.add_argument(
        "--pooling",
        choices=POOLINGS,
        help="what the classifier reads: last = the final hidden state, as Keras's "
        "return_sequences=False (default); max / mean-max = the top layer's outputs pooled "
        "over the review's tokens (padding left out)",
    )
    model.add_argument(
        "--dense-embedding-updates",
        action="store_true",
        help="RMSprop updates the embedding from its dense gradient (Keras 2's rule); "
        "default: per word occurrence, as Keras 3 does",
    )
    model.add_argument(
        "--init",
        choices=INITS,
        default="keras",
        help="keras: Keras's initialisers (default); torch: PyTorch's",
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        default=None,
        help="imdb.npz, aclImdb_v1.tar.gz, an aclImdb/ directory, or 'tfds' (tensorflow-"
        "datasets' imdb_reviews, with the tfds extra); default: $IMDB_TORCH_DATA, else "
        "Keras's imdb.npz (downloaded once, verified)",
    )
    data.add_argument(
        "--num-words",
        type=positive_int,
        help="vocabulary size; rarer words become the out-of-vocabulary index 2 (default 500)",
    )
    data.add_argument("--maxlen", type=positive_int, help="tokens kept per review (default 100)")
    data.add_argument(
        "--padding",
        choices=("pre", "post"),
        default="pre",
        help="where padding goes (Keras default: pre)",
    )
    data.add_argument(
        "--truncating",
        choices=("pre", "post"),
        default="pre",
        help="pre keeps the last maxlen tokens (Keras default), post the first",
    )
    data.add_argument(
        "--val-size",
        type=float,
        default=0.2,
        help="validation share of the 25,000 training reviews (default 0.2)",
    )
    data.add_argument(
        "--split-seed", type=int, default=42, help="train_test_split random_state (default 42)"
    )
    data.add_argument(
        "--cache-dir",
        default=None,
        help="downloads and encoded data (default $IMDB_TORCH_CACHE or ~/.cache/imdb-torch)",
    )
    data.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="DataLoader worker processes (default 0: data is in memory)",
    )

    fit = parser.add_argument_group("training")
    fit.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help="rmsprop: Keras's formula, rho 0.9, eps 1e-7 (default); adam",
    )
    fit.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default 1e-4 for rmsprop, 1e-3 for adam)",
    )
    fit.add_argument(
        "--lr-decay",
        type=float,
        metavar="FACTOR",
        help="multiply the learning rate by FACTOR, in (0, 1), after each epoch that does not "
        "lower the validation loss (Keras's ReduceLROnPlateau, patience 0; default: constant)",
    )
    fit.add_argument("--batch-size", type=positive_int, help="(default 64)")
    fit.add_argument(
        "--grad-clip",
        type=float,
        help="clip the gradient norm to this value (default: no clipping)",
    )
    fit.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="validate, checkpoint and save an exponential moving average of the weights, "
        "updated after every step with this decay, e.g. 0.995 (default: off, as Keras)",
    )
    fit.add_argument(
        "--eval-batch-size",
        type=positive_int,
        default=512,
        help="validation/test batch size; changes speed, not results (default 512)",
    )
    fit.add_argument(
        "--max-epochs",
        type=positive_int,
        help="stop after this many epochs at most (default 100; strong: 7); on --resume, "
        "the run's own limit unless given",
    )
    fit.add_argument(
        "--patience",
        type=positive_int,
        help="epochs without a lower validation loss before stopping (default 3)",
    )
    fit.add_argument("--seed", type=int, default=42, help="seed for weights and shuffling (42)")

    add_hardware_flags(parser)
    hardware = parser._action_groups[-1]
    hardware.add_argument("--strategy", default="auto", help="e.g. ddp for several GPUs")
    hardware.add_argument("--num-nodes", type=positive_int, default=1, help="machines (1)")

    out = parser.add_argument_group("output")
    out.add_argument(
        "--logdir",
        default="lightning_logs",
        help="TensorBoard logs and checkpoints go to LOGDIR/NAME/version_N",
    )
    out.add_argument("--name", default=None, help="experiment name (default: the preset's)")
    out.add_argument(
        "--save",
        default="best.ckpt",
        help="where the best model is copied at the end (default best.ckpt)",
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="LAST_CKPT",
        help="continue an interrupted run from its last.ckpt: the newest run of this "
        "experiment, or the checkpoint given; model and data settings come from it",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


# Settings a resumed run takes from its checkpoint; giving another value is an error.
MODEL_FLAGS = (*MODEL_KEYS, "init")
DATA_FLAGS = (
    "num_words",
    "maxlen",
    "padding",
    "truncating",
    "val_size",
    "split_seed",
    "batch_size",
)
# Where the data is and how fast it is read may change between a run and its resume.
DATA_LOCATION_FLAGS = ("data", "cache_dir", "eval_batch_size", "num_workers")


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    save_path = Path(args.save).expanduser()
    if not save_path.parent.is_dir():
        raise UserError(f"cannot save to {save_path}: directory {save_path.parent} does not exist")
    if save_path.is_dir():
        raise UserError(f"cannot save to {save_path}: it is a directory")
    quiet_lightning()

    settings = _settings(args)
    if args.resume:
        resume_path, run_dir = _resume_target(args, settings)
        checkpoint_data = read_checkpoint(resume_path)
        model_kwargs, data_kwargs = _settings_from_checkpoint(
            checkpoint_data, args, _explicit_flags(argv)
        )
        name, version, logdir = run_dir.parent.name, _version_number(run_dir), run_dir.parent.parent
        if args.max_epochs is None:
            settings["max_epochs"] = checkpoint_data.get(MAX_EPOCHS_KEY, settings["max_epochs"])
        print(f"resuming {run_dir} from epoch {checkpoint_data['epoch'] + 1}")
    else:
        resume_path = None
        model_kwargs, data_kwargs = _settings_from_flags(args, settings)
        name = args.name or experiment_name(settings)
        logdir = Path(args.logdir).resolve()
        version = _claim_version(logdir / name)
    model_kwargs["fused_rnn"] = not args.plain_rnn
    run = prepare(
        model_kwargs,
        data_kwargs,
        seed=args.seed,
        max_epochs=settings["max_epochs"],
        # A resumed run continues with the patience it was started with (EarlyStopping's state).
        patience=settings["patience"],
        logdir=logdir,
        name=name,
        version=version,
        hardware=Hardware(
            args.accelerator,
            devices_value(args.devices),
            args.strategy,
            args.num_nodes,
            args.precision,
        ),  # fmt: skip
        progress=not args.no_progress,
    )
    if run.trainer.is_global_zero:
        print(f"experiment {name}: {_parameter_line(run.model)}")
    try:
        run.fit(resume_from=resume_path)
    except SystemExit:
        # Lightning ends a Ctrl-C'd fit with SystemExit after its graceful shutdown.
        if not run.trainer.interrupted:
            raise
        _explain_interrupt(run.checkpoint.last_model_path)
        return 130
    if not run.trainer.is_global_zero:
        return 0
    return _finish(run, save_path, name)


def _explain_interrupt(last_model_path: str) -> None:
    last = Path(last_model_path) if last_model_path else None
    if last is not None and last.is_file():
        print(
            f"\ninterrupted: epochs up to the last finished one are saved in {last}\n"
            f"resume with: python scripts/train.py --resume {last}",
            file=sys.stderr,
        )
    else:
        print("\ninterrupted before any epoch was saved: nothing to resume", file=sys.stderr)


def _settings_from_flags(args, settings: dict) -> tuple[dict, dict]:
    model_kwargs = {key: settings[key] for key in MODEL_KEYS}
    model_kwargs.update(init=args.init, sparse_embedding_updates=not args.dense_embedding_updates)
    data_kwargs = {key: getattr(args, key) for key in DATA_FLAGS + DATA_LOCATION_FLAGS}
    data_kwargs.update(num_words=settings["num_words"], maxlen=settings["maxlen"],
                       batch_size=settings["batch_size"])  # fmt: skip
    return model_kwargs, data_kwargs


def _settings(args) -> dict:
    """The lesson's defaults, then the preset's, then the flags given."""
    return resolve_settings(args.preset, {key: getattr(args, key) for key in DEFAULTS})


def _explicit_flags(argv: Sequence[str] | None) -> set[str]:
    """Destinations the user set on the command line (a parse where every default is None)."""
    parser = build_parser()
    parser.set_defaults(**{action.dest: None for action in parser._actions})
    given = parser.parse_args(argv)
    return {dest for dest, value in vars(given).items() if value not in (None, False)}


def _settings_from_checkpoint(checkpoint: dict, args, explicit: set[str]) -> tuple[dict, dict]:
    model_kwargs = dict(checkpoint["hyper_parameters"])
    data_kwargs = dict(checkpoint.get("datamodule_hyper_parameters", {}))
    # --preset and --name only pick which experiment's newest run is continued.
    for key in set(MODEL_FLAGS + DATA_FLAGS) & explicit:
        trained = model_kwargs.get(key, data_kwargs.get(key))
        if getattr(args, key) != trained:
            flag = "--" + key.replace("_", "-")
            raise UserError(
                f"{flag} {getattr(args, key)} does not fit the checkpoint being resumed "
                f"(trained with {key}={trained}); resume without it"
            )
    for key in set(DATA_LOCATION_FLAGS) & explicit:
        data_kwargs[key] = getattr(args, key)
    return model_kwargs, data_kwargs


def _resume_target(args, settings: dict) -> tuple[Path, Path]:
    """The checkpoint to resume and its run directory (``LOGDIR/NAME/version_N``)."""
    if args.resume != "latest":
        path = Path(args.resume).expanduser()
        run_dir = path.resolve().parent.parent
        if not path.is_file():
            raise UserError(f"checkpoint {path} does not exist")
        if not run_dir.name.startswith("version_"):
            raise UserError(
                f"{path} is not inside a run directory (LOGDIR/NAME/version_N/checkpoints)"
            )
        return path, run_dir
    base = Path(args.logdir) / (args.name or experiment_name(settings))
    runs = sorted(
        (run for run in base.glob("version_*") if (run / "checkpoints" / "last.ckpt").is_file()),
        key=_version_number,
    )
    if not runs:
        raise UserError(f"nothing to resume in {base}: no version_N/checkpoints/last.ckpt")
    return runs[-1] / "checkpoints" / "last.ckpt", runs[-1]


def _version_number(run_dir: Path) -> int:
    try:
        return int(run_dir.name.removeprefix("version_"))
    except ValueError:
        return -1


def _claim_version(experiment_dir: Path) -> int | None:
    """Create the next free ``version_N`` directory, so runs started together never share one.

    ``mkdir`` fails if the directory exists, which makes claiming a number atomic. Only the
    main process claims; the others of a multi-process run get the logger's default.
    """
    if int(os.environ.get("LOCAL_RANK", 0)) or int(os.environ.get("NODE_RANK", 0)):
        return None
    experiment_dir.mkdir(parents=True, exist_ok=True)
    taken = [_version_number(run) for run in experiment_dir.glob("version_*")]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (experiment_dir / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


def _parameter_line(model: SentimentRNN) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    line = f"{trainable:,} trainable parameters (the same model in Keras: "
    line += f"{model.keras_parameter_count():,})"
    if frozen:
        line += f", plus nn.LSTM's {frozen:,} recurrent biases held at 0 (Keras has one bias)"
    return line


def _finish(run, save_path: Path, name: str) -> int:
    best_path = run.restore_best()
    with atomic_path(save_path) as tmp:
        shutil.copyfile(best_path, tmp)
    history = run.history
    plot = plot_losses(history.epochs, Path(run.trainer.log_dir) / "loss.png", title=name)
    row = history.best()
    if row is not None:
        print(
            f"best epoch {row['epoch']} of {len(history.epochs)}: "
            f"val_loss {row['val_loss']:.4f}, val_acc {row.get('val_acc', float('nan')):.4f}"
        )
    print(f"best model:  {save_path}  (also {best_path})")
    print(f"loss plot:   {plot}")
    print(f"TensorBoard: tensorboard --logdir {run.trainer.logger.save_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
