"""What every command-line tool shares: one-line errors, signals (SIGTERM as Ctrl-C, a second
one ending the run), Lightning's console lines kept to those worth reading, and the hardware
flags."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import select
import signal
import stat
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import StrategyRegistry

from ..errors import UserError
from ..fileio import nearest_existing
from ..training.trainer import Hardware

# What a resumed run may change: where the data is, how fast it is read, how long to train.
# Any other setting must match the checkpoint's.
CHANGEABLE_ON_RESUME = ("data", "cache_dir", "eval_batch_size", "num_workers", "max_epochs")


def check_writable(directory: Path, what: str) -> None:
    """Found before training, not when its results are written at the end."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise UserError(f"{what}: cannot write in {directory} ({exc.strerror})") from exc


def check_directory_to_be(directory: Path, what: str) -> None:
    """``directory`` is, or can be made as, a directory this process can write in: judged
    by the nearest folder that exists, so that nothing is made before the work starts."""
    existing = nearest_existing(directory)
    if not existing.is_dir():
        raise UserError(f"{what}: {existing} is a file, not a directory")
    check_writable(existing, what)


def devices_value(text: str):
    """Lightning accepts 'auto', a count (-1: all), or a list of device indices."""
    if text == "auto":
        return text
    try:
        if "," in text:
            indices = [int(part) for part in text.split(",") if part.strip()]
            if indices and all(index >= 0 for index in indices):
                return indices
        elif int(text) >= 1 or int(text) == -1:
            return int(text)
    except ValueError:
        pass
    raise UserError(f"--devices {text!r}: give auto, a count such as 2, or indices such as 0,1")


# Lightning's own names; it would reject anything else with a traceback.
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true",
              "64-true", "64", "transformer-engine", "transformer-engine-float16")  # fmt: skip


def hardware_from_flags(args) -> Hardware:
    """The hardware flags checked (one-line errors, before any work) and as a ``Hardware``."""
    on_cpu = _checked_accelerator(args.accelerator)
    _check_precision(args.precision, on_cpu)
    devices = _checked_devices(args.devices, on_cpu)
    strategy = getattr(args, "strategy", "auto")
    if strategy not in ("auto", *StrategyRegistry.available_strategies()):
        raise UserError(f"--strategy {strategy!r}: use auto or one of Lightning's, e.g. ddp")
    if any(kind in strategy for kind in ("spawn", "fork", "notebook")):
        # Their workers train, and the process that reports (history, loss plot, best model)
        # gets back only the weights and the checkpoint paths.
        raise UserError(f"--strategy {strategy}: training in spawned or forked workers is not "
                        "supported; use --strategy ddp")  # fmt: skip
    num_nodes = getattr(args, "num_nodes", 1)
    _check_nodes(num_nodes)
    hardware = Hardware(args.accelerator, devices, strategy, num_nodes, args.precision)
    _check_with_lightning(hardware)
    return hardware


