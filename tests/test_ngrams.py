"""NBSVM's linear model over hashed n-grams (``model/ngrams.py``) beside the network."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from imdb_torch.errors import UserError
from imdb_torch.model.ngrams import NgramBag
from imdb_torch.training.checkpoint import model_from_checkpoint, read_checkpoint

from .conftest import classifier, tiny_settings


def test_ngrams_are_counted_without_padding_and_hashed_alike_wherever_they_occur():
    bag = NgramBag(order=3, buckets=2**20)
    tokens = torch.tensor([[0, 0, 7, 8, 9, 7, 8], [0, 0, 0, 0, 0, 8, 7]])
    ids, present = bag.hashed_ngrams(tokens)
    # Five words give 5 + 4 + 3 n-grams; two words 2 + 1.
    assert present.sum(dim=1).tolist() == [12, 3]
    unigrams, bigrams = ids[:, :7], ids[:, 7:13]
    assert unigrams[0, 2] == unigrams[0, 5] == unigrams[1, 6]  # the word 7, three times
    assert bigrams[0, 2] == bigrams[0, 5]  # "7 8" twice
    assert bigrams[0, 2] != bigrams[1, 5]  # "7 8" is not "8 7"
    assert unigrams[0, 2] != bigrams[0, 2]


def test_each_ngram_counts_once_in_a_review():
    bag = NgramBag(order=2, buckets=2**20)
    ids, present = bag.distinct_ngrams(torch.tensor([[0, 7, 8, 7, 8, 7], [0, 0, 0, 0, 0, 0]]))
    # "7", "8", "7 8", "8 7": four distinct n-grams among nine; none in a row of padding.
    assert present.sum(dim=1).tolist() == [4, 0]
    first = ids[0][present[0]]
    assert len(set(first.tolist())) == 4
    assert set(first.tolist()) == set(bag.hashed_ngrams(torch.tensor([[7, 8, 7]]))[0][0].tolist())


def test_ratios_are_naive_bayes_log_count_ratios_of_words_in_two_reviews_or_more():
    buckets = 4096
    bag = NgramBag(order=1, buckets=buckets)
    # Positive reviews: "5 6", "5 7 5", "5 9"; negative: "6 8", "6 7".
    tokens = torch.tensor([[0, 5, 6], [5, 7, 5], [0, 5, 9], [0, 6, 8], [0, 6, 7]])
    bag.count_ratios(tokens, torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]))
    bucket = {word: bag.hashed_ngrams(torch.tensor([[word]]))[0].item() for word in (5, 6, 7, 8, 9)}
    assert len(set(bucket.values())) == 5

    def ratio(p, q):  # p, q: the reviews of each class holding the word, plus one
        # Each class's counts sum to one a bucket plus its (review, distinct word) pairs:
        # six positive, four negative.
        return math.log((p / (buckets + 6)) / (q / (buckets + 4)))

    assert bag.ratio[bucket[5]].item() == pytest.approx(ratio(4, 1))  # twice in one review
    assert bag.ratio[bucket[6]].item() == pytest.approx(ratio(2, 3))
    assert bag.ratio[bucket[7]].item() == pytest.approx(ratio(2, 2))
    assert bag.ratio[bucket[8]].item() == bag.ratio[bucket[9]].item() == 0.0  # in one review
    assert torch.count_nonzero(bag.ratio).item() == 3


@pytest.mark.parametrize("order", [1, 2])
def test_bigrams_tell_apart_what_single_words_cannot(order):
    # "5 6" is positive, "6 5" negative: the same words, so only bigrams separate them.
    tokens = torch.tensor([[0, 9, 5, 6, 11], [0, 9, 6, 5, 11]] * 4)
    labels = torch.tensor([1.0, 0.0] * 4)
    bag = NgramBag(order, buckets=4096)
    bag.count_ratios(tokens, labels)
    optimizer = torch.optim.Adam(bag.parameters(), lr=0.1)
    for _ in range(30):
        loss = nn.functional.binary_cross_entropy_with_logits(bag(tokens), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = ((bag(tokens) > 0).float() == labels).float().mean().item()
    assert accuracy == (1.0 if order == 2 else 0.5)


def test_the_network_learns_from_its_own_loss_and_the_answer_is_the_mean():
    settings = dict(arch="gru", num_words=20, optimizer="adam", lr=0.002)
    torch.manual_seed(0)
    plain = classifier(**settings)
    torch.manual_seed(0)
    model = classifier(**settings, ngrams=2, ngram_buckets=4096, ngram_lr=0.1)
    tokens, labels = torch.randint(4, 20, (8, 12)), torch.tensor([1.0, 0.0] * 4)
    model.ngrams.count_ratios(tokens, labels)
    model.ngrams.weight.data.fill_(1.0)  # speaking, so a shared loss would show
    with torch.no_grad():
        expected = (plain(tokens) + model.ngrams(tokens)) / 2
    assert torch.allclose(model(tokens), expected)

    grads = []
    for classifier_ in (plain, model):
        classifier_.trainer = SimpleNamespace(num_training_batches=2)  # what _step reads
        loss = classifier_.training_step((tokens, labels), batch_idx=0)
        classifier_.zero_grad()
        loss.backward()
        grads.append([p.grad.clone() for p in classifier_.net.parameters() if p.grad is not None])
    for alone, beside in zip(*grads, strict=True):
        assert torch.allclose(alone, beside)
    ngram_grad = model.ngrams.weight.grad.clone()
    assert ngram_grad.abs().sum() > 0
    optimizer = model.configure_optimizers()
    model.configure_gradient_clipping(optimizer, gradient_clip_val=1e-6)
    assert torch.equal(model.ngrams.weight.grad, ngram_grad)  # clipping is the network's alone
    assert model.net.head.weight.grad.norm() < 1e-5
    groups = optimizer.param_groups
    assert [group["lr"] for group in groups] == [0.002, 0.1]
    assert groups[1]["params"] == [model.ngrams.weight, model.ngrams.bias]


def test_a_run_counts_the_ratios_on_its_training_reviews_and_saves_them(tiny_tarball, tmp_path):
    from imdb_torch.training.trainer import Hardware, prepare

    settings = tiny_settings(tiny_tarball, ngrams=2, ngram_buckets=4096, optimizer="adam",
                             max_epochs=2, seed=0)  # fmt: skip
    run = prepare(settings, logdir=tmp_path, name="ngrams", version=0,
                  hardware=Hardware("cpu", 1), progress=False)  # fmt: skip
    run.fit()
    train = run.datamodule.train_set
    expected = NgramBag(2, 4096)
    expected.count_ratios(train.tokens, train.labels)
    assert torch.count_nonzero(expected.ratio) > 0
    assert torch.equal(run.model.ngrams.ratio, expected.ratio)
    loaded = model_from_checkpoint(read_checkpoint(run.checkpoint.best_model_path))
    assert torch.equal(loaded.ngrams.ratio, expected.ratio)
    # A checkpoint of the earlier n-gram path (one key of which is net.ngrams.weight) is
    # refused in one line rather than with PyTorch's list of missing and unexpected keys.
    old = torch.load(run.checkpoint.best_model_path, weights_only=True)
    old["state_dict"]["net.ngrams.weight"] = old["state_dict"].pop("ngrams.weight")
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(UserError, match="earlier imdb-torch"):
        read_checkpoint(tmp_path / "old.ckpt")
