"""The fast CPU path: ``FusedLSTM`` / ``FusedGRU``, drop-in twins of ``nn.LSTM`` / ``nn.GRU``.

``use_fused_kernel(net)`` swaps each recurrent layer of a network for its twin: the same
parameters under the same names (state dicts and checkpoints do not change), the same
outputs and gradients to 1e-5 (``tests/test_fused_rnn.py``), several times faster on the CPU.
The twin's forward runs the small C++ kernel in ``csrc/recurrence.cpp`` where it covers the
call: the input projection is one matrix product, the recurrence one call per direction
instead of several tensor operations per time step. Anything else (CUDA, other dtypes,
packed sequences, an initial state, autocast) runs ``nn.LSTM`` / ``nn.GRU``'s own forward.

The kernel is compiled once per machine with the system's C++ compiler (about a second) into
``$IMDB_TORCH_KERNELS``, else the cache directory's ``kernels/``. Without a compiler a warning
says so once and the modules' own code runs.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import warnings
from functools import cache
from pathlib import Path

import torch
from torch import nn

from ..fileio import atomic_path, default_cache_dir

SOURCE = Path(__file__).with_name("csrc") / "recurrence.cpp"
_FLAG_SETS = (
    # -fno-trapping-math lets float-to-int conversions vectorise (it changes no result);
    # 256-bit vectors suit the short loops better than AVX-512 where the CPU has it.
    [
        "-O3",
        "-fno-trapping-math",
        "-march=native",
        "-mprefer-vector-width=256",
        "-std=c++17",
        "-shared",
        "-fPIC",
        "-pthread",
    ],
    [
        "-O3",
        "-fno-trapping-math",
        "-std=c++17",
        "-shared",
        "-fPIC",
        "-pthread",
    ],  # compilers without -march=native
)


class KernelUnavailable(RuntimeError):
    """The fused kernel could not be built or loaded here."""


def kernel_dir() -> Path:
    if os.environ.get("IMDB_TORCH_KERNELS"):
        return Path(os.environ["IMDB_TORCH_KERNELS"]).expanduser()
    return default_cache_dir() / "kernels"


def _compiler() -> str:
    for candidate in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    raise KernelUnavailable("no C++ compiler found (set CXX, or install g++ or clang)")


def _machine_key(compiler: str, flags: list[str]) -> str:
    """What the built library depends on: source, compiler, flags, and this CPU (-march=native)."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    digest.update(
        "\0".join([compiler, version, *flags, platform.machine(), platform.node()]).encode()
    )
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags_line = next(
            (ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("flags")), ""
        )
        digest.update(flags_line.encode())
    return digest.hexdigest()[:20]


def _build(cache_dir: Path) -> Path:
    compiler = _compiler()
    suffix = ".dll" if sys.platform == "win32" else ".so"
    error = "(no message)"
    for flags in _FLAG_SETS:
        library = cache_dir / f"recurrence-{_machine_key(compiler, flags)}{suffix}"
        if library.is_file():
            return library
        cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(library) as tmp:
                done = subprocess.run(
                    [compiler, *flags, str(SOURCE), "-o", str(tmp)], capture_output=True, text=True
                )
                if done.returncode != 0:
                    # Raised inside, so that atomic_path drops the temporary file.
                    raise _CompileFailed(done.stderr.strip().splitlines()[-1:] or [error])
                tmp.chmod(0o755)
        except _CompileFailed as failed:
            error = failed.args[0][0]
            continue
        return library
    raise KernelUnavailable(f"compiling {SOURCE.name} failed: {error}")


class _CompileFailed(Exception):
    pass


def load_kernel() -> ctypes.CDLL:
    """The compiled kernel, built on first use; raises ``KernelUnavailable``."""
    library, reason = _load_once()
    if library is None:
        raise KernelUnavailable(reason)
    return library


@cache
def _load_once() -> tuple[ctypes.CDLL | None, str | None]:
    # Failure is remembered too, so that a machine without a compiler tries, and warns, once
    # per process.
    try:
        library = ctypes.CDLL(str(_build(kernel_dir())))
    except (KernelUnavailable, OSError) as error:
        warnings.warn(f"the fused RNN kernel is unavailable ({error}); using nn.LSTM/nn.GRU's "
                      "own CPU implementation, which is slower", stacklevel=3)  # fmt: skip
        return None, str(error)
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    signatures = {
        "lstm_forward": [i64, i64, i64, ptr, ptr, i32, i32, ptr, ptr, ptr, ptr],
        "lstm_backward": [i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, i32, i32, ptr],
        "gru_forward": [i64, i64, i64, ptr, ptr, ptr, i32, i32, ptr, ptr, ptr],
        "gru_backward": [i64, i64, i64, ptr, ptr, ptr, ptr, ptr, i32, i32, ptr, ptr],
        "add_rows": [i64, i64, ptr, ptr, ptr],
    }
    for name, argtypes in signatures.items():
        function = getattr(library, name)
        function.argtypes = argtypes
        function.restype = None
    return library, None