def _check_with_lightning(hardware: Hardware) -> None:
    """The flags as Lightning takes them: a Trainer made and dropped, so that what Lightning
    refuses (a strategy that needs a GPU, a package not installed, an accelerator this machine
    lacks) is one line before any work, not a traceback after a run directory is made."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)  # its "GPU available" lines belong to the real Trainer
    try:
        L.Trainer(**asdict(hardware), logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    except Exception as exc:  # noqa: BLE001  (Lightning raises several kinds for this)
        flags = f"--accelerator {hardware.accelerator} --strategy {hardware.strategy}"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{flags}: {reason}") from None
    finally:
        logger.setLevel(level)


# Where each machine of a multi-machine run learns its place: Lightning's own variables, or
# those of SLURM, torchrun, LSF and MPI, which Lightning reads too.
CLUSTER_VARIABLES = ("NODE_RANK", "MASTER_ADDR", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID",
                     "LSB_JOBID", "OMPI_COMM_WORLD_SIZE")  # fmt: skip


def _check_nodes(num_nodes: int) -> None:
    if num_nodes > 2**16:
        raise UserError(f"--num-nodes {num_nodes}: at most {2**16} machines")
    if num_nodes > 1 and not any(name in os.environ for name in CLUSTER_VARIABLES):
        # Lightning would wait half an hour for machines that were never told to come.
        raise UserError(
            f"--num-nodes {num_nodes}: start the command on every machine with MASTER_ADDR, "
            "MASTER_PORT and NODE_RANK set (or under SLURM or torchrun); none is set here"
        )


def _checked_accelerator(accelerator: str) -> bool:
    """Whether the run will be on the CPU; refuses what this machine does not have."""
    if accelerator not in ACCELERATORS:
        raise UserError(f"--accelerator {accelerator!r}: choose from {', '.join(ACCELERATORS)}")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if (accelerator == "cuda" or (accelerator == "gpu" and not mps)) and not cuda:
        raise UserError(f"--accelerator {accelerator}: no CUDA GPU is available here")
    if accelerator == "mps" and not mps:
        raise UserError("--accelerator mps: Apple's MPS is not available here")
    return accelerator == "cpu" or (accelerator == "auto" and not cuda and not mps)


def _check_precision(precision: str | None, on_cpu: bool) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if on_cpu and precision not in (None, "32-true", "32", "64-true", "64"):
        # Lightning would run 16-mixed as bf16 on the CPU, where PyTorch's LSTM has no bf16
        # kernel on many processors; the lesson's models gain nothing from it there anyway.
        raise UserError(f"--precision {precision} needs a GPU; on the CPU use 32-true")


def _checked_devices(text: str, on_cpu: bool):
    devices = devices_value(text)
    if on_cpu and devices != "auto" and not (isinstance(devices, int) and devices >= 1):
        raise UserError(f"--devices {text}: on the CPU give a number of processes, e.g. 2")
    if not on_cpu and torch.cuda.is_available():
        count = torch.cuda.device_count()
        indices = devices if isinstance(devices, list) else []
        if (isinstance(devices, int) and devices > count) or any(i >= count for i in indices):
            raise UserError(f"--devices {text}: this machine has {count} GPU(s)")
    return devices


def quiet_lightning() -> None:
    """Leave out Lightning's lines that tell a user of these tools nothing they can act on."""
    # In-memory tensors need no loader workers; the logging interval and a resumed run's
    # non-empty checkpoint folder are as intended; LeafSpec is Lightning's own deprecation.
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", pattern)
    for name in ("lightning.pytorch.utilities.rank_zero",
                 "lightning.pytorch.trainer.connectors.signal_connector"):  # fmt: skip
        logging.getLogger(name).addFilter(_worth_saying)


QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*LeafSpec.*",
    ".*smaller than the logging interval.*",
    ".*exists and is not empty.*",
)
NOT_WORTH_SAYING = (
    "💡 Tip",  # suggestions of Lightning's cloud services, at every Trainer
    "GPU available: False",  # no GPU: nothing to say (a GPU left unused is still said)
    "TPU available",
    "HPU available",
    # Advice to trade float32's precision for TF32's speed: these tools keep float32, as Keras
    # computes, and a lesson step waits on the host, not on the GPU's arithmetic
    # (docs/performance.md).
    "You are using a CUDA device",
    "`Trainer.fit` stopped",  # train.py says how the run ended, in its own words
    "\nDetected KeyboardInterrupt",  # the tools say what an interrupt saved, and how to resume
    "Received SIGTERM",
    "Restoring states from",  # train.py says which run it resumes, from which epoch
    "Restored all states",
)


