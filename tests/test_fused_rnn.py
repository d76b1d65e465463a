"""The fused CPU kernel against nn.LSTM / nn.GRU themselves: outputs and gradients to 1e-5."""

import warnings

import pytest
import torch
from torch import nn

from imdb_torch.model import fused_rnn
from imdb_torch.model.fused_rnn import FusedGRU, FusedLSTM, fused_covers, run_fused

from .conftest import classifier

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def _outputs_and_gradients(rnn, x, run, seed=0):
    """Output, final states, and the gradients of a loss using all of them."""
    x = x.detach().clone().requires_grad_()
    output, state = run(rnn, x)
    states = state if isinstance(state, tuple) else (state,)
    generator = torch.Generator().manual_seed(seed)
    loss = (output * torch.randn(output.shape, generator=generator)).sum()
    for tensor in states:
        loss = loss + (tensor * torch.randn(tensor.shape, generator=generator)).sum()
    grads = torch.autograd.grad(loss, [x, *rnn.parameters()])
    return [output, *states], grads


def _assert_fused_equals_module(rnn, x):
    """The kernel's outputs, final states and gradients are the module's own."""
    plain_out, plain_grads = _outputs_and_gradients(rnn, x, lambda m, v: m(v))
    fused_out, fused_grads = _outputs_and_gradients(rnn, x, run_fused)
    assert [t.shape for t in fused_out] == [t.shape for t in plain_out]
    for fused, plain in zip(
        fused_out + list(fused_grads), plain_out + list(plain_grads), strict=True
    ):
        torch.testing.assert_close(fused, plain, **TOLERANCE)


def _layer(arch, hidden, bidirectional):
    torch.manual_seed(0)
    rnn = arch(6, hidden, batch_first=True, bidirectional=bidirectional)
    for param in rnn.parameters():
        nn.init.uniform_(param, -0.4, 0.4)
    return rnn


