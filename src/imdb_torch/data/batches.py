"""Batches cut from tensors that stay where the model is: no DataLoader on the way.

The lesson's model takes well under a millisecond a step on a GPU; handing it each batch
through a ``DataLoader`` (64 indices drawn in Python, a batch gathered on the host, copied to
the device, the copy waited for) costs more than the step. The encoded reviews are a few
megabytes, so ``DeviceBatches`` moves them to the device once and cuts every batch there.

Batches are the ones ``DataLoader(dataset, batch_size, shuffle)`` would give, in the same
order, drawing the same random numbers, so a run is the same run whichever way it is fed
(tests/test_batches.py). It serves one process; a DDP run keeps the ``DataLoader``, to which
Lightning gives each process its share of the reviews.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


class DeviceBatches:
    """``(tokens, labels)`` batches of ``batch_size`` rows, shuffled each pass if ``shuffle``."""

    def __init__(self, tokens: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 shuffle: bool, device: torch.device | str):  # fmt: skip
        self.tokens, self.labels = tokens.to(device), labels.to(device)
        self.batch_size, self.shuffle = batch_size, shuffle

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A DataLoader draws one number from torch's generator for its workers' seeds when a
        # pass starts, and its RandomSampler one more to seed the shuffle: drawn alike here,
        # the random numbers of everything else (dropout) stay those of a DataLoader run.
        _draw_seed()
        count, size = len(self.labels), self.batch_size
        if not self.shuffle:
            for start in range(0, count, size):
                yield self.tokens[start : start + size], self.labels[start : start + size]
            return
        order = torch.randperm(count, generator=torch.Generator().manual_seed(_draw_seed()))
        order = order.to(self.tokens.device)  # once a pass: each batch's index stays there
        for start in range(0, count, size):
            index = order[start : start + size]
            yield self.tokens[index], self.labels[index]


def _draw_seed() -> int:
    return int(torch.empty((), dtype=torch.int64).random_().item())
