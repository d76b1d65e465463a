"""Where a plain PyTorch port of the lesson would differ from Keras, and what is done instead.

Each piece here is checked against Keras itself by ``tests/test_keras_reference.py``:

- ``SequenceDropout``: Keras's ``LSTM(dropout=...)``, one mask per sequence on the inputs.
- ``keras_init_``: Keras's initialisers (PyTorch's differ for every layer).
- ``KerasRMSprop``: Keras's RMSprop formula (``torch.optim.RMSprop`` has another).
- ``EmbeddingOccurrences``: Keras 3's per-occurrence embedding update, handed to the optimiser.
- ``keras_parameter_count``: what Keras's ``model.summary()`` counts (its LSTM has one bias).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

from ..config import ModelConfig
from .fused_rnn import TimeMajorEmbedding, index_add_rows


class SequenceDropout(nn.Module):
    """Keras's ``dropout=`` on a recurrent layer: drop *input features*, one mask per sequence.

    The same features are zeroed at every time step of a sequence (``nn.LSTM(dropout=...)``
    instead drops between stacked layers, with a new mask at each step). Kept units are scaled
    by ``1 / (1 - p)``; in eval mode the layer is the identity. Input: (batch, time, features).
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p)
        return x * (keep / (1 - self.p))  # the small mask scaled: one pass over x

    def extra_repr(self) -> str:
        return f"p={self.p}"


def keras_init_(net: nn.Module) -> None:
    """Re-initialise ``net`` (a ``SentimentNet``) as Keras would: ``Embedding`` uniform(±0.05),
    Glorot-uniform input kernels and ``Dense``, orthogonal recurrent kernels, zero biases with
    the LSTM's forget-gate bias 1."""
    nn.init.uniform_(net.embedding.weight, -0.05, 0.05)
    for rnn in net.rnns:
        hidden = rnn.hidden_size
        for name, param in rnn.named_parameters():
            if name.startswith("weight_ih"):
                # (gates·hidden, inputs): the same Glorot fans as Keras's transposed kernel.
                nn.init.xavier_uniform_(param)
            elif name.startswith("weight_hh"):
                nn.init.orthogonal_(param)
            else:
                nn.init.zeros_(param)
        if isinstance(rnn, nn.LSTM):
            # PyTorch's gate order i, f, g, o is Keras's. Keras's LSTM has one bias; nn.LSTM
            # adds bias_ih and bias_hh. Training both would move their sum twice as far per
            # RMSprop step as Keras moves its bias, so bias_hh is held at zero.
            with torch.no_grad():
                for name, param in rnn.named_parameters():
                    if name.startswith("bias_ih"):
                        param[hidden : 2 * hidden].fill_(1.0)
                    elif name.startswith("bias_hh"):
                        param.requires_grad_(False)
    nn.init.xavier_uniform_(net.head.weight)
    nn.init.zeros_(net.head.bias)


def keras_parameter_count(model: ModelConfig) -> int:
    """Parameters of the same model in Keras (``model.summary()``'s total).

    Keras's LSTM has one bias vector per layer where ``nn.LSTM`` has two (``bias_ih`` and
    ``bias_hh``); Keras's GRU (``reset_after=True``) has two, like ``nn.GRU``. Beyond the
    lesson: a bidirectional layer counts twice, mean-max pooling doubles the ``Dense`` layer's
    inputs, and ``--ngrams`` adds its linear model's weights and bias.
    """
    gates, biases = (4, 1) if model.arch == "lstm" else (3, 2)
    directions = 2 if model.bidirectional else 1
    pooled = 2 if model.pooling == "mean-max" else 1
    total = model.num_words * model.embedding_dim  # Embedding
    inputs, hidden = model.embedding_dim, model.hidden_size
    for _ in range(model.num_layers):
        per_direction = inputs * hidden + hidden * hidden + biases * hidden
        total += directions * gates * per_direction  # LSTM or GRU
        inputs = directions * hidden
    total += pooled * inputs + 1  # Dense(1)
    return total + (model.ngram_buckets + 1 if model.ngrams else 0)


