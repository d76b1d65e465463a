import math

import lightning as L
import pytest
import torch
from torch import nn

from imdb_torch.config import PRESETS, ModelConfig, resolve
from imdb_torch.errors import UserError
from imdb_torch.model.keras_compat import KerasRMSprop, SequenceDropout, keras_parameter_count
from imdb_torch.model.network import SentimentNet, WordDropout

from .conftest import classifier, tiny_settings, validation_by_hand


def test_sequence_dropout_uses_one_mask_per_sequence():
    torch.manual_seed(0)
    layer = SequenceDropout(0.3).train()
    x = torch.ones(64, 100, 16)
    y = layer(x)
    dropped = y == 0
    # the same features are dropped at every time step...
    assert torch.equal(dropped, dropped[:, :1, :].expand_as(dropped))
    # ...different sequences get different masks, at about the requested rate
    assert not torch.equal(dropped[0], dropped[1])
    assert 0.2 < dropped[:, 0, :].float().mean().item() < 0.4
    # kept units are scaled so the expectation is unchanged
    assert torch.allclose(y[~dropped], torch.full_like(y[~dropped], 1 / 0.7))


def test_sequence_dropout_is_off_in_eval():
    layer = SequenceDropout(0.5).eval()
    x = torch.randn(4, 10, 3)
    assert torch.equal(layer(x), x)


def test_every_stacked_layer_drops_its_inputs():
    torch.manual_seed(0)
    # The modules' own path, where hooks see their inputs; test_fused_rnn.py shows the fused
    # path drops the same units.
    model = classifier(arch="lstm", num_layers=2, dropout=0.3, fused_rnn=False).train()
    seen = []
    for rnn in model.net.rnns:
        rnn.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    model(torch.randint(1, 500, (32, 20)))
    assert len(seen) == 2
    for inputs in seen:
        zero = inputs == 0
        assert zero.any(), "inputs of every recurrent layer are dropped"
        assert torch.equal(zero, zero[:, :1, :].expand_as(zero))
    model.eval()
    seen.clear()
    model(torch.randint(1, 500, (32, 20)))
    assert not any((inputs == 0).any() for inputs in seen)


def test_the_lessons_network_holds_the_lessons_layers_only():
    # As a learner prints it beside Keras's model.summary(): nothing beyond the lesson unless
    # asked for.
    assert [name for name, _ in SentimentNet(ModelConfig()).named_children()] == [
        "embedding", "input_dropouts", "rnns", "head"]  # fmt: skip
    with_words_dropped = SentimentNet(ModelConfig(word_dropout=0.3))
    assert isinstance(with_words_dropped.word_dropout, WordDropout)


def test_word_dropout_drops_every_occurrence_of_a_word():
    torch.manual_seed(0)
    layer = WordDropout(0.4, num_words=200).train()
    tokens = torch.randint(0, 200, (8, 50))
    tokens[:, :5] = 0  # padding
    embedded = torch.randn(8, 50, 6).abs() + 0.1  # no zeros of its own
    torch.manual_seed(1)
    out = layer(embedded, tokens)
    dropped = (out == 0).all(dim=-1)
    for word in tokens.unique().tolist():
        where = tokens == word
        assert dropped[where].all() or not dropped[where].any(), word  # all or none
    assert not dropped[tokens == 0].any()
    torch.testing.assert_close(out[tokens == 0], embedded[tokens == 0])
    kept = ~dropped & (tokens != 0)
    torch.testing.assert_close(out[kept], embedded[kept] / 0.6)
    share = dropped[tokens != 0].float().mean().item()
    assert 0.25 < share < 0.55
    # the same words drop in the fused kernel's layout (time, batch)
    torch.manual_seed(1)
    transposed = layer(embedded.transpose(0, 1), tokens.t())
    torch.testing.assert_close(transposed.transpose(0, 1), out)
    assert torch.equal(layer.eval()(embedded, tokens), embedded)


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_keras_initialisation(arch):
    torch.manual_seed(0)
    model = classifier(arch=arch, num_layers=2)
    assert model.net.embedding.weight.abs().max() <= 0.05
    hidden = 8
    for rnn in model.net.rnns:
        w_ih, w_hh = rnn.weight_ih_l0, rnn.weight_hh_l0
        limit = math.sqrt(6 / (w_ih.shape[0] + w_ih.shape[1]))  # Glorot uniform
        assert w_ih.abs().max() <= limit
        assert w_ih.abs().max() > 0.8 * limit
        # orthogonal recurrent kernel: Keras's (hidden, gates*hidden) has orthonormal rows
        assert torch.allclose(w_hh.T @ w_hh, torch.eye(hidden), atol=1e-5)
        bias = rnn.bias_ih_l0 + rnn.bias_hh_l0
        if arch == "lstm":
            expected = torch.zeros(4 * hidden)
            expected[hidden : 2 * hidden] = 1  # unit_forget_bias
        else:
            expected = torch.zeros(3 * hidden)
        assert torch.equal(bias, expected)
    assert torch.equal(model.net.head.bias, torch.zeros(1))
    assert model.net.head.weight.abs().max() <= math.sqrt(6 / 9)


