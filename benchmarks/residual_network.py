"""The strong preset's network trained on what the n-gram model leaves (stacking).

``--ngrams`` trains the network and NBSVM's model (``NgramBag``) side by side and averages
their logits; the network then adds next to nothing (docs/results.md). Here the network learns
the *residual* instead: its logit is added to a fixed n-gram logit, so its gradient is large
only where the n-gram model is wrong. Each training review's n-gram logit comes from a model
fitted on the other folds (cross-fitting: a model scoring its own training reviews would be
right on nearly all of them, and leave the network nothing); validation and test reviews get
the logit of a model fitted on all 20,000. The network, its optimiser, clipping and learning-rate
halving are the strong preset's, in a plain loop; each epoch prints the sum's validation and test
figures and the network's alone.

    python benchmarks/residual_network.py --data aclImdb_v1.tar.gz --seed 42
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.nn.functional import binary_cross_entropy_with_logits as bce

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from imdb_torch.config import resolve  # noqa: E402
from imdb_torch.data.datamodule import IMDBDataModule  # noqa: E402
from imdb_torch.model.ngrams import NgramBag  # noqa: E402
from imdb_torch.training.module import SentimentClassifier  # noqa: E402


def fit_ngrams(tokens: torch.Tensor, labels: torch.Tensor) -> NgramBag:
    """``benchmarks/ngram_alone.py``'s best model: bigrams, Adam 0.003, two epochs."""
    bag = NgramBag(2, 2**22)
    bag.count_ratios(tokens, labels)
    optimizer = torch.optim.Adam(bag.parameters(), lr=0.003, eps=1e-7, fused=True)
    order = torch.Generator().manual_seed(0)
    for _ in range(2):
        for batch in torch.randperm(len(tokens), generator=order).split(64):
            loss = bce(bag(tokens[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return bag


@torch.no_grad()
def logits(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(rows) for rows in tokens.split(512)])


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return round(((scores > 0).float() == labels).float().mean().item(), 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="aclImdb_v1.tar.gz")
    parser.add_argument("--seed", type=int, default=42, help="the network's seed (42)")
    parser.add_argument("--epochs", type=int, default=7, help="epochs, as the preset (7)")
    parser.add_argument("--folds", type=int, default=5, help="cross-fitting folds (5)")
    args = parser.parse_args()

    started = time.perf_counter()
    settings = resolve("strong", {"seed": args.seed})
    torch.manual_seed(args.seed)
    maxlen = settings.data.maxlen
    data = IMDBDataModule(args.data, num_words=settings.model.num_words, maxlen=maxlen)
    data.setup()
    train, val, test = data.train_set, data.val_set, data.test_set

    # Each training review scored by an n-gram model that never saw it.
    train_offset = torch.empty(len(train))
    folds = torch.Generator().manual_seed(1000 + args.seed)
    shuffled = torch.randperm(len(train), generator=folds)
    for held_out in shuffled.chunk(args.folds):
        fitted = torch.ones(len(train), dtype=torch.bool)
        fitted[held_out] = False
        bag = fit_ngrams(train.tokens[fitted], train.labels[fitted])
        train_offset[held_out] = logits(bag, train.tokens[held_out])
    bag = fit_ngrams(train.tokens, train.labels)
    val_offset, test_offset = logits(bag, val.tokens), logits(bag, test.tokens)
    print(f"n-gram model alone: cross-fitted train acc {accuracy(train_offset, train.labels)}, "
          f"val acc {accuracy(val_offset, val.labels)}, "
          f"test acc {accuracy(test_offset, test.labels)}; "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip

    net = SentimentClassifier(settings.model, settings.optim).net  # the preset's initial weights
    optimizer = torch.optim.Adam(
        net.parameters(), lr=settings.optim.learning_rate, eps=1e-7, fused=True
    )
    halving = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=settings.optim.lr_decay, patience=0, threshold=0.0
    )
    order = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        epoch_started = time.perf_counter()
        net.train()
        for batch in torch.randperm(len(train), generator=order).split(64):
            loss = bce(net(train.tokens[batch]) + train_offset[batch], train.labels[batch])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), settings.optim.grad_clip)
            optimizer.step()
        net.eval()
        val_net, test_net = logits(net, val.tokens), logits(net, test.tokens)
        val_loss = bce(val_net + val_offset, val.labels).item()
        halving.step(val_loss)
        print(json.dumps({
            "epoch": epoch,
            "val_loss": round(val_loss, 4),
            "val_acc": accuracy(val_net + val_offset, val.labels),
            "test_loss": round(bce(test_net + test_offset, test.labels).item(), 4),
            "test_acc": accuracy(test_net + test_offset, test.labels),
            "network_alone_val_acc": accuracy(val_net, val.labels),
            "network_alone_test_acc": accuracy(test_net, test.labels),
            "seconds": round(time.perf_counter() - epoch_started),
        }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