def _worth_saying(record: logging.LogRecord) -> bool:
    message = re.sub(r"^\[rank: \d+\] ", "", str(record.msg))  # as Lightning prefixes some
    return not message.startswith(NOT_WORTH_SAYING)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """Call ``main``; a ``UserError`` becomes ``prog: error: message`` and exit status 2, and
    a warning ``prog: warning: message``, without the source line Python adds for a
    programmer. SIGTERM stops it as Ctrl-C does (``prog: interrupted``, and what the tool
    does on Ctrl-C: temporary files removed, a run left resumable), with status 143."""
    format_warning = warnings.formatwarning
    warnings.formatwarning = lambda message, *args, **kwargs: f"{prog}: warning: {message}\n"
    _STOPPED_BY_SIGTERM.clear()
    sigterm_was = _sigterm_as_interrupt()
    # Lightning ignores Ctrl-C after an interrupt, while it tidies up, and leaves it so: the
    # tool gives the process back as it found it.
    main_thread = threading.current_thread() is threading.main_thread()
    sigint_was = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        return main(argv)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if not started_by_train_py():  # the first process says it, once
            print(f"{prog}: interrupted", file=sys.stderr)
        return interrupted_status()
    except BrokenPipeError:
        if not _reader_gone():
            raise
        # Whoever read the output has gone (`| head`): stop as other tools do, quietly, and
        # with stdout pointed away, so that Python's flush at exit does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        if output_has_no_room():  # `> /dev/full`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit
            print(f"{prog}: error: no space left for the output ({exc.strerror})",
                  file=sys.stderr)  # fmt: skip
        else:
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"{prog}: error: the disk is full{where}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = format_warning
        if sigterm_was is not None:
            signal.signal(signal.SIGTERM, sigterm_was)
        if sigint_was is not None:
            signal.signal(signal.SIGINT, sigint_was)


def output_has_no_room() -> bool:
    """Whether standard output is a device or pipe that takes nothing more (``> /dev/full``):
    an empty write, which such a device refuses. (Output to a file on a full disk is the
    disk's problem, which the tools report as such.)"""
    try:
        if sys.stdout is None or stat.S_ISREG(os.fstat(sys.stdout.fileno()).st_mode):
            return False
        sys.stdout.flush()
        os.write(sys.stdout.fileno(), b"")
        return False
    except OSError as exc:
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    except ValueError:  # a standard output that is no file (a test's capture)
        return False


