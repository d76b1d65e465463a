"""Seconds per training step of candidate configurations for the ``strong`` preset.

Batch 64 of reviews 50 to 400 tokens long (pre-padded to 400), vocabulary 20,000, embedding 64,
Adam; forward, backward and optimiser step, on whatever device torch uses by default (CPU):

    python benchmarks/strong_config.py
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from imdb_torch.config import ModelConfig, OptimConfig  # noqa: E402
from imdb_torch.training.module import SentimentClassifier  # noqa: E402

CANDIDATES = [
    {"hidden_size": 64, "num_layers": 2, "bidirectional": True, "packed": True},
    {"hidden_size": 64, "num_layers": 2, "bidirectional": True, "packed": False},
    {"hidden_size": 64, "num_layers": 1, "bidirectional": True, "packed": False},
    {"hidden_size": 32, "num_layers": 1, "bidirectional": True, "packed": True},
    {"hidden_size": 64, "num_layers": 1, "bidirectional": False, "packed": False},
]


def main() -> None:
    torch.manual_seed(0)
    batch, maxlen = 64, 400
    tokens = torch.zeros(batch, maxlen, dtype=torch.long)
    for row, length in enumerate(torch.randint(50, maxlen, (batch,)).tolist()):
        tokens[row, maxlen - length :] = torch.randint(3, 20000, (length,))
    labels = torch.randint(0, 2, (batch,)).float()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for config in CANDIDATES:
        model = SentimentClassifier(
            ModelConfig(arch="lstm", num_words=20000, embedding_dim=64, dropout=0.3, **config),
            OptimConfig(optimizer="adam"),
        )
        optimizer = model.configure_optimizers()
        for step in range(4):  # the first step warms up and is not timed
            if step == 1:
                started = time.perf_counter()
            loss = model.loss_fn(model(tokens), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds = (time.perf_counter() - started) / 3
        print(f"{config}: {seconds * 1000:.0f} ms/step, {seconds * 313 / 60:.1f} min/epoch")


if __name__ == "__main__":
    main()
