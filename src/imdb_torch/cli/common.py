"""What every command-line tool shares: one-line errors and the hardware flags."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from ..errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are a single line on stderr (exit status 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_hardware_flags(parser: argparse.ArgumentParser):
    """The flags passed to Lightning's ``Trainer``; returns their group for tools to extend."""
    group = parser.add_argument_group("hardware (passed to Lightning's Trainer)")
    group.add_argument(
        "--accelerator",
        default="auto",
        help="cpu, gpu, mps, ... or auto (a GPU when one is present)",
    )
    group.add_argument(
        "--devices", default="auto", help="how many devices, or which (e.g. 2 or 0,1)"
    )
    group.add_argument(
        "--precision", default=None, help="e.g. 32-true, 16-mixed, bf16-mixed (default: 32-true)"
    )
    add_plain_rnn_flag(group)
    return group


def add_plain_rnn_flag(parser) -> None:
    parser.add_argument(
        "--plain-rnn",
        action="store_true",
        help="on the CPU, run nn.LSTM/nn.GRU's own code instead of the fused recurrent kernel "
        "(same results to 1e-5, several times slower; the GPU always runs cuDNN)",
    )


def devices_value(text: str):
    """Lightning accepts 'auto', a count, or a list of device indices."""
    if text == "auto":
        return text
    if "," in text:
        return [int(part) for part in text.split(",") if part]
    return int(text)


def quiet_lightning() -> None:
    """Silence warnings that do not apply to in-memory tensor datasets, and Lightning's tips."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_a_tip)


def _not_a_tip(record: logging.LogRecord) -> bool:
    # Every Trainer would otherwise start by suggesting packages for Lightning's cloud services.
    return not str(record.msg).startswith("💡 Tip")


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """Call ``main``; a ``UserError`` becomes ``prog: error: message`` and exit status 2."""
    try:
        return main(argv)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
