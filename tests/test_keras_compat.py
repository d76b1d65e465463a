"""Keras 3's per-occurrence embedding update wherever training can run: several processes
(DDP over gloo), gradient accumulation, gradient clipping; refused under float16 scaling."""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from imdb_torch.config import ModelConfig, Settings
from imdb_torch.errors import UserError
from imdb_torch.model import SentimentNet, keras_compat
from imdb_torch.model.fused_rnn import index_add_rows, use_fused_kernel
from imdb_torch.model.keras_compat import EmbeddingOccurrences, KerasRMSprop, keras_init_
from imdb_torch.training.trainer import Hardware, prepare

from .conftest import classifier

CONFIG = ModelConfig(arch="lstm", num_words=40, embedding_dim=6, hidden_size=4)
STEPS, BATCH, WORLD = 3, 16, 2


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Global batches in which words repeat, so per-occurrence and dense squares differ."""
    generator = torch.Generator().manual_seed(5)
    return [
        (torch.randint(1, 12, (BATCH, 10), generator=generator),
         torch.randint(0, 2, (BATCH,), generator=generator).float())
        for _ in range(STEPS)
    ]  # fmt: skip


def fresh_net() -> SentimentNet:
    torch.manual_seed(0)
    net = SentimentNet(CONFIG)
    keras_init_(net)
    return net


def train(model: nn.Module, net: SentimentNet, rows: slice) -> dict[str, torch.Tensor]:
    optimizer = KerasRMSprop(
        model.parameters(), lr=0.01, occurrences=EmbeddingOccurrences(net.embedding)
    )
    for tokens, labels in batches():
        optimizer.zero_grad()
        nn.BCEWithLogitsLoss()(model(tokens[rows]), labels[rows]).backward()
        optimizer.step()
    return {name: value.detach().clone() for name, value in net.state_dict().items()}


def _rank(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)  # fmt: skip
    try:
        net = fresh_net()
        share = BATCH // WORLD
        weights = train(DistributedDataParallel(net), net, slice(rank * share, (rank + 1) * share))
        torch.save(weights, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_processes_update_the_embedding_as_one_process_on_the_whole_batch(tmp_path):
    context = multiprocessing.get_context("spawn")
    ranks = [
        context.Process(target=_rank, args=(rank, str(tmp_path / "init"), str(tmp_path)))
        for rank in range(WORLD)
    ]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=120)  # a hang (two ranks in different collectives) fails here
    for process in ranks:
        if process.is_alive():
            process.kill()
    assert [process.exitcode for process in ranks] == [0, 0]

    single = train(fresh_net_model := fresh_net(), fresh_net_model, slice(None))
    first, second = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    start = fresh_net().state_dict()
    for name, value in single.items():
        assert torch.equal(first[name], second[name]), name  # the ranks agree exactly
        torch.testing.assert_close(first[name], value, rtol=0, atol=1e-5, msg=name)
    assert not torch.allclose(single["embedding.weight"], start["embedding.weight"])


def test_without_the_reduction_the_ranks_would_drift_apart():
    """What the reduction fixes: each half-batch alone gives other squares than the whole."""
    net = fresh_net()
    occurrences = EmbeddingOccurrences(net.embedding)
    tokens, labels = batches()[0]
    nn.BCEWithLogitsLoss()(net(tokens), labels).backward()
    whole = occurrences.take()
    halves = []
    for rows in (slice(0, BATCH // 2), slice(BATCH // 2, None)):
        net.zero_grad()
        nn.BCEWithLogitsLoss()(net(tokens[rows]), labels[rows]).backward()
        halves.append(occurrences.take())
    torch.testing.assert_close((halves[0] + halves[1]) / WORLD**2, whole)
    assert not torch.allclose(halves[0], halves[1])


def test_the_squares_are_the_same_on_the_fused_path_which_alone_calls_the_kernel(monkeypatch):
    kernel_calls = []
    monkeypatch.setattr(keras_compat, "index_add_rows",
                        lambda *args: kernel_calls.append(1) or index_add_rows(*args))  # fmt: skip
    tokens, labels = batches()[0]
    squares = []
    for fused in (False, True):  # --plain-rnn's nn.Embedding, then the fused path's twin
        net = use_fused_kernel(fresh_net()) if fused else fresh_net()
        occurrences = EmbeddingOccurrences(net.embedding)
        nn.BCEWithLogitsLoss()(net(tokens), labels).backward()
        squares.append(occurrences.take())
        assert len(kernel_calls) == fused
    torch.testing.assert_close(squares[0], squares[1], rtol=1e-5, atol=1e-9)
    assert squares[0].count_nonzero() > 0


def test_accumulated_half_batches_step_as_the_whole_batch():
    tokens, labels = batches()[0]
    whole = train(net := fresh_net(), net, slice(None))
    net = fresh_net()
    optimizer = KerasRMSprop(
        net.parameters(), lr=0.01, occurrences=EmbeddingOccurrences(net.embedding)
    )
    for tokens, labels in batches():
        optimizer.zero_grad()
        for rows in (slice(0, BATCH // 2), slice(BATCH // 2, None)):
            # Lightning's accumulate_grad_batches=2 divides each micro-batch's loss by 2.
            (nn.BCEWithLogitsLoss()(net(tokens[rows]), labels[rows]) / 2).backward()
        optimizer.step()
    for name, value in whole.items():
        torch.testing.assert_close(net.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)


def test_clipping_scales_the_occurrence_squares_with_the_gradient():
    tokens, labels = batches()[0]
    velocities = []
    for clip in (None, 1e-3):
        torch.manual_seed(0)
        model = classifier(num_words=40, grad_clip=clip)
        optimizer = model.configure_optimizers()
        loss = model.loss_fn(model(tokens), labels)
        loss.backward()
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()
                                              if p.grad is not None])  # fmt: skip
        model.configure_gradient_clipping(optimizer)
        optimizer.step()
        velocities.append(optimizer.state[model.net.embedding.weight]["square_avg"].clone())
    factor = 1e-3 / (float(norm) + 1e-6)
    assert factor < 0.1  # the clip bit
    torch.testing.assert_close(velocities[1], velocities[0] * factor**2, rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("precision", ["16-mixed", "16"])
def test_float16_with_a_gradient_scaler_is_refused(tmp_path, precision):
    with pytest.raises(UserError, match="16-mixed does not work with RMSprop's per-occurrence"):
        prepare(Settings(), logdir=tmp_path, name="x", version=0,
                hardware=Hardware("cpu", 1, precision=precision))  # fmt: skip
    # The dense rule has no squares to scale, and bf16 no scaler: both are accepted.
    dense = Settings.from_flat({"dense_embedding_updates": True})
    prepare(
        dense,
        logdir=tmp_path,
        name="x",
        version=0,
        hardware=Hardware("cpu", 1, precision=precision),
    )
    prepare(
        Settings(),
        logdir=tmp_path,
        name="x",
        version=0,
        hardware=Hardware("cpu", 1, precision="bf16-mixed"),
    )
