"""Batches cut where the model is give the run a DataLoader would give."""

import torch
from torch.utils.data import DataLoader

from imdb_torch.data.batches import DeviceBatches
from imdb_torch.data.datamodule import PaddedReviews, keep_batch


def _reviews(count: int = 150) -> PaddedReviews:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 500, (count, 20), generator=generator)
    labels = torch.randint(0, 2, (count,), generator=generator)
    return PaddedReviews(tokens.numpy(), labels.numpy())


def _passes(loader, seed: int) -> tuple[list, torch.Tensor]:
    """Two passes over ``loader`` and then a draw of torch's generator, from ``seed``."""
    torch.manual_seed(seed)
    batches = [batch for _ in range(2) for batch in loader]
    return batches, torch.rand(3)


def test_device_batches_are_a_dataloaders_batches_in_its_order():
    reviews = _reviews()
    for shuffle in (True, False):
        loader = DataLoader(reviews, batch_size=64, shuffle=shuffle, collate_fn=keep_batch)
        device_batches = DeviceBatches(reviews.tokens, reviews.labels, 64, shuffle, "cpu")
        assert len(device_batches) == len(loader) == 3
        expected, expected_after = _passes(loader, seed=5)
        got, got_after = _passes(device_batches, seed=5)
        assert len(got) == len(expected) == 6
        for (tokens, labels), (want_tokens, want_labels) in zip(got, expected, strict=True):
            assert torch.equal(tokens, want_tokens) and torch.equal(labels, want_labels)
        # The generator is left as a DataLoader leaves it: dropout draws the same masks.
        assert torch.equal(got_after, expected_after)
    # And the two passes of a shuffled loader differ, so the comparison above could fail.
    shuffled, _ = _passes(DeviceBatches(reviews.tokens, reviews.labels, 64, True, "cpu"), 5)
    assert not torch.equal(shuffled[0][0], shuffled[3][0])


def test_worker_processes_give_the_same_batches_and_random_numbers(tiny_tarball):
    """--num-workers changes speed, not the run: a DataLoader with worker processes draws
    what one without them draws, epoch after epoch."""
    from imdb_torch.data.datamodule import IMDBDataModule

    datamodule = IMDBDataModule(str(tiny_tarball), num_words=30, maxlen=20, batch_size=16,
                                num_workers=2)  # fmt: skip
    datamodule.setup("fit")
    with_workers = datamodule.train_dataloader()  # no Trainer: the DataLoader
    assert with_workers.num_workers == 2
    train_set = datamodule.train_set
    in_process = DeviceBatches(train_set.tokens, train_set.labels, 16, True, "cpu")
    expected, expected_after = _passes(in_process, seed=5)
    got, got_after = _passes(with_workers, seed=5)
    for (tokens, labels), (want_tokens, want_labels) in zip(got, expected, strict=True):
        assert torch.equal(tokens, want_tokens) and torch.equal(labels, want_labels)
    assert torch.equal(got_after, expected_after)
