"""Moving weights between a Keras model of the lesson and ``SentimentNet``.

Keras stores an RNN layer's kernels as ``(inputs, gates·units)``, PyTorch as the transpose.
LSTM gates are in the same order in both (input, forget, cell, output); GRU gates are not:
Keras has (update z, reset r, candidate h), PyTorch (reset r, update z, candidate n).
"""

from __future__ import annotations

import numpy as np
import torch

from .network import SentimentNet


def _gru_to_torch_order(matrix: np.ndarray) -> np.ndarray:
    z, r, h = np.split(matrix, 3, axis=-1)
    return np.concatenate([r, z, h], axis=-1)


def _gru_to_keras_order(matrix: np.ndarray) -> np.ndarray:
    r, z, h = np.split(matrix, 3, axis=-1)
    return np.concatenate([z, r, h], axis=-1)


def load_keras_weights(model: SentimentNet, weights: list[np.ndarray]) -> None:
    """Set ``model``'s parameters from Keras's ``model.get_weights()`` (unidirectional models).

    Order: embedding; per recurrent layer kernel, recurrent kernel, bias; dense kernel, bias.
    Keras's single LSTM bias goes to ``bias_ih`` (``bias_hh`` is zero); a GRU's two bias rows
    (``reset_after=True``) go to ``bias_ih`` and ``bias_hh``.
    """
    if model.config.bidirectional:
        raise ValueError("bidirectional models are not supported")
    if model.config.pooling != "last":
        raise ValueError(
            "only models reading the final hidden state (pooling 'last') are supported"
        )
    arrays = [np.asarray(w, dtype=np.float32) for w in weights]
    expected = 1 + 3 * len(model.rnns) + 2
    if len(arrays) != expected:
        raise ValueError(f"expected {expected} weight arrays, got {len(arrays)}")
    gru = model.config.arch == "gru"
    reorder = _gru_to_torch_order if gru else (lambda matrix: matrix)
    with torch.no_grad():
        model.embedding.weight.copy_(torch.from_numpy(arrays[0]))
        for i, rnn in enumerate(model.rnns):
            kernel, recurrent, bias = arrays[1 + 3 * i : 4 + 3 * i]
            rnn.weight_ih_l0.copy_(torch.from_numpy(reorder(kernel).T.copy()))
            rnn.weight_hh_l0.copy_(torch.from_numpy(reorder(recurrent).T.copy()))
            if gru:
                rnn.bias_ih_l0.copy_(torch.from_numpy(reorder(bias[0])))
                rnn.bias_hh_l0.copy_(torch.from_numpy(reorder(bias[1])))
            else:
                rnn.bias_ih_l0.copy_(torch.from_numpy(bias))
                rnn.bias_hh_l0.zero_()
        model.head.weight.copy_(torch.from_numpy(arrays[-2].T.copy()))
        model.head.bias.copy_(torch.from_numpy(arrays[-1]))


def keras_weights(model: SentimentNet) -> list[np.ndarray]:
    """The inverse of ``load_keras_weights``: arrays in Keras's ``get_weights()`` layout."""
    gru = model.config.arch == "gru"
    reorder = _gru_to_keras_order if gru else (lambda matrix: matrix)
    out = [model.embedding.weight.detach().numpy().copy()]
    for rnn in model.rnns:
        out.append(reorder(rnn.weight_ih_l0.detach().numpy().T))
        out.append(reorder(rnn.weight_hh_l0.detach().numpy().T))
        bias_ih, bias_hh = rnn.bias_ih_l0.detach().numpy(), rnn.bias_hh_l0.detach().numpy()
        out.append(np.stack([reorder(bias_ih), reorder(bias_hh)]) if gru else bias_ih + bias_hh)
    out.append(model.head.weight.detach().numpy().T.copy())
    out.append(model.head.bias.detach().numpy().copy())
    return out