def test_torch_init_keeps_pytorch_defaults():
    torch.manual_seed(0)
    model = classifier(init="torch")
    assert model.net.embedding.weight.abs().max() > 1  # N(0, 1), not uniform(±0.05)
    assert not torch.allclose(model.net.rnns[0].bias_hh_l0, torch.zeros(32))


@pytest.mark.parametrize(
    ("preset", "keras", "ours"),
    [
        ("lstm", 8809, 8841),
        ("lstm-dropout", 8809, 8841),
        ("lstm-2layer", 9353, 9417),
        ("gru", 8633, 8633),
    ],
)
def test_parameter_counts_against_keras(preset, keras, ours):
    model = classifier(**resolve(preset).flat())
    assert model.keras_parameter_count() == keras
    assert sum(p.numel() for p in model.parameters()) == ours
    # nn.LSTM's second bias is held at zero, so what trains is exactly Keras's model
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == keras


def test_presets_are_the_lessons_experiments():
    assert resolve("lstm-2layer").model.num_layers == 2
    assert resolve("lstm-2layer").model.dropout == 0.3
    gru = resolve("gru").flat()
    assert resolve("gru", {"dropout": 0.1}).flat() == {**gru, "dropout": 0.1}
    for name in ("lstm", "lstm-dropout", "lstm-2layer", "gru"):
        settings = resolve(name).flat()
        assert settings["num_words"] == 500 and settings["maxlen"] == 100
        assert settings["optimizer"] == "rmsprop" and settings["batch_size"] == 64
        assert settings["lr"] == 1e-4  # RMSprop's Keras default, filled in
    assert gru["embedding_dim"] == 16 and gru["hidden_size"] == 8
    assert set(PRESETS) == {"lstm", "lstm-dropout", "lstm-2layer", "gru", "strong"}


def test_keras_parameter_count_formula():
    assert keras_parameter_count(ModelConfig()) == 8809  # the lesson's LSTM(8)
    # Keras Bidirectional(LSTM(8)) on 16 inputs: 2 x 800, head 2 x 8 + 1
    bidirectional = ModelConfig(bidirectional=True)
    assert keras_parameter_count(bidirectional) == 8000 + 1600 + 17
    # Mean and max side by side: the head reads twice the features.
    pooled = ModelConfig(bidirectional=True, pooling="mean-max")
    assert keras_parameter_count(pooled) == 8000 + 1600 + 33


@pytest.mark.parametrize("preset", ["lstm-2layer", "gru", "strong"])
@pytest.mark.parametrize("pooling", ["last", "max", "mean-max"])
def test_keras_count_is_what_trains(preset, pooling):
    # With Keras's initialisation nn.LSTM's second bias is held at zero, so the weights that
    # train are Keras's, whatever the layers, directions and pooling.
    model = classifier(**resolve(preset, {"pooling": pooling}).flat())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert model.keras_parameter_count() == trainable


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_bidirectional_packed_model(arch):
    torch.manual_seed(0)
    model = classifier(arch=arch, num_layers=2, bidirectional=True, packed=True).eval()
    assert model.net.rnns[1].input_size == 16  # both directions of an 8-unit layer
    tokens = torch.randint(3, 500, (4, 12))
    tokens[0, :5] = 0  # pre-padded
    tokens[1, -7:] = 0  # post-padded
    logits = model(tokens)
    assert logits.shape == (4,)
    # Packing skips padding: where the padding sits does not change the result.
    moved = tokens.clone()
    moved[0] = torch.cat([tokens[0, 5:], tokens[0, :5]])
    assert torch.allclose(model(moved), logits, atol=1e-6)


def test_packed_unidirectional_equals_unpacked_on_full_rows():
    torch.manual_seed(0)
    plain = classifier(arch="gru").eval()
    packed = classifier(arch="gru", packed=True).eval()
    packed.load_state_dict(plain.state_dict())
    tokens = torch.randint(3, 500, (3, 20))
    assert torch.allclose(plain(tokens), packed(tokens), atol=1e-6)


def test_forward_gives_one_logit_per_review():
    model = classifier(arch="gru").eval()
    logits = model(torch.randint(0, 500, (5, 100)))
    assert logits.shape == (5,)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"arch": "rnn"},
        {"dropout": 1.0},
        {"dropout": -0.1},
        {"hidden_size": 0},
        {"optimizer": "sgd"},
        {"lr": 0.0},
        {"init": "xavier"},
        {"ema": 1.0},
        {"word_dropout": 1.0},
        {"lr_decay": 1.0},
        {"ema": 0.0},
        {"ngrams": 6},
        {"ngram_buckets": 0},
        {"ngram_lr": -1.0},
    ],
)
def test_bad_model_settings_are_user_errors(kwargs):
    with pytest.raises(UserError):
        classifier(**kwargs)


