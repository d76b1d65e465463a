"""The n-gram model of ``--ngrams`` (``NgramBag``) trained alone, without a network beside it.

On the project's split and encoding (``IMDBDataModule``: 20,000 reviews to fit, 5,000 to
validate, the 25,000 test reviews), with the ratios counted on the 20,000, Adam (Keras's
epsilon) on batches of 64. Prints each epoch's validation and test accuracy and loss, and the
seconds taken; the test figures are printed to show what a choice made on validation gives.

    python benchmarks/ngram_alone.py --data aclImdb_v1.tar.gz --ngrams 2 --lr 0.004
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn.functional import binary_cross_entropy_with_logits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from imdb_torch.data.datamodule import IMDBDataModule  # noqa: E402
from imdb_torch.model.ngrams import NgramBag  # noqa: E402


def scores(bag: NgramBag, reviews) -> str:
    with torch.no_grad():
        logits = torch.cat([bag(rows) for rows in reviews.tokens.split(1024)])
    loss = binary_cross_entropy_with_logits(logits, reviews.labels).item()
    accuracy = ((logits > 0).float() == reviews.labels).float().mean().item()
    return f"loss {loss:.4f} acc {accuracy:.4f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="aclImdb_v1.tar.gz")
    parser.add_argument("--ngrams", type=int, default=2, help="n-grams of 1 to N words (2)")
    parser.add_argument("--buckets", type=int, default=2**22, help="hash buckets (4,194,304)")
    parser.add_argument("--num-words", type=int, default=10000, help="vocabulary (10,000)")
    parser.add_argument("--maxlen", type=int, default=400, help="tokens kept per review (400)")
    parser.add_argument(
        "--min-reviews", type=int, default=NgramBag.MIN_REVIEWS,
        help=f"reviews a bucket needs for a ratio ({NgramBag.MIN_REVIEWS}; 0: every bucket)",
    )  # fmt: skip
    parser.add_argument("--lr", type=float, default=0.003, help="Adam's rate (0.003)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs (2)")
    parser.add_argument("--seed", type=int, default=0, help="weights are zeros; the order (0)")
    args = parser.parse_args()

    started = time.perf_counter()
    data = IMDBDataModule(args.data, num_words=args.num_words, maxlen=args.maxlen)
    data.setup()
    bag = NgramBag(args.ngrams, args.buckets)
    bag.MIN_REVIEWS = args.min_reviews
    train = data.train_set
    bag.count_ratios(train.tokens, train.labels)
    optimizer = torch.optim.Adam(bag.parameters(), lr=args.lr, eps=1e-7, fused=True)
    generator = torch.Generator().manual_seed(args.seed)
    print(
        f"{len(train):,} reviews to fit; ratios counted after {time.perf_counter() - started:.1f} s"
    )
    for epoch in range(1, args.epochs + 1):
        for batch in torch.randperm(len(train), generator=generator).split(64):
            loss = binary_cross_entropy_with_logits(bag(train.tokens[batch]), train.labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch}: val {scores(bag, data.val_set)}; test {scores(bag, data.test_set)}; "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
