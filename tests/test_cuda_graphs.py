"""CUDA graphs of the training pass, checked on the CPU: when they are recorded and replayed,
that training with them is training without them, and that what they record could be.

The recording itself needs a GPU (``benchmarks/gpu_epochs.sh`` checks it there); here
``make_graphed_callables`` is replaced by a stand-in that does what it does around the
recording: warm-up passes (which Keras's embedding update also watches), then a callable
that runs the forward and backward the graphs would replay.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from imdb_torch.config import ModelConfig, resolve
from imdb_torch.model import cuda_graphs, fused_rnn
from imdb_torch.model.cuda_graphs import GraphedTraining
from imdb_torch.model.fused_rnn import use_fused_kernel
from imdb_torch.model.keras_compat import EmbeddingOccurrences, keras_init_
from imdb_torch.model.network import SentimentNet
from imdb_torch.training.module import SentimentClassifier

from .conftest import tiny_settings


class Recorder:
    """Stands in for make_graphed_callables: three warm-up forward and backward passes, as
    the real one runs (gradients taken with ``autograd.grad``, so no ``.grad`` is touched),
    then a "replay" that calls the module; counts what it was asked to do."""

    def __init__(self, fail: bool = False):
        self.recorded, self.replays, self.fail = [], 0, fail

    def __call__(self, module, sample_args):
        for _ in range(3):
            output = module(*sample_args)
            weights = [p for p in module.parameters() if p.requires_grad]
            torch.autograd.grad(output, weights, torch.randn_like(output))
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

    def can_replay(self, tokens):  # CPU tensors stand for the GPU's here
        return self.net.training and torch.is_grad_enabled()

    monkeypatch.setattr(GraphedTraining, "_can_replay", can_replay)
    return made


def tokens(rows: int) -> torch.Tensor:
    return torch.randint(0, 500, (rows, 100))


def test_full_batches_replay_the_graphs_recorded_at_the_first(recorder):
    net = SentimentNet(ModelConfig(dropout=0.0))
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
    net.train()
    graphed.release()
    graphed(tokens(64))  # released: never recorded again
    assert recorder.replays == 1 and len(recorder.recorded) == 1


def test_cpu_tensors_are_never_recorded():
    net = SentimentNet(ModelConfig(dropout=0.0))
    graphed = GraphedTraining(net)
    batch = tokens(64)
    torch.testing.assert_close(graphed(batch), net(batch))
    assert graphed._graphed is None and graphed._may_record  # never tried


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


def test_recording_gives_back_the_random_state_its_warm_up_drew_from(recorder):
    net = SentimentNet(ModelConfig(dropout=0.3))
    torch.manual_seed(0)
    GraphedTraining(net)(tokens(64))  # warm-up passes, then the batch's own pass
    after_recording = torch.rand(3)
    torch.manual_seed(0)
    net(tokens(64))  # the batch's own pass alone
    assert torch.equal(after_recording, torch.rand(3))


def test_training_with_graphs_is_training_without_them(recorder, monkeypatch, tiny_tarball,
                                                       tmp_path):  # fmt: skip
    """A whole fit, graphs forced on (their replay being the network's own pass): the same
    weights as without them. Without clearing the warm-up passes' embedding squares, the
    first step would differ (RMSprop's per-occurrence update, keras_compat.py)."""
    from imdb_torch.training.trainer import Hardware, prepare

    monkeypatch.setattr(SentimentClassifier, "_cuda_graphs_apply", lambda self: True)
    weights = []
    for graphs in (True, False):
        settings = tiny_settings(tiny_tarball, arch="lstm", dropout=0.3, seed=3, max_epochs=2,
                                 patience=3, lr=0.01)  # fmt: skip
        run = prepare(settings, logdir=tmp_path / str(graphs), name="graphs", version=0,
                      hardware=Hardware("cpu", 1), progress=False, cuda_graphs=graphs)  # fmt: skip
        run.fit()
        assert run.model.graphed_training is None  # released when training ends
        weights.append(run.model.state_dict())
    assert recorder.replays > 0 and len(recorder.recorded) == 1
    for name, value in weights[1].items():
        torch.testing.assert_close(weights[0][name], value, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "setting, value",
    [
        ("world_size", 2),
        ("precision", "bf16-mixed"),
        ("accumulate_grad_batches", 2),
        ("ema", 0.99),
        ("packed", True),
        ("device", "cpu"),
    ],  # fmt: skip
)
def test_graphs_are_made_only_where_they_are_known_to_replay_the_same_step(setting, value):
    def module_under(**changes):
        model = SentimentClassifier(
            ModelConfig(packed=changes.get("packed", False)),
            {"ema": changes.get("ema")},
        )
        model._device = torch.device(changes.get("device", "cuda:0"))  # as Lightning moves it
        trainer = {"world_size": 1, "precision": "32-true", "accumulate_grad_batches": 1}
        trainer.update((key, changes[key]) for key in trainer.keys() & changes.keys())
        model.trainer = SimpleNamespace(**trainer)
        return model

    assert module_under()._cuda_graphs_apply()
    assert not module_under(**{setting: value})._cuda_graphs_apply()


def test_the_conditions_read_what_a_real_trainer_has():
    import lightning as L

    model = SentimentClassifier()
    model._device = torch.device("cuda:0")  # as Lightning moves it to a GPU
    model.trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    assert model._cuda_graphs_apply()


class HostTraffic(TorchDispatchMode):
    """Records the operations that a CUDA graph cannot record: a tensor made on the host
    and copied in (``lift_fresh``, as ``t[i] = 1`` does), a value read back (``item``), or
    a result whose size depends on values (``nonzero``)."""

    UNRECORDABLE = (torch.ops.aten.lift_fresh.default, torch.ops.aten._local_scalar_dense.default,
                    torch.ops.aten.nonzero.default)  # fmt: skip

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.UNRECORDABLE:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused-twins"])
@pytest.mark.parametrize("preset", ["lstm", "lstm-2layer", "gru", "strong"])
def test_the_networks_training_pass_can_be_recorded(preset, fused, monkeypatch):
    """What GraphedTraining records, the forward and backward with Keras's embedding update
    watching, neither makes host tensors nor reads values back (the strong preset's word
    dropout once did, and its graphs could not be recorded)."""
    settings = resolve(preset, {"maxlen": 20, "num_words": 500})
    net = SentimentNet(settings.model)
    keras_init_(net)
    if fused:  # as a GPU run builds it: the twins, which run the layers' own code there
        monkeypatch.setattr(fused_rnn, "kernel_available", lambda: False)
        use_fused_kernel(net)
    occurrences = EmbeddingOccurrences(net.embedding)
    batch, labels = torch.randint(0, 500, (8, 20)), torch.randint(0, 2, (8,)).float()
    with HostTraffic() as traffic:
        nn.BCEWithLogitsLoss()(net(batch), labels).backward()
    assert traffic.seen == []
    assert occurrences.take().count_nonzero() > 0  # the watch ran, inside the recorded ops


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
