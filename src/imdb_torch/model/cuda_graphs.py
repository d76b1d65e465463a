"""The network's training forward and backward replayed as CUDA graphs, on one GPU. Speed only.

A GPU runs an operation as a kernel (a small GPU program) that Python launches, one per
operation. The lesson's network is tiny: profiled on an H200, a step took 3.2 ms of the
host's time, launching kernels one at a time, and 0.4 ms of the GPU's, running them (cuDNN's
recurrent backward alone took 0.4 ms of the host's time), so an epoch took longer there than
on a 2-core CPU.
A CUDA graph is a recording of a pass's kernels: the forward and the backward are recorded
once, at the first training batch, and every batch after it re-runs each with one launch
(``torch.cuda.make_graphed_callables``). The kernels are the network's own, so the numbers
are too: the lstm and gru gave the same validation losses to five decimals with graphs and
without (docs/performance.md). (``torch.compile(mode="reduce-overhead")`` records graphs as
well, but of kernels that Inductor generates anew: other kernels, other rounding.)

A recording re-runs the same operations on the same memory. So it fits batches of the
recorded shape only: the epoch's last, smaller batch, validation and prediction run the
network as usual; and each batch is first copied into the recording's input memory.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class _Forward(nn.Module):
    """``net``'s forward under a module of its own: ``make_graphed_callables`` replaces the
    forward of the module it is given, and ``net`` must keep its own for other batches.
    Nobody's child module, so ``model.eval()`` never reaches it: ``_can_replay`` reads
    ``net.training`` instead."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)


class GraphedTraining:
    """Calls ``net`` on a training batch, replaying CUDA graphs recorded at the first one.

    Not an ``nn.Module``, so that it stays out of the LightningModule's ``state_dict``: a
    checkpoint holds ``net``'s weights once. ``after_capture`` runs once the graphs are
    recorded: recording runs the network's forward and backward a few times on the first
    batch (warm-up passes), and what those passes left behind, such as the embedding squares
    ``EmbeddingOccurrences`` gathered, must be cleared.
    """

    def __init__(self, net: nn.Module, after_capture=None):
        self.net = net
        self.after_capture = after_capture
        self._graphed: nn.Module | None = None
        self._shape: torch.Size | None = None
        self._may_record = True  # until a recording is made, fails, or is released

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._graphed is None and self._may_record and self._can_replay(tokens):
            self._capture(tokens)
        if self._graphed is None or tokens.shape != self._shape or not self._can_replay(tokens):
            return self.net(tokens)
        return self._graphed(tokens)

    def _can_replay(self, tokens: torch.Tensor) -> bool:
        return tokens.is_cuda and self.net.training and torch.is_grad_enabled()

    def _capture(self, tokens: torch.Tensor) -> None:
        # Recording runs its warm-up passes on a queue of GPU work of its own (a stream), and
        # PyTorch then warns at every backward that the weights' gradients are summed on
        # that queue, and once that a thread finds no CUDA context yet (both seen on an
        # H200). Silenced while the graphs are in use; whether the first costs time is not
        # measured yet (docs/performance.md).
        self._may_record = False
        _warn_on_stream_mismatch(False)
        try:
            # The warm-up passes draw dropout masks: the random state is given back, so that
            # a resumed run, which records again, draws what the uninterrupted run drew.
            devices = [tokens.device] if tokens.is_cuda else []
            with warnings.catch_warnings(), torch.random.fork_rng(devices=devices):
                warnings.filterwarnings("ignore", message=".*no current CUDA context")
                graphed = torch.cuda.make_graphed_callables(_Forward(self.net), (tokens.clone(),))
            self._graphed, self._shape = graphed, tokens.shape
        except RuntimeError as error:  # the network's own code still trains it
            _warn_on_stream_mismatch(True)
            first_line = (str(error).strip() or "error").splitlines()[0]
            message = f"CUDA graphs could not be recorded ({first_line}); training without them"
            warnings.warn(message, stacklevel=3)
        finally:
            if self.after_capture is not None:
                self.after_capture()

    def release(self) -> None:
        """Drop the graphs (their memory goes back to the GPU); the network runs as usual."""
        if self._graphed is not None:
            _warn_on_stream_mismatch(True)
        self._graphed, self._may_record = None, False


def _warn_on_stream_mismatch(on: bool) -> None:
    switch = getattr(torch.autograd.graph, "set_warn_on_accumulate_grad_stream_mismatch", None)
    if switch is not None:  # not in every PyTorch this project supports
        switch(on)
