"""GraphedTraining's choices, on the CPU: when it records, replays, or runs the network as is.

The recording itself needs a GPU (``benchmarks/gpu_epochs.sh`` checks it there); here
``make_graphed_callables`` is replaced by a stand-in that counts what it is asked to do.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from imdb_torch.config import ModelConfig, resolve
from imdb_torch.model import cuda_graphs
from imdb_torch.model.cuda_graphs import GraphedTraining
from imdb_torch.model.keras_compat import EmbeddingOccurrences, keras_init_
from imdb_torch.model.network import SentimentNet


class Recorder:
    """Stands in for make_graphed_callables: "replays" by calling the module, and counts."""

    def __init__(self, fail: bool = False):
        self.recorded, self.replays, self.fail = [], 0, fail

    def __call__(self, module, sample_args):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        self.recorded.append(sample_args[0].shape)

        def replay(tokens):
            self.replays += 1
            return module(tokens)

        return replay


@pytest.fixture
def recorder(monkeypatch):
    made = Recorder()
    monkeypatch.setattr(cuda_graphs.torch.cuda, "make_graphed_callables", made)

    # CPU tensors stand for the GPU's here.
    def can_replay(self, tokens):
        return self.net.training and torch.is_grad_enabled()

    monkeypatch.setattr(GraphedTraining, "_can_replay", can_replay)
    return made


def tokens(rows: int) -> torch.Tensor:
    return torch.randint(0, 500, (rows, 100))


def test_full_batches_replay_the_graphs_recorded_at_the_first(recorder):
    net = SentimentNet(ModelConfig())
    cleared = []
    graphed = GraphedTraining(net, after_capture=lambda: cleared.append(1))
    first = tokens(64)
    torch.testing.assert_close(graphed(first), net(first))
    graphed(tokens(64))
    assert recorder.recorded == [torch.Size([64, 100])] and recorder.replays == 2
    assert cleared == [1]  # once, after recording


def test_other_shapes_evaluation_and_no_grad_run_the_network_itself(recorder):
    net = SentimentNet(ModelConfig())
    graphed = GraphedTraining(net)
    graphed(tokens(64))
    graphed(tokens(32))  # an epoch's last, smaller batch
    with torch.no_grad():
        graphed(tokens(64))
    net.eval()
    graphed(tokens(64))
    assert recorder.replays == 1 and len(recorder.recorded) == 1


def test_cpu_tensors_are_never_recorded():
    net = SentimentNet(ModelConfig())
    graphed = GraphedTraining(net)
    batch = tokens(64)
    torch.testing.assert_close(graphed(batch), net(batch))
    assert graphed._graphed is None and not graphed._failed


def test_a_failed_recording_warns_once_and_trains_without_graphs(monkeypatch):
    failing = Recorder(fail=True)
    monkeypatch.setattr(cuda_graphs.torch.cuda, "make_graphed_callables", failing)
    monkeypatch.setattr(GraphedTraining, "_can_replay", lambda self, tokens: True)
    net = SentimentNet(ModelConfig())
    cleared = []
    graphed = GraphedTraining(net, after_capture=lambda: cleared.append(1))
    with pytest.warns(UserWarning, match=r"^CUDA graphs could not be recorded \(operation not "
                      r"permitted when stream is capturing\); training without them$"):  # fmt: skip
        graphed(tokens(64))
    graphed(tokens(64))  # no second try, no second warning
    assert cleared == [1]  # the warm-up passes' leftovers are cleared all the same


def test_the_occurrence_squares_stay_in_one_tensor_that_each_take_empties():
    """A recorded backward adds into the tensor it was recorded with: take must not swap it."""
    net = SentimentNet(ModelConfig())
    occurrences = EmbeddingOccurrences(net.embedding)
    assert occurrences.take() is None  # nothing before the first backward
    batch, labels = tokens(8), torch.randint(0, 2, (8,)).float()
    taken = []
    for _ in range(2):
        nn.BCEWithLogitsLoss()(net(batch), labels).backward()
        buffer = occurrences._squares
        taken.append(occurrences.take())
        assert occurrences._squares is buffer and buffer.count_nonzero() == 0
    torch.testing.assert_close(taken[0], taken[1])  # each take holds its own batch's squares
    assert taken[0].count_nonzero() > 0


class HostTraffic(TorchDispatchMode):
    """Records the operations that a CUDA graph cannot record: a tensor made on the host
    and copied in (``lift_fresh``, as ``t[i] = 1`` does), or a value read back (``item``)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.lift_fresh.default, torch.ops.aten._local_scalar_dense.default):
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("preset", ["lstm", "lstm-2layer", "gru", "strong"])
def test_the_networks_training_pass_can_be_recorded(preset):
    """What GraphedTraining records, the forward and backward with Keras's embedding update
    watching, neither makes host tensors nor reads values back (the strong preset's word
    dropout once did, and its graphs could not be recorded)."""
    settings = resolve(preset, {"maxlen": 20, "num_words": 500})
    net = SentimentNet(settings.model)
    keras_init_(net)
    occurrences = EmbeddingOccurrences(net.embedding)
    batch, labels = torch.randint(0, 500, (8, 20)), torch.randint(0, 2, (8,)).float()
    with HostTraffic() as traffic:
        nn.BCEWithLogitsLoss()(net(batch), labels).backward()
    assert traffic.seen == []
    assert occurrences.take().count_nonzero() > 0  # the watch ran, inside the recorded ops