class EmbeddingOccurrences:
    """Keras 3's view of an embedding's gradient, for ``KerasRMSprop``.

    TensorFlow hands the optimiser an embedding's gradient as one slice per word occurrence
    (``IndexedSlices``), and Keras 3's RMSprop adds each slice's square to its running average
    of squares, where a dense gradient adds the square of their sum: a word seen n times in a
    batch steps up to √n times further. This object watches ``embedding``'s output during
    backward and sums, per embedding row, the squares of its occurrences' gradients; the
    optimiser takes them (``take``) in place of ``grad²`` for that weight.

    It stays correct where training can run:

    - gradient accumulation: the squares add up over the micro-batches' backward passes, each
      already scaled by the accumulation, until the optimiser takes them;
    - clipping: ``scale_(c²)`` when the gradient is scaled by ``c`` (see the LightningModule);
    - several processes (DDP): each rank's squares come from its own share of the global
      batch, whose mean loss makes every slice ``world_size`` times the global one; ``take``
      sums the ranks' squares and divides by ``world_size²``, so every rank applies the step
      one process would take on the whole batch;
    - float16 with a gradient scaler would scale the squares by the scaler's factor squared:
      refused where the Trainer is built (``training/trainer.py``).
    """

    def __init__(self, embedding: nn.Embedding):
        self.weight = embedding.weight
        # On the fused CPU path (fused_rnn.TimeMajorEmbedding), the kernel's one pass adds the
        # squares' rows; elsewhere (--plain-rnn, a GPU) PyTorch's index_add_ does.
        self._kernel_adds_rows = isinstance(embedding, TimeMajorEmbedding)
        # Made at the first backward, then kept and zeroed after each take rather than made
        # anew: a CUDA graph's backward (model/cuda_graphs.py) adds into this very tensor.
        self._squares: torch.Tensor | None = None
        embedding.register_forward_hook(self._watch)

    def _watch(self, module: nn.Embedding, inputs: tuple[torch.Tensor], output: torch.Tensor):
        if output.requires_grad:
            tokens = inputs[0]
            output.register_hook(lambda grad: self._add(tokens, grad))

    def _add(self, tokens: torch.Tensor, grad: torch.Tensor) -> None:
        if grad.dim() == 3 and not grad.is_contiguous() and grad.transpose(0, 1).is_contiguous():
            grad, tokens = grad.transpose(0, 1), tokens.t()  # time-major: flattened without a copy
        if self._squares is None:
            self._squares = torch.zeros_like(self.weight)
        # The tokens are those the embedding's forward accepted: valid rows of the weight.
        rows, squares = tokens.reshape(-1), grad.reshape(-1, grad.shape[-1]).square()
        if self._kernel_adds_rows:
            index_add_rows(self._squares, rows, squares)
        else:
            self._squares.index_add_(0, rows, squares)

    def scale_(self, factor: float | torch.Tensor) -> None:
        if self._squares is not None:
            self._squares.mul_(factor)

    def take(self) -> torch.Tensor | None:
        """The squares summed since the last call, reduced over the processes of a DDP run
        (``None`` before the first backward)."""
        squares = None
        if self._squares is not None:
            squares = self._squares.clone()
            self._squares.zero_()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Every rank reaches this at every step, so the collective never waits alone.
            squares = torch.zeros_like(self.weight) if squares is None else squares
            dist.all_reduce(squares)
            squares /= dist.get_world_size() ** 2
        return squares


class KerasRMSprop(torch.optim.Optimizer):
    """RMSprop exactly as Keras computes it (no momentum, not centred).

    ``v ← ρ·v + (1 − ρ)·g²`` and ``θ ← θ − lr·g / √(v + ε)``, with Keras's defaults ρ = 0.9 and
    ε = 1e-7. With ``occurrences``, the embedding's ``g²`` is replaced by the per-occurrence
    squares Keras 3 uses (``EmbeddingOccurrences``). ``torch.optim.RMSprop`` divides by
    ``√v + ε`` instead (and defaults to ρ = 0.99): on the tiny gradients of an 8-unit RNN's
    first updates, where ``v`` is near ε, its steps are several times larger than Keras's, and
    no setting of it reproduces Keras's step.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-4,
        rho: float = 0.9,
        eps: float = 1e-7,
        occurrences: EmbeddingOccurrences | None = None,
    ):
        if lr <= 0 or not 0 <= rho < 1 or eps < 0:
            raise ValueError(f"invalid RMSprop settings: lr={lr}, rho={rho}, eps={eps}")
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps})
        self.occurrences = occurrences

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        occurrence_squares = self.occurrences.take() if self.occurrences else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            squares = list(torch._foreach_mul(grads, grads))  # g², every weight's in one call
            square_avgs = []
            for i, p in enumerate(params):
                state = self.state[p]
                if "square_avg" not in state:
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                square_avgs.append(state["square_avg"])
                if occurrence_squares is not None and p is self.occurrences.weight:
                    squares[i] = occurrence_squares
            # The docstring's two lines for every weight at once; per weight p, they read
            # v.mul_(rho).add_(g², alpha=1 - rho); p.addcdiv_(g, (v + eps).sqrt(), value=-lr).
            torch._foreach_mul_(square_avgs, group["rho"])
            torch._foreach_add_(square_avgs, squares, alpha=1 - group["rho"])
            denominators = torch._foreach_sqrt(torch._foreach_add(square_avgs, group["eps"]))
            torch._foreach_addcdiv_(params, grads, denominators, value=-group["lr"])
        return loss
