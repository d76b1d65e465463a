"""The network's training forward and backward replayed as CUDA graphs, on one GPU.

The lesson's network is tiny: on a GPU its step's kernels take about 0.4 ms, but launching
them one at a time from Python takes ten times that (cuDNN's recurrent backward alone takes
0.4 ms of the host's time), so an epoch on an H200 took longer than on a 2-core CPU. A CUDA
graph records the kernels of one forward and one backward pass once; each training batch
then replays them, one launch each (``torch.cuda.make_graphed_callables``). The values are
those of the network's own code; only the launching changes (docs/performance.md).

A graph replays fixed shapes from fixed memory: a batch of another shape (an epoch's last,
smaller one), evaluation and anything without gradients run the network as usual, and the
graph's inputs are copied into the memory it was recorded with.
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

    Not an ``nn.Module``, so that the LightningModule holding it saves ``net``'s weights
    once. ``after_capture`` runs once the graphs are recorded: the recording runs the network
    a few times (warm-up passes), and whatever those passes left behind must be cleared.
    """

    def __init__(self, net: nn.Module, after_capture=None):
        self.net = net
        self.after_capture = after_capture
        self._graphed: nn.Module | None = None
        self._shape: torch.Size | None = None
        self._failed = False

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._graphed is None and not self._failed and self._can_replay(tokens):
            self._capture(tokens)
        if self._graphed is None or tokens.shape != self._shape or not self._can_replay(tokens):
            return self.net(tokens)
        return self._graphed(tokens)

    def _can_replay(self, tokens: torch.Tensor) -> bool:
        return tokens.is_cuda and self.net.training and torch.is_grad_enabled()

    def _capture(self, tokens: torch.Tensor) -> None:
        # Recording warms up on a stream of its own, which PyTorch reports without cause: the
        # parameters' gradient nodes then belong to that stream, and the first pass of the
        # autograd thread there finds no CUDA context yet (both seen on an H200).
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
            self._failed = True
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
        self._graphed, self._failed = None, True


def _warn_on_stream_mismatch(on: bool) -> None:
    switch = getattr(torch.autograd.graph, "set_warn_on_accumulate_grad_stream_mismatch", None)
    if switch is not None:  # not in every PyTorch this project supports
        switch(on)