def test_keras_rmsprop_step_matches_keras_formula():
    torch.manual_seed(0)
    start = torch.randn(5)
    grads = [torch.randn(5) * 1e-3, torch.randn(5)]
    param = nn.Parameter(start.clone())
    optimizer = KerasRMSprop([param], lr=1e-4)
    velocity = torch.zeros(5, dtype=torch.float64)
    expected = start.double()
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
        velocity = 0.9 * velocity + 0.1 * grad.double() ** 2
        expected = expected - 1e-4 * grad.double() / torch.sqrt(velocity + 1e-7)
    step = param.detach().double() - start.double()
    assert torch.allclose(step, expected - start.double(), rtol=0, atol=5e-7)
    # torch's RMSprop puts epsilon outside the root: a different step on small gradients
    other = nn.Parameter(start.clone())
    torch_rmsprop = torch.optim.RMSprop([other], lr=1e-4, alpha=0.9, eps=1e-7)
    other.grad = grads[0].clone()
    torch_rmsprop.step()
    param2 = nn.Parameter(start.clone())
    keras = KerasRMSprop([param2], lr=1e-4)
    param2.grad = grads[0].clone()
    keras.step()
    assert not torch.allclose(other, param2, atol=1e-6)


def test_optimizer_defaults_are_keras_defaults():
    model = classifier()
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, KerasRMSprop)
    assert optimizer.defaults == {"lr": 1e-4, "rho": 0.9, "eps": 1e-7}
    adam = classifier(optimizer="adam").configure_optimizers()
    assert adam.defaults["eps"] == 1e-7 and adam.defaults["lr"] == 1e-3


def test_lstm_recurrent_bias_stays_zero_and_torch_init_trains_it():
    model = classifier(arch="lstm")
    optimizer = model.configure_optimizers()
    tokens, labels = torch.randint(0, 500, (8, 10)), torch.ones(8)
    model.loss_fn(model(tokens), labels).backward()
    optimizer.step()
    assert torch.equal(model.net.rnns[0].bias_hh_l0, torch.zeros(32))
    assert classifier(arch="lstm", init="torch").net.rnns[0].bias_hh_l0.requires_grad


@pytest.mark.parametrize("sparse", [True, False])
def test_embedding_velocity_per_occurrence_or_dense(sparse):
    torch.manual_seed(0)
    model = classifier(arch="gru", num_words=10, dense_embedding_updates=not sparse)
    optimizer = model.configure_optimizers()
    tokens = torch.tensor([[1, 5, 5, 5], [1, 2, 5, 7]])
    logits = model(tokens)
    captured = []
    model.net.embedding.weight.register_hook(lambda grad: captured.append(grad.clone()))
    model.loss_fn(logits, torch.tensor([1.0, 0.0])).backward()
    optimizer.step()
    velocity = optimizer.state[model.net.embedding.weight]["square_avg"]
    dense = 0.1 * captured[0] ** 2
    if sparse:  # word 5 occurs four times: the sum of four squares exceeds the square of the sum
        assert (velocity[5] > dense[5] * 1.01).any()
        assert torch.allclose(velocity[7], dense[7])  # one occurrence: the same
    else:
        assert torch.allclose(velocity, dense)


def test_epoch_metrics_are_means_over_every_review_of_the_epoch(tiny_tarball, tmp_path):
    """As Keras reports them: the loss weighted by batch size (7 does not divide the set), and
    nothing from the sanity-check batches Lightning runs before training."""
    from imdb_torch.data.batches import DeviceBatches
    from imdb_torch.training.trainer import Hardware, prepare

    class CountReviews(L.Callback):  # what each epoch's training metrics are means over
        def __init__(self):
            self.counts = []

        def on_train_epoch_end(self, trainer, module):
            self.counts.append((module.train_loss.weight.item(), module.train_acc.weight.item()))

    settings = tiny_settings(tiny_tarball, arch="gru", optimizer="adam", lr=0.01,
                             eval_batch_size=7, seed=0, max_epochs=2, patience=2)  # fmt: skip
    run = prepare(settings, logdir=tmp_path, name="metrics", version=0,
                  hardware=Hardware("cpu", 1), progress=False)  # fmt: skip
    run.trainer.callbacks.append(counted := CountReviews())
    run.fit()
    # Lightning resets the logged metrics after each epoch: the second counts its own reviews.
    reviews = len(run.datamodule.train_set)
    assert counted.counts == [(reviews, reviews), (reviews, reviews)]
    row = run.history.epochs[-1]
    loss, accuracy, count = validation_by_hand(run.model, run.datamodule)
    assert count % 7 != 0
    assert row["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert row["val_acc"] == pytest.approx(accuracy)
    assert row["train_loss"] > 0 and 0 <= row["train_acc"] <= 1
    # One process: fed batches cut from tensors kept where the model is (data/batches.py).
    assert isinstance(run.trainer.train_dataloader, DeviceBatches)


def test_parameter_count_includes_the_ngram_weights():
    # One count for the console line and train.py's free-space check alike.
    plain = keras_parameter_count(ModelConfig())
    assert keras_parameter_count(ModelConfig(ngrams=3, ngram_buckets=1000)) == plain + 1001
    model = classifier(ngrams=2, ngram_buckets=1000)
    assert model.keras_parameter_count() == plain + 1001
