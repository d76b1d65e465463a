"""Step-for-step agreement with Keras: the same starting weights, the same batches, N steps.

Builds each dropout-free model of the lesson in Keras, copies its initial weights into
``SentimentNet``, then trains both on the same first N batches of the training split (no
shuffling): Keras with ``train_on_batch``, imdb-torch through Lightning's own training loop.
Prints the largest weight difference per array. Needs the keras extra:

    python benchmarks/keras_steps.py --data aclImdb_v1.tar.gz --steps 300
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import lightning as L  # noqa: E402
from keras_parity import keras_model  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from imdb_torch.config import ModelConfig  # noqa: E402
from imdb_torch.data.datamodule import IMDBDataModule, PaddedReviews, keep_batch  # noqa: E402
from imdb_torch.model.keras_weights import keras_weights, load_keras_weights  # noqa: E402
from imdb_torch.training.module import SentimentClassifier  # noqa: E402

NAMES = ["embedding", "kernel", "recurrent kernel", "bias", "dense kernel", "dense bias"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    datamodule = IMDBDataModule(args.data)
    datamodule.setup("fit")
    n = args.steps * 64
    tokens = datamodule.train_set.tokens.numpy()[:n]
    labels = datamodule.train_set.labels.numpy()[:n]
    for experiment in ("lstm", "gru"):
        keras.utils.set_random_seed(0)
        reference = keras_model(experiment)
        model = SentimentClassifier(ModelConfig(arch=experiment))
        load_keras_weights(model.net, reference.get_weights())
        for step in range(args.steps):
            batch = slice(step * 64, (step + 1) * 64)
            reference.train_on_batch(tokens[batch], labels[batch])
        loader = DataLoader(PaddedReviews(tokens, labels), batch_size=64, collate_fn=keep_batch)
        trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
        trainer.fit(model, train_dataloaders=loader)
        ours = keras_weights(model.net)
        diffs = [np.abs(a - b).max() for a, b in zip(reference.get_weights(), ours, strict=True)]
        print(
            f"{experiment}: after {args.steps} steps, largest |imdb-torch - Keras| per array: "
            + ", ".join(f"{name} {d:.1e}" for name, d in zip(NAMES, diffs, strict=True))
        )


if __name__ == "__main__":
    main()
