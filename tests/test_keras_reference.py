"""Unit-level parity with Keras, against values Keras computed once (tests/fixtures).

Regenerate the fixture with ``python tests/fixtures/make_keras_reference.py`` (keras extra).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from imdb_torch.config import ModelConfig
from imdb_torch.model import SentimentNet
from imdb_torch.model.fused_rnn import use_fused_kernel
from imdb_torch.model.keras_compat import EmbeddingOccurrences, KerasRMSprop, keras_init_
from imdb_torch.model.keras_weights import keras_weights, load_keras_weights

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "keras_reference.json").read_text())


def model_for(arch: str, fused: bool = False) -> SentimentNet:
    """The network with Keras's weights; keras_init_ first, for the LSTM's frozen bias_hh."""
    sizes = REFERENCE["sizes"]
    config = ModelConfig(arch=arch, num_words=sizes["vocab"], embedding_dim=sizes["embed"],
                         hidden_size=sizes["units"])  # fmt: skip
    model = SentimentNet(config)
    keras_init_(model)
    load_keras_weights(model, [np.array(w) for w in REFERENCE[arch]["weights"]])
    return use_fused_kernel(model) if fused else model


@pytest.mark.parametrize("fused", [False, True], ids=["nn-module", "fused-kernel"])
@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_forward_pass_matches_keras(arch, fused):
    model = model_for(arch, fused).eval()
    tokens = torch.tensor(REFERENCE["tokens"])
    probabilities = torch.sigmoid(model(tokens)).detach().numpy()
    np.testing.assert_allclose(probabilities, REFERENCE[arch]["probabilities"], atol=1e-6)


@pytest.mark.parametrize("fused", [False, True], ids=["nn-module", "fused-kernel"])
@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_one_rmsprop_step_matches_keras(arch, fused):
    model = model_for(arch, fused).train()
    tokens = torch.tensor(REFERENCE["tokens"])
    labels = torch.tensor(REFERENCE["labels"])
    # Keras 3's per-occurrence embedding update, as training uses it by default
    occurrences = EmbeddingOccurrences(model.embedding)
    optimizer = KerasRMSprop(model.parameters(), lr=REFERENCE["lr"], occurrences=occurrences)
    loss = nn.BCEWithLogitsLoss()(model(tokens), labels)
    assert loss.item() == pytest.approx(REFERENCE[arch]["loss"], abs=1e-5)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = keras_weights(model)
    expected = [np.array(w) for w in REFERENCE[arch]["weights_after_step"]]
    for ours, theirs in zip(after, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=2e-5)


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_weight_conversion_round_trips(arch):
    model = model_for(arch)
    for ours, theirs in zip(keras_weights(model), REFERENCE[arch]["weights"], strict=True):
        np.testing.assert_allclose(ours, np.array(theirs), atol=1e-7)
