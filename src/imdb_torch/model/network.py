"""``SentimentNet``: the lesson's network as a plain ``nn.Module``.

The Keras lesson (chapter 9-3)::

    model = keras.Sequential()
    model.add(keras.layers.Embedding(500, 16, input_length=100))
    model.add(keras.layers.LSTM(8, dropout=0.3))          # or GRU(8); for two layers, the
                                                          # first with return_sequences=True
    model.add(keras.layers.Dense(1, activation='sigmoid'))

is ``SentimentNet(ModelConfig(arch="lstm", dropout=0.3))`` here: the same layers. ``forward``
returns the logit; the sigmoid lives in the loss (``BCEWithLogitsLoss``), the same function
computed more stably. To *train* it as Keras does, ``training/module.py`` adds what lies
outside the layers (``keras_compat.py``): Keras's initial weights, Keras's RMSprop formula and
its per-occurrence embedding update; a plain ``torch.optim.RMSprop`` would train another
model. It also swaps in twins of the layers whose CPU forward and backward run a faster kernel
(``fused_rnn.py``); on a GPU they run the layers' own code.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..data.text import PAD
from .keras_compat import SequenceDropout
from .packing import left_align, run_packed

RNN_LAYERS = {"lstm": nn.LSTM, "gru": nn.GRU}


class SentimentNet(nn.Module):
    """Embedding → (input dropout → LSTM/GRU) per layer → Dense(1), on padded token rows."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        directions = 2 if config.bidirectional else 1
        self.embedding = nn.Embedding(config.num_words, config.embedding_dim)
        # Beyond the lesson (--word-dropout): a layer only when asked for, as Keras's has none.
        self.word_dropout = (
            WordDropout(config.word_dropout, config.num_words) if config.word_dropout else None
        )
        # Keras's LSTM(dropout=...) drops each layer's inputs, so every layer is its own
        # module with its own SequenceDropout in front (nn.LSTM(num_layers=2, dropout=...)
        # would drop between layers only, with a new mask at every step).
        self.input_dropouts = nn.ModuleList(
            SequenceDropout(config.dropout) for _ in range(config.num_layers)
        )
        rnn_layer = RNN_LAYERS[config.arch]
        self.rnns = nn.ModuleList(
            rnn_layer(
                config.embedding_dim if i == 0 else directions * config.hidden_size,
                config.hidden_size,
                batch_first=True,
                bidirectional=config.bidirectional,
            )
            for i in range(config.num_layers)
        )
        pooled = 2 if config.pooling == "mean-max" else 1
        self.head = nn.Linear(pooled * directions * config.hidden_size, 1)  # Dense(1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of "positive", shape (batch,), for ``tokens`` (batch, time) padded with 0."""
        lengths = None
        if self.config.packed:  # beyond the lesson: the layers skip the padding
            tokens, lengths = left_align(tokens)
        x = self.embedding(tokens)  # Embedding(500, 16)
        if self.word_dropout is not None:  # beyond the lesson
            x = self.word_dropout(x, tokens)
        for dropout, rnn in zip(self.input_dropouts, self.rnns, strict=True):
            x = dropout(x)  # LSTM(8, dropout=0.3): the dropout of the layer's inputs
            # x: every step's output (Keras's return_sequences=True), the next layer's input
            x, state = rnn(x) if lengths is None else run_packed(rnn, x, lengths)
        if self.config.pooling == "last":  # LSTM's return_sequences=False
            features = final_state(state)
        else:  # beyond the lesson: pool the top layer's outputs over the review's words
            features = pool_over_tokens(x, tokens != PAD, self.config.pooling)
        return self.head(features).squeeze(-1)  # Dense(1); the sigmoid is in the loss


def final_state(state: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The top layer's final hidden state, each direction's side by side: (batch, D·hidden).

    An LSTM's state is ``(h_n, c_n)``, a GRU's ``h_n``; ``h_n`` is (directions, batch, hidden).
    Without packing, the forward direction's is the last time step's output, as Keras returns.
    """
    h_n = state[0] if isinstance(state, tuple) else state
    return torch.cat(list(h_n), dim=-1)


def pool_over_tokens(outputs: torch.Tensor, is_token: torch.Tensor, pooling: str) -> torch.Tensor:
    """Max (and mean) of ``outputs`` (batch, time, features) over the positions holding tokens.

    A row without tokens pools to zeros.
    """
    mask = is_token.unsqueeze(-1)
    has_tokens = mask.any(dim=1)
    maximum = outputs.masked_fill(~mask, float("-inf")).amax(dim=1)
    maximum = torch.where(has_tokens, maximum, torch.zeros_like(maximum))
    if pooling == "max":
        return maximum
    mean = (outputs * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return torch.cat([mean, maximum], dim=-1)


class WordDropout(nn.Module):
    """Drop whole words: each vocabulary word leaves a batch with probability ``p``.

    A dropped word's embedding is zeroed at every one of its occurrences, so the classifier
    cannot lean on any single word (Gal & Ghahramani's embedding dropout, as AWD-LSTM applies
    it, one draw per batch); kept words are scaled by ``1 / (1 - p)``. Padding is never dropped.
    Keras has no such layer; ``p = 0`` (the default) makes it the identity.
    """

    def __init__(self, p: float, num_words: int):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"word dropout must lie in [0, 1), got {p}")
        self.p, self.num_words = p, num_words

    def forward(self, embedded: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``embedded``: ``tokens``' embeddings, in any layout ending with the features."""
        if not self.training or self.p == 0:
            return embedded
        scale = embedded.new_empty(self.num_words).bernoulli_(1 - self.p) / (1 - self.p)
        # fill_ rather than scale[PAD] = 1, which copies a new host tensor in: a CUDA graph
        # cannot record that (model/cuda_graphs.py).
        scale[PAD].fill_(1)
        return embedded * scale[tokens].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"p={self.p}"
