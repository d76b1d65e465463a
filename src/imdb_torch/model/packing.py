"""Packed sequences (``--packed``): recurrent layers that skip the padding.

Keras's lesson runs its layers over the padding too; packing is an option beyond it. The
network left-aligns its tokens once (``left_align``) and runs each layer through
``run_packed``; everything else sees ordinary padded tensors.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..data.text import PAD


def left_align(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's tokens in front of its padding and return the rows' lengths.

    Works for pre- and post-padded rows alike; a row of padding only keeps length 1 so that
    packing accepts it.
    """
    is_pad = tokens == PAD
    order = torch.argsort(is_pad.to(torch.int8), dim=1, stable=True)
    lengths = (~is_pad).sum(dim=1).clamp(min=1)
    return tokens.gather(1, order), lengths


def run_packed(rnn: nn.LSTM | nn.GRU, x: torch.Tensor, lengths: torch.Tensor):
    """``rnn`` over the first ``lengths`` steps of each row of ``x`` (batch, time, features).

    Returns what ``rnn(x)`` returns: the outputs, padded again to ``x``'s length (zeros past
    each row's end), and the final state, taken at each row's own last token.
    """
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    outputs, state = rnn(packed)
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=x.shape[1])
    return outputs, state