@pytest.mark.parametrize("arch", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("hidden", [8, 5])  # 5: not a multiple of any vector width
def test_fused_equals_module(arch, bidirectional, hidden):
    _assert_fused_equals_module(_layer(arch, hidden, bidirectional), torch.randn(7, 13, 6))


@pytest.mark.parametrize("arch", [nn.LSTM, nn.GRU])
def test_fused_handles_one_step_and_one_row(arch):
    rnn = arch(3, 4, batch_first=True)
    for shape in [(1, 1, 3), (1, 9, 3), (5, 1, 3)]:
        _assert_fused_equals_module(rnn, torch.randn(shape))


@pytest.mark.parametrize("arch", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("threads", [2, 3])
def test_fused_kernel_split_between_threads_equals_module(arch, threads, monkeypatch):
    # The kernel splits batch columns between threads only for large calls (evaluation's
    # batches): forced here, on batches that no thread's share of whole vectors divides.
    monkeypatch.setattr(fused_rnn, "_threads", lambda batch, steps, hidden: threads)
    rnn = _layer(arch, 5, bidirectional=True)
    for batch in (20, 37, 70):
        _assert_fused_equals_module(rnn, torch.randn(batch, 9, 6))


def test_a_loss_on_the_final_cell_state_alone_reaches_the_inputs_and_weights():
    # Only c_n is used: the kernel's backward gets a cell-state gradient and no hidden one.
    torch.manual_seed(0)
    rnn = nn.LSTM(6, 5, batch_first=True)
    x = torch.randn(7, 13, 6)

    def gradients(run):
        inputs = x.clone().requires_grad_()
        _, (_, c_n) = run(rnn, inputs)
        return torch.autograd.grad((c_n * torch.arange(5.0)).sum(), [inputs, *rnn.parameters()])

    for fused, plain in zip(gradients(run_fused), gradients(lambda m, v: m(v)), strict=True):
        torch.testing.assert_close(fused, plain, **TOLERANCE)


def _model_pair(**kwargs):
    torch.manual_seed(1)
    fused = classifier(**kwargs)
    plain = classifier(**kwargs, fused_rnn=False)
    plain.load_state_dict(fused.state_dict())
    return fused, plain


@pytest.mark.parametrize(
    "kwargs",
    [
        {"arch": "lstm"},
        {"arch": "gru"},
        {"arch": "lstm", "num_layers": 2, "dropout": 0.3},
        {"arch": "lstm", "num_layers": 2, "bidirectional": True, "pooling": "mean-max"},
    ],
)
def test_model_trains_the_same_on_either_path(kwargs):
    fused, plain = _model_pair(**kwargs)
    assert fused.state_dict().keys() == plain.state_dict().keys()
    tokens = torch.randint(0, 500, (16, 30))
    tokens[:4, :10] = 0  # pre-padding
    labels = torch.randint(0, 2, (16,)).float()
    results = []
    for model in (fused, plain):
        torch.manual_seed(2)  # the same dropout masks
        loss = model.loss_fn(model(tokens), labels)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (fused_loss, fused_grads), (plain_loss, plain_grads) = results
    torch.testing.assert_close(fused_loss, plain_loss, **TOLERANCE)
    for name, grad in plain_grads.items():
        if grad is not None:
            torch.testing.assert_close(fused_grads[name], grad, **TOLERANCE, msg=name)


def test_model_runs_the_fused_kernel_by_default(monkeypatch):
    calls = []
    original = fused_rnn.run_fused

    def counting(rnn, x):
        calls.append(type(rnn).__name__)
        return original(rnn, x)

    monkeypatch.setattr(fused_rnn, "run_fused", counting)
    fused, plain = _model_pair(arch="gru", num_layers=2)
    assert [type(rnn) for rnn in fused.net.rnns] == [FusedGRU, FusedGRU]
    fused(torch.randint(0, 500, (2, 10)))
    assert calls == ["FusedGRU", "FusedGRU"]
    plain(torch.randint(0, 500, (2, 10)))
    assert calls == ["FusedGRU", "FusedGRU"]  # fused_rnn=False: the modules' own code
    assert [type(rnn) for rnn in plain.net.rnns] == [nn.GRU, nn.GRU]


def test_the_twins_keep_the_layers_parameters_and_wide_layers_stay_modules():
    fused, plain = _model_pair(arch="lstm", num_layers=2)
    assert isinstance(fused.net.rnns[0], FusedLSTM) and isinstance(fused.net.rnns[0], nn.LSTM)
    for (name, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters(), strict=True):
        assert torch.equal(a, b) and a.requires_grad == b.requires_grad, name
    assert not fused.net.rnns[0].bias_hh_l0.requires_grad  # Keras's one LSTM bias
    wide = classifier(arch="lstm", hidden_size=64)  # past MAX_FUSED_GATES: nn.LSTM is faster
    assert type(wide.net.rnns[0]) is nn.LSTM


@pytest.mark.parametrize(
    "options", [{}, {"padding_idx": 0}, {"scale_grad_by_freq": True}, {"max_norm": 1.0}]
)
def test_time_major_embedding_gives_nn_embeddings_values_and_gradients(options):
    """Its own CPU backward (the kernel's add_rows) where it can, nn.Embedding's for the
    options that change the gradient or the weights; repeated tokens included."""
    torch.manual_seed(0)
    plain = nn.Embedding(30, 5, **options)
    twin = fused_rnn.TimeMajorEmbedding(30, 5, **options)
    twin.weight.data.copy_(plain.weight.data)
    tokens = torch.randint(0, 30, (7, 40))  # 280 draws of 30 words: every word repeats
    upstream = torch.randn(7, 40, 5)
    for embedding in (plain, twin):
        (embedding(tokens) * upstream).sum().backward()
    assert torch.allclose(twin(tokens), plain(tokens))
    assert torch.allclose(twin.weight.grad, plain.weight.grad, atol=1e-6)


def test_index_add_rows_is_index_add_for_what_the_kernel_takes_and_what_it_does_not():
    assert fused_rnn.kernel_available()  # else the first case would test index_add_ itself
    torch.manual_seed(0)
    rows = torch.randint(0, 30, (500,))  # every row repeats
    values = torch.randn(500, 6)
    expected = torch.randn(30, 6).index_add_(0, rows, values)
    out = expected.clone().index_add_(0, rows, -values)  # the same start, through index_add_
    assert fused_rnn.index_add_rows(out, rows, values) is out  # in place, as index_add_
    assert torch.allclose(out, expected, atol=1e-5)
    # Non-contiguous values (a transposed view), and float64 on index_add_'s own path.
    strided = values.t().contiguous().t()
    assert not strided.is_contiguous()
    assert torch.allclose(fused_rnn.index_add_rows(torch.zeros(30, 6), rows, strided),
                          torch.zeros(30, 6).index_add_(0, rows, values), atol=1e-5)  # fmt: skip
    doubles = fused_rnn.index_add_rows(torch.zeros(30, 6).double(), rows, values.double())
    assert torch.allclose(doubles, torch.zeros(30, 6).double().index_add_(0, rows, values.double()))


def test_what_the_kernel_does_not_cover_runs_the_module():
    lstm = nn.LSTM(4, 3, batch_first=True)
    x = torch.randn(2, 5, 4)
    assert fused_covers(lstm, x)
    assert not fused_covers(lstm, x.double())
    assert not fused_covers(nn.LSTM(4, 3, batch_first=True, num_layers=2), x)
    assert not fused_covers(nn.LSTM(4, 3), x)  # time-major
    assert not fused_covers(nn.LSTM(4, 3, batch_first=True, proj_size=2), x)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)
    assert not fused_covers(lstm, packed)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused_covers(lstm, x)
    # A packed model takes the module's path and still trains.
    model = classifier(arch="lstm", packed=True)
    model(torch.randint(0, 500, (3, 8))).sum().backward()


def test_without_a_compiler_the_model_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("IMDB_TORCH_KERNELS", str(tmp_path / "empty"))
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setenv("PATH", str(tmp_path))  # nor c++, g++ or clang++
    fused_rnn._load_once.cache_clear()
    try:
        model = classifier(arch="gru")
        tokens = torch.randint(0, 500, (3, 8))
        with pytest.warns(UserWarning, match="fused RNN kernel is unavailable.*no C.. compiler"):
            logits = model(tokens)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once only
            model(tokens)
        plain = classifier(arch="gru", fused_rnn=False)
        plain.load_state_dict(model.state_dict())
        torch.testing.assert_close(logits, plain(tokens))
    finally:
        fused_rnn._load_once.cache_clear()


def test_compiled_kernel_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("IMDB_TORCH_KERNELS", str(tmp_path / "kernels"))
    fused_rnn._load_once.cache_clear()
    try:
        fused_rnn.load_kernel()
        (library,) = (tmp_path / "kernels").iterdir()
        built = library.stat().st_mtime_ns
        fused_rnn._load_once.cache_clear()
        fused_rnn.load_kernel()
        assert library.stat().st_mtime_ns == built  # reused, not rebuilt
        assert [p.name for p in (tmp_path / "kernels").iterdir()] == [library.name]  # no temp
    finally:
        fused_rnn._load_once.cache_clear()


def test_a_failed_compilation_leaves_nothing_behind(tmp_path, monkeypatch):
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(fused_rnn, "SOURCE", broken)
    with pytest.raises(fused_rnn.KernelUnavailable, match="compiling broken.cpp failed"):
        fused_rnn._build(tmp_path / "kernels")
    assert list((tmp_path / "kernels").iterdir()) == []  # no library, no temporary file
