"""Command-line tools; ``scripts/*.py`` run them through ``launch``."""

import importlib
import signal
import sys
import threading
import types
from collections.abc import Sequence

# TensorBoard writes its event files through TensorFlow whenever TensorFlow is installed (the
# tfds extra brings it), and importing TensorFlow costs each program seconds of start-up and
# a screen of TensorFlow's log lines. Without TensorFlow it writes the same files through its
# own stand-in; a module named ``tensorboard.compat.notf`` is TensorBoard's switch to that
# stand-in (tensorboard/compat/__init__.py). Set before anything imports TensorBoard.
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


def launch(tool: str, argv: Sequence[str] | None = None) -> int:
    """Run ``tool`` (train, test, predict, compare, reproduce) on ``argv``, its flags parsed
    first: ``--help`` and a usage error answer before the seconds of importing PyTorch and
    Lightning, which the tool's own module does."""
    from . import parsers

    getattr(parsers, f"build_{tool}_parser")().parse_args(argv)  # exits on --help or an error
    try:
        module = importlib.import_module(f"{__name__}.{tool}")
    except KeyboardInterrupt:  # a Ctrl-C while PyTorch loads: nothing has started yet
        print(f"{parsers.program_name(tool)}: interrupted", file=sys.stderr)
        return 130
    status = module.main(argv)
    if status in (130, 143) and threading.current_thread() is threading.main_thread():
        # Stopped by a signal, and said so: another one while the interpreter shuts down (a
        # second or so, PyTorch's and Lightning's exit hooks) ends the process at once, rather
        # than interrupting an exit hook with a traceback.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return status


# The installed commands (pyproject.toml's [project.scripts]): imdb-torch-train is
# scripts/train.py, and so on.
def train_command() -> int:
    return launch("train")


def test_command() -> int:
    return launch("test")


def predict_command() -> int:
    return launch("predict")


def compare_command() -> int:
    return launch("compare")


def reproduce_command() -> int:
    return launch("reproduce")
