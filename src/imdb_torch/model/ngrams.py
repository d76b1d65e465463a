"""``NgramBag``: NBSVM's linear model over word n-grams, as a module (beyond the lesson).

The model a practitioner fits first on reviews, and a hard one to beat: Wang & Manning's
NBSVM (2012). Each n-gram of 1 to ``order`` words present in a review counts once, scaled by
its naive-Bayes log-count ratio: how much more often it occurs in positive than in negative
training reviews. A learned weight per n-gram and a bias make the logit::

    logit = sum over the review's distinct n-grams g of  weight[g] * ratio[g]  + bias

The ratios are counted on the training reviews before the first step (``count_ratios``) and
saved with the weights. N-grams are hashed into ``buckets`` slots rather than listed in a
vocabulary, so raw text needs nothing more than the word index to be scored.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.text import PAD


class NgramBag(nn.Module):
    """NBSVM over the hashed word n-grams of 1 to ``order`` words (padding left out).

    The weights start at zero, so the model's logit starts at zero. ``min_df`` works on
    buckets: n-grams of single reviews that share a bucket count together.
    """

    # Odd multipliers well above any vocabulary: distinct n-grams seldom share a hash.
    _MIX = 1_000_003
    _SPREAD = 2_654_435_761
    # An n-gram seen in fewer training reviews than this keeps a zero ratio, as
    # CountVectorizer(min_df=2) leaves it out: one review's words say nothing general.
    MIN_REVIEWS = 2

    def __init__(self, order: int, buckets: int):
        super().__init__()
        self.order, self.buckets = order, buckets
        self.weight = nn.Parameter(torch.zeros(buckets))
        self.bias = nn.Parameter(torch.zeros(()))
        self.register_buffer("ratio", torch.zeros(buckets))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        ids, present = self.distinct_ngrams(tokens)
        return (self.weight[ids] * self.ratio[ids] * present).sum(dim=1) + self.bias

    @torch.no_grad()
    def count_ratios(self, tokens: torch.Tensor, labels: torch.Tensor) -> None:
        """Set each bucket's ratio ``log((p / |p|₁) / (q / |q|₁))`` from training reviews:
        ``p`` and ``q`` count the positive and the negative reviews holding it, plus one."""
        positive = torch.ones(self.buckets, dtype=torch.float64)
        negative = torch.ones(self.buckets, dtype=torch.float64)
        for rows, classes in zip(tokens.split(1024), labels.split(1024), strict=True):
            ids, present = self.distinct_ngrams(rows.to(self.ratio.device))
            is_positive = (classes > 0.5).to(ids.device).unsqueeze(1).expand_as(ids)
            for counts, of_class in ((positive, is_positive), (negative, ~is_positive)):
                found = ids[present & of_class]
                counts += torch.bincount(found, minlength=self.buckets).to(counts)
        ratio = torch.log((positive / positive.sum()) / (negative / negative.sum()))
        reviews = positive + negative - 2  # less the two ones added above
        ratio[reviews < self.MIN_REVIEWS] = 0
        self.ratio.copy_(ratio)

    def distinct_ngrams(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each review's n-gram buckets, each counted once (``present``): NBSVM's binary
        features. Shapes (batch, n-grams); where ``present`` is false, ``ids`` is any bucket."""
        ids, present = self.hashed_ngrams(tokens)
        absent = self.buckets  # sorts after every bucket
        ids, _ = torch.where(present, ids, absent).sort(dim=1)
        repeated = torch.zeros_like(present)
        repeated[:, 1:] = ids[:, 1:] == ids[:, :-1]
        present = (ids != absent) & ~repeated
        return ids.clamp(max=self.buckets - 1), present

    def hashed_ngrams(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bucket of every n-gram of ``tokens`` (batch, time), and which hold no padding."""
        ids, present = [], []
        for n in range(1, min(self.order, tokens.shape[1]) + 1):
            span = tokens.shape[1] - n + 1
            key = torch.full_like(tokens[:, :span], n)  # n itself: "a" and "a a" differ
            whole = torch.ones_like(key, dtype=torch.bool)
            for offset in range(n):
                word = tokens[:, offset : offset + span]
                key = key * self._MIX + word  # int64 wraps around: still a fine hash
                whole &= word != PAD
            ids.append((key * self._SPREAD).remainder(self.buckets))
            present.append(whole)
        return torch.cat(ids, dim=1), torch.cat(present, dim=1)

    def extra_repr(self) -> str:
        return f"order={self.order}, buckets={self.buckets}"