def _reader_gone() -> bool:
    """Whether standard output is a pipe whose reading end has been closed."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no stdout
        return False


@contextlib.contextmanager
def second_signal_ends_it(before_exit: Callable[[], None] = lambda: None) -> Iterator[None]:
    """While the block runs, a second Ctrl-C or SIGTERM ends the process at once.

    The first is Lightning's: it stops after the current step and tidies up. A process that
    waits inside a C++ call (another rank's collective, say) never gets back to Python to do
    so, and Python handlers wait with it; the byte that Python's C-level handler writes to
    the wake-up pipe still arrives, and a thread reading it ends the process on the second.
    ``before_exit`` runs first (e.g. to end the other processes of a multi-process run).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    _PIPE[:] = [read_end, write_end]
    # A handler of Python's own, so the signal reaches the pipe instead of killing the
    # process outright; the first still stops the run gracefully, as Ctrl-C does. (Inside
    # run(), which installs the same handler, there is nothing to replace.)
    sigterm_was = _sigterm_as_interrupt()

    def watch() -> None:
        seen = 0
        with open(read_end, "rb", buffering=0) as pipe:  # closed here, at the pipe's end
            while data := pipe.read(64):
                signals = [byte for byte in data if byte in (signal.SIGINT, signal.SIGTERM)]
                seen += len(signals)
                if seen >= 2:
                    print("\nsecond interrupt: stopping at once", file=sys.stderr, flush=True)
                    before_exit()
                    os._exit(128 + signals[-1])

    threading.Thread(target=watch, name="second-signal", daemon=True).start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        _PIPE.clear()
        if sigterm_was is not None:
            signal.signal(signal.SIGTERM, sigterm_was)
        os.close(write_end)  # the watching thread reads the pipe's end and returns


def _interrupt_on_sigterm(signum, frame):
    _STOPPED_BY_SIGTERM[:] = [True]
    raise KeyboardInterrupt


def _sigterm_as_interrupt():
    """Make SIGTERM raise KeyboardInterrupt, where nothing else handles it; returns the
    handler to put back, or None where none was replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return None
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    return signal.SIG_DFL  # None: set outside Python, which means the default here too


_STOPPED_BY_SIGTERM: list[bool] = []  # set once SIGTERM, rather than Ctrl-C, stopped the tool


STARTED_BY = "IMDB_TORCH_STARTED_BY"  # in a rank train.py started: that train.py's pid


def local_rank() -> int:
    """This process's rank on its machine: 0 but in a rank a launcher started."""
    return int(os.environ.get("LOCAL_RANK") or 0)


def started_by_train_py() -> bool:
    """Whether this process is a rank that train.py started through Lightning's launcher."""
    return local_rank() > 0 and bool(os.environ.get(STARTED_BY))


def interrupted_status(trainer: L.Trainer | None = None) -> int:
    """The exit status of a tool that a signal stopped, as a shell reports a process the
    signal ended: 128 + its number, 130 after Ctrl-C and 143 after SIGTERM (which a
    ``trainer`` notes too, where Lightning's handler heard it alone).

    0 in a rank that train.py started, once the ranks have met: the first process reports
    the interrupt, and Lightning's launcher there kills every process (itself too, with
    SIGKILL) as soon as one of those it started ends with another status, before it can say
    how to resume. Not before they have met: the first may be waiting for this one, in code
    that only that kill ends."""
    if started_by_train_py() and dist.is_available() and dist.is_initialized():
        return 0
    by_sigterm = _STOPPED_BY_SIGTERM or (trainer is not None and trainer.received_sigterm)
    return 128 + (signal.SIGTERM if by_sigterm else signal.SIGINT)


_PIPE: list[int] = []  # the wake-up pipe while second_signal_ends_it runs


def _forget_pipe_in_child() -> None:
    # A forked child (a DataLoader worker, a ddp_fork rank) shares the process group: its own
    # copy of a Ctrl-C must not count as a second one in the parent's pipe.
    if _PIPE:
        signal.set_wakeup_fd(-1)
        for fd in _PIPE:
            with contextlib.suppress(OSError):
                os.close(fd)
        _PIPE.clear()


os.register_at_fork(after_in_child=_forget_pipe_in_child)


class HearSecondInterrupt(L.Callback):
    """After Ctrl-C, Lightning ignores SIGINT while it shuts down, so a second Ctrl-C would
    never reach ``second_signal_ends_it``; a do-nothing handler lets it through."""

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        if ignored and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, lambda signum, frame: None)


class SigtermAsCtrlC(L.Callback):
    """SIGTERM stops a run as Ctrl-C does, in one process or several.

    Lightning installs its own SIGTERM handler as training starts. In a multi-process run it
    sends the signal on to the other processes and broadcasts from inside the handler: a
    collective the other processes, busy with their own, do not match, which hung or crashed
    such runs. Once Lightning's is installed, the handler before it is put back: the tool's
    (``run``: SIGTERM raises KeyboardInterrupt), and Lightning ends the run as after a Ctrl-C.
    """

    def __init__(self) -> None:
        self.before_lightning = None

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        # Before Lightning installs its own handler (just before the loops start).
        if threading.current_thread() is threading.main_thread():
            self.before_lightning = signal.getsignal(signal.SIGTERM)

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module) -> None:
        self._put_back()

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._put_back()

    def _put_back(self) -> None:
        if self.before_lightning is not None:
            signal.signal(signal.SIGTERM, self.before_lightning)


def shown(path: Path) -> Path:
    """``path`` as a person would type it here: relative to the working directory if inside."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path