def kernel_available() -> bool:
    """Whether the kernel is built and loaded (building it now if need be); warns once if not."""
    return _load_once()[0] is not None


def _ptr(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _threads(batch: int, steps: int, hidden: int) -> int:
    # Threads split the batch columns; below about eight million multiply-adds per call (two
    # logical CPUs sharing one core's resources gain little), starting one costs more than it
    # saves.
    if batch < 32 or batch * steps * hidden * hidden * 4 < 2**23:
        return 1
    return max(1, min(torch.get_num_threads(), batch // 16))


def _weight_gradient(d_gates: torch.Tensor, h_all: torch.Tensor, reverse: bool) -> torch.Tensor:
    """dW_hh [G, H] = Σ over steps and batch of the gate gradients times the state before:
    one matrix product of [G, (T-1)·B] and [(T-1)·B, H] views."""
    if reverse:  # step t started from h_all[:, t + 1]
        d_gates, h_prev = d_gates[:, :-1], h_all[:, 1:]
    else:
        d_gates, h_prev = d_gates[:, 1:], h_all[:, :-1]
    return d_gates.reshape(d_gates.shape[0], -1) @ h_prev.reshape(h_prev.shape[0], -1).t()


# The Functions take and return tensors in the kernel's layouts (csrc/recurrence.cpp): the
# input projections gx and the outputs h_all [features, T, B]; the LSTM's cell states c_all,
# which only the kernel reads back, time-major [T, features, B].
class _LSTMRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gx, w_hh, reverse: bool):
        gx, w_hh = gx.contiguous(), w_hh.detach().contiguous()
        gates, steps, batch = gx.shape
        hidden = gates // 4
        h_all = gx.new_empty(hidden, steps, batch)
        c_all, tanh_c = gx.new_empty(steps, hidden, batch), gx.new_empty(steps, hidden, batch)
        act = gx.new_empty(steps, gates, batch)
        ctx.threads = _threads(batch, steps, hidden)
        load_kernel().lstm_forward(
            batch, steps, hidden, _ptr(gx), _ptr(w_hh), reverse, ctx.threads,
            _ptr(h_all), _ptr(c_all), _ptr(tanh_c), _ptr(act),
        )  # fmt: skip
        ctx.save_for_backward(w_hh, h_all, c_all, tanh_c, act)
        ctx.reverse = reverse
        ctx.set_materialize_grads(False)
        return h_all, c_all

    @staticmethod
    def backward(ctx, dh_all, dc_all):
        w_hh, h_all, c_all, tanh_c, act = ctx.saved_tensors
        steps, gates, batch = act.shape
        # Kept in names: the kernel reads their memory.
        dh_all = None if dh_all is None else dh_all.contiguous()
        dc_all = None if dc_all is None else dc_all.contiguous()
        dgx = act.new_empty(gates, steps, batch)
        load_kernel().lstm_backward(
            batch, steps, gates // 4, _ptr(w_hh), _ptr(c_all), _ptr(tanh_c), _ptr(act),
            _ptr(dh_all), _ptr(dc_all), ctx.reverse, ctx.threads, _ptr(dgx),
        )  # fmt: skip
        dw_hh = _weight_gradient(dgx, h_all, ctx.reverse) if ctx.needs_input_grad[1] else None
        return dgx, dw_hh, None


class _GRURecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gx, w_hh, b_hh, reverse: bool):
        gx = gx.contiguous()
        w_hh, b_hh = w_hh.detach().contiguous(), b_hh.detach().contiguous()
        gates, steps, batch = gx.shape
        hidden = gates // 3
        h_all, ghn = gx.new_empty(hidden, steps, batch), gx.new_empty(steps, hidden, batch)
        act = gx.new_empty(steps, gates, batch)
        ctx.threads = _threads(batch, steps, hidden)
        load_kernel().gru_forward(
            batch, steps, hidden, _ptr(gx), _ptr(w_hh), _ptr(b_hh), reverse, ctx.threads,
            _ptr(h_all), _ptr(ghn), _ptr(act),
        )  # fmt: skip
        ctx.save_for_backward(w_hh, h_all, ghn, act)
        ctx.reverse = reverse
        ctx.set_materialize_grads(False)
        return h_all

    @staticmethod
    def backward(ctx, dh_all):
        if dh_all is None:
            return None, None, None, None
        w_hh, h_all, ghn, act = ctx.saved_tensors
        steps, gates, batch = act.shape
        dh_all = dh_all.contiguous()  # kept in a name: the kernel reads its memory
        dgx, dgh = act.new_empty(gates, steps, batch), act.new_empty(gates, steps, batch)
        load_kernel().gru_backward(
            batch, steps, gates // 3, _ptr(w_hh), _ptr(h_all), _ptr(ghn), _ptr(act),
            _ptr(dh_all), ctx.reverse, ctx.threads, _ptr(dgx), _ptr(dgh),
        )  # fmt: skip
        dw_hh = _weight_gradient(dgh, h_all, ctx.reverse) if ctx.needs_input_grad[1] else None
        db_hh = dgh.sum(dim=(1, 2)) if ctx.needs_input_grad[2] else None
        return dgx, dw_hh, db_hh, None


# Above this many gate rows (4·H for an LSTM, 3·H for a GRU) the modules' own CPU code is the
# faster: benchmarks/rnn_kernel.py measured the kernel ahead up to a 16-unit LSTM and a
# 32-unit GRU, and behind from a 32-unit LSTM on.
MAX_FUSED_GATES = 96


def fused_supports(rnn: nn.Module) -> bool:
    """Whether the kernel can run ``rnn`` and is the faster for it: a one-layer batch-first
    LSTM/GRU with biases, no projection, float32 weights and at most ``MAX_FUSED_GATES`` gate
    rows."""
    return (
        isinstance(rnn, (nn.LSTM, nn.GRU))
        and rnn.hidden_size * (4 if isinstance(rnn, nn.LSTM) else 3) <= MAX_FUSED_GATES
        and rnn.num_layers == 1
        and rnn.batch_first
        and rnn.bias
        and getattr(rnn, "proj_size", 0) == 0
        and rnn.weight_hh_l0.dtype == torch.float32
    )


def fused_covers(rnn: nn.Module, x) -> bool:
    """Whether ``run_fused(rnn, x)`` computes ``rnn(x)``: a supported module, and ``x`` a
    non-empty float32 CPU tensor (a packed sequence, for one, is not), outside CPU autocast."""
    return fused_supports(rnn) and _input_covered(x)


def _input_covered(x) -> bool:
    return (
        isinstance(x, torch.Tensor)
        and x.dim() == 3
        and x.shape[1] > 0
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def run_fused_feature_major(rnn: nn.LSTM | nn.GRU, seq: torch.Tensor):
    """``rnn`` over ``seq`` laid out [features, T, B], the kernel's input layout, in which each
    input projection is one matrix product and stacked layers pass their outputs on without
    copies. ``seq`` may be a view, e.g. the embedding of the transposed tokens permuted.
    Returns the output [D·H, T, B] and the final states as ``rnn`` returns them."""
    is_lstm = isinstance(rnn, nn.LSTM)
    features, steps, batch = seq.shape
    flat = seq.reshape(features, steps * batch)
    outputs, finals, cells = [], [], []
    for suffix, reverse in (("_l0", False), ("_l0_reverse", True))[: 1 + rnn.bidirectional]:
        w_ih, w_hh = getattr(rnn, "weight_ih" + suffix), getattr(rnn, "weight_hh" + suffix)
        b_ih, b_hh = getattr(rnn, "bias_ih" + suffix), getattr(rnn, "bias_hh" + suffix)
        last = 0 if reverse else -1  # the step each direction ends on
        if is_lstm:
            gx = torch.addmm((b_ih + b_hh).unsqueeze(-1), w_ih, flat)
            h_all, c_all = _LSTMRecurrence.apply(gx.view(-1, steps, batch), w_hh, reverse)
            cells.append(c_all[last].t())
        else:
            gx = torch.addmm(b_ih.unsqueeze(-1), w_ih, flat)
            h_all = _GRURecurrence.apply(gx.view(-1, steps, batch), w_hh, b_hh, reverse)
        outputs.append(h_all)
        finals.append(h_all[:, last].t())
    output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)
    h_n = torch.stack(finals)
    return output, ((h_n, torch.stack(cells)) if is_lstm else h_n)


def run_fused(rnn: nn.LSTM | nn.GRU, x: torch.Tensor):
    """``rnn(x)`` for batch-first ``x`` through the fused kernel: ``(output, (h_n, c_n))`` or
    ``(output, h_n)``, the output batch-first too."""
    output, state = run_fused_feature_major(rnn, x.permute(2, 1, 0))
    return output.permute(2, 1, 0), state


class _FusedForward:
    """The twins' forward: the kernel where it covers the call, else the module's own.

    ``use_fused_kernel`` swaps in only modules the kernel supports, so what is left to check
    at each call is the input: ``fused_covers`` without its module half, as it runs per step.
    """

    def forward(self, input, hx=None):
        if hx is None and _input_covered(input) and kernel_available():
            return run_fused(self, input)
        return super().forward(input, hx)


class FusedLSTM(_FusedForward, nn.LSTM):
    """``nn.LSTM`` whose CPU forward and backward run the fused kernel."""


class FusedGRU(_FusedForward, nn.GRU):
    """``nn.GRU`` whose CPU forward and backward run the fused kernel."""


FUSED_TWINS = {nn.LSTM: FusedLSTM, nn.GRU: FusedGRU}


class TimeMajorEmbedding(nn.Embedding):
    """``nn.Embedding`` whose (batch, time, features) output is stored time-major.

    The kernel reads its input as (features, time, batch); a batch-first tensor stored
    time-major is that layout after a permute, with no copy (a batch-major one costs a
    transposing copy forward and backward, about a tenth of a step of the lesson's model).
    On the CPU its backward is ``_GatherRows``'s. Values, gradients and the parameter are
    ``nn.Embedding``'s.
    """

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2:
            return super().forward(tokens)
        # Options that change the gradient or the weights are left to nn.Embedding's code.
        options = self.padding_idx is not None, self.max_norm, self.scale_grad_by_freq, self.sparse
        if tokens.device.type != "cpu" or any(options):
            return super().forward(tokens.t()).transpose(0, 1)
        return _GatherRows.apply(self.weight, tokens.t()).transpose(0, 1)


class _GatherRows(torch.autograd.Function):
    """``weight[tokens]``, whose backward adds each occurrence's gradient to its row in one
    pass (``index_add_rows``): on the CPU many times faster than ``nn.Embedding``'s backward
    (which sorts the tokens first), a tenth of a step of the lesson's model."""

    @staticmethod
    def forward(ctx, weight, tokens):
        ctx.save_for_backward(tokens)
        ctx.rows = weight.shape[0]
        return nn.functional.embedding(tokens, weight)

    @staticmethod
    def backward(ctx, grad):
        (tokens,) = ctx.saved_tensors
        features = grad.shape[-1]
        rows = grad.new_zeros(ctx.rows, features)
        return index_add_rows(rows, tokens.reshape(-1), grad.reshape(-1, features)), None


def index_add_rows(out: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``out.index_add_(0, rows, values)``: an embedding's backward, the row of each token
    receiving its gradient. Where it can, the kernel's ``add_rows``: on the CPU a third to a
    sixth of the time of ``index_add_``, which runs a general scatter. ``rows`` must be valid
    rows of ``out``, as the tokens an embedding's forward accepted are: the kernel does not
    check them."""
    if (
        out.device.type == rows.device.type == values.device.type == "cpu"
        and out.dtype == values.dtype == torch.float32
        and rows.dtype == torch.int64
        and rows.dim() == 1
        and out.dim() == values.dim() == 2
        and out.is_contiguous()
        and out.shape[1] == values.shape[1]
        and len(rows) == len(values)
        # A gradient that must itself be differentiable (create_graph) needs autograd's op.
        and not (torch.is_grad_enabled() and values.requires_grad)
        and kernel_available()
    ):
        rows, values = rows.contiguous(), values.contiguous()  # kept: the kernel reads them
        load_kernel().add_rows(len(rows), out.shape[1], _ptr(rows), _ptr(values), _ptr(out))
        return out
    return out.index_add_(0, rows, values)


def use_fused_kernel(net: nn.Module) -> nn.Module:
    """Swap every layer of ``net.rnns`` that the kernel runs faster for its fused twin, and
    then ``net.embedding`` for a ``TimeMajorEmbedding``.

    The twins get the layers' parameters, values and ``requires_grad`` alike, so call this
    after initialising and before making the optimiser. Returns ``net``.
    """
    for i, rnn in enumerate(net.rnns):
        twin_class = FUSED_TWINS.get(type(rnn))
        if twin_class is None or not fused_supports(rnn):
            continue
        # The twin's own initialisation is overwritten at once; fork_rng gives back what it
        # drew, so a run makes the same random draws with the kernel or without it.
        with torch.random.fork_rng(devices=[]):
            twin = twin_class(
                rnn.input_size,
                rnn.hidden_size,
                batch_first=True,
                bidirectional=rnn.bidirectional,
                device=rnn.weight_hh_l0.device,
            )
        twin.load_state_dict(rnn.state_dict())
        for name, param in twin.named_parameters():
            param.requires_grad_(rnn.get_parameter(name).requires_grad)
        net.rnns[i] = twin
    if any(isinstance(rnn, _FusedForward) for rnn in net.rnns):
        # _weight: no initialisation (nothing drawn); then the very same parameter object.
        twin = TimeMajorEmbedding(*net.embedding.weight.shape, _weight=net.embedding.weight)
        twin.weight = net.embedding.weight
        net.embedding = twin
    return net
