"""How far a recurrent model and the NBSVM baseline reach together: their logits averaged.

The NBSVM-style model of ``linear_baseline.py`` (C=0.3, fitted on the same 20,000 reviews)
and each checkpoint's model score the 5,000 validation and 25,000 test reviews; the two logits
are mixed as ``(1 - w) · model + w · nbsvm``. ``w`` is chosen on the validation reviews (what
a preset could do); the best ``w`` on the test reviews themselves is printed too, as a ceiling
no honest choice can pass. For a checkpoint with an n-gram model beside its network
(``--ngrams``), the network alone and the n-gram model alone are mixed as well, and the
two with each other as ``(1 - w) · network + w · n-grams`` (the model's answer is w = 0.5).
``--whole-words``: NBSVM over linear_baseline.py's whole words ("I", "don't").

    python benchmarks/ensemble_ceiling.py --data aclImdb_v1.tar.gz run/best.ckpt ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from linear_baseline import WHOLE_WORDS, nb_features, review_sets  # noqa: E402

import imdb_torch.cli  # noqa: E402, F401  (TensorBoard without TensorFlow, as the programs)
from imdb_torch.data.datamodule import IMDBDataModule  # noqa: E402
from imdb_torch.training.checkpoint import (  # noqa: E402
    datamodule_settings,
    model_from_checkpoint,
    read_checkpoint,
)

WEIGHTS = np.round(np.arange(0.0, 1.01, 0.1), 1)


def nbsvm_logits(data: Path, whole_words: bool = False):
    """NBSVM's logits and the labels for the validation and the test reviews."""
    sets = review_sets(data)
    (fit_texts, fit_labels), (val_texts, val_labels) = sets["fit"], sets["val"]
    test_texts, test_labels = sets["test"]
    tokens = {"token_pattern": WHOLE_WORDS} if whole_words else {}
    features, transform = nb_features(fit_texts, fit_labels, **tokens)
    model = LogisticRegression(C=0.3, max_iter=1000).fit(features, fit_labels)
    val_logits = model.decision_function(transform(val_texts))
    return (val_logits, val_labels), (model.decision_function(transform(test_texts)), test_labels)


def model_logits(ckpt: str, data: Path):
    """The checkpoint's logits, and its parts' (network, n-gram model) alone, per review set."""
    checkpoint = read_checkpoint(ckpt)
    model = model_from_checkpoint(checkpoint)
    datamodule = IMDBDataModule(**{**datamodule_settings(checkpoint), "data": str(data)})
    datamodule.setup("fit")
    datamodule.setup("test")
    sets = {}
    for name, reviews in (("val", datamodule.val_set), ("test", datamodule.test_set)):
        parts = {
            "the model": model,
            "its network alone": model.net,
            "its n-gram model alone": model.ngrams,
        }
        logits = {part: [] for part, module in parts.items() if module is not None}
        with torch.no_grad():
            for start in range(0, len(reviews.labels), 500):
                tokens = reviews.tokens[start : start + 500]
                for part in logits:
                    logits[part].append(parts[part](tokens))
        sets[name] = ({part: torch.cat(values).numpy() for part, values in logits.items()},
                      reviews.labels.numpy())  # fmt: skip
    return sets


def mixed(w: float, model, linear):
    return (1 - w) * model + w * linear


def accuracy(logits, labels) -> float:
    return float(((logits > 0) == (labels > 0.5)).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="aclImdb_v1.tar.gz")
    parser.add_argument(
        "--whole-words", action="store_true", help='NBSVM over whole words ("I", "don\'t")'
    )
    parser.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    nbsvm = nbsvm_logits(Path(args.data), whole_words=args.whole_words)
    (val_linear, val_labels), (test_linear, test_labels) = nbsvm
    print(f"NBSVM alone: test acc {accuracy(test_linear, test_labels):.4f}")
    for ckpt in args.checkpoints:
        sets = model_logits(ckpt, Path(args.data))
        # The same reviews in the same order on both sides, or the mixture means nothing.
        assert np.array_equal(sets["val"][1], val_labels)
        assert np.array_equal(sets["test"][1], test_labels)
        print(f"\n{ckpt}")
        for name in sets["test"][0]:
            val, test = sets["val"][0][name], sets["test"][0][name]
            chosen = max(WEIGHTS, key=lambda w: accuracy(mixed(w, val, val_linear), val_labels))
            ceiling = max(WEIGHTS, key=lambda w: accuracy(mixed(w, test, test_linear), test_labels))
            honest = accuracy(mixed(chosen, test, test_linear), test_labels)
            best = accuracy(mixed(ceiling, test, test_linear), test_labels)
            print(f"  {name}: alone {accuracy(test, test_labels):.4f}; with NBSVM, w={chosen:g} "
                  f"chosen on validation: test {honest:.4f}; best w on test ({ceiling:g}): "
                  f"{best:.4f}")  # fmt: skip
        if "its n-gram model alone" in sets["test"][0]:
            print("  its network and n-gram model, (1 - w) · network + w · n-grams:")
            (val_parts, _), (test_parts, _) = sets["val"], sets["test"]
            network, ngrams = "its network alone", "its n-gram model alone"
            for w in WEIGHTS:
                val = mixed(w, val_parts[network], val_parts[ngrams])
                test = mixed(w, test_parts[network], test_parts[ngrams])
                print(f"    w={w:g}: val acc {accuracy(val, val_labels):.4f}, "
                      f"test acc {accuracy(test, test_labels):.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
