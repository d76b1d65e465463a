"""What a practitioner would try first: linear models over word n-grams, on the project's split.

The same reviews as every recurrent run: the aclImdb training reviews in the order the project
reads them, split by ``train_test_split(test_size=0.2, random_state=42)`` into 20,000 to fit
and 5,000 to choose the regularisation on; then the 25,000 test reviews. Three models:

* TF-IDF (unigrams and bigrams, ``sublinear_tf``, ``min_df=2``) + ``LogisticRegression``;
* NBSVM-style (Wang & Manning 2012): binary 1-3-gram features scaled by their naive-Bayes
  log-count ratios, then ``LogisticRegression``;
* the same over whole words: words of one letter and words with an apostrophe kept as they
  are ("I", "a", "don't"), as the project's own encoding keeps them; scikit-learn's default
  tokens drop the first and cut the second in two.

For each: the C picked on the validation reviews, validation and test accuracy and log loss,
and the seconds taken to vectorise and fit (the test reviews' vectorising is not counted).
With ``--refit-all``, each model is then fitted again, with the chosen C, on all 25,000
training reviews, and scored on the test reviews: what the 5,000 held out for validation cost.

    python benchmarks/linear_baseline.py aclImdb_v1.tar.gz
"""

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from imdb_torch.data.imdb_archive import read_reviews  # noqa: E402


def texts_and_labels(reviews):
    # The HTML line breaks the reviews carry would otherwise become the token "br".
    return [r.text.replace("<br />", " ") for r in reviews], np.array([r.label for r in reviews])


def review_sets(archive: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """Raw texts and labels of the project's review sets: ``fit`` and ``val`` (20,000 and
    5,000, split as the data module splits them), ``train`` (all 25,000) and ``test``."""
    reviews = read_reviews(archive)
    texts, labels = texts_and_labels(reviews["train"])
    fit, val = train_test_split(np.arange(len(texts)), test_size=0.2, random_state=42)
    return {
        "fit": ([texts[i] for i in fit], labels[fit]),
        "val": ([texts[i] for i in val], labels[val]),
        "train": (texts, labels),
        "test": texts_and_labels(reviews["test"]),
    }


def tfidf_features(fit_texts, labels):
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    return vectorizer.fit_transform(fit_texts), vectorizer.transform


# Words of one letter or more, an apostrophe allowed inside (scikit-learn's default token,
# \w\w+, drops "I" and "a" and cuts "don't" into "don").
WHOLE_WORDS = r"(?u)\b\w[\w']*\b"


def nb_features(fit_texts, labels, token_pattern=r"(?u)\b\w\w+\b"):
    vectorizer = CountVectorizer(
        ngram_range=(1, 3), min_df=2, binary=True, token_pattern=token_pattern
    )
    counts = vectorizer.fit_transform(fit_texts)
    # r = log((p / |p|_1) / (q / |q|_1)), p and q the smoothed feature counts of each class.
    p = np.asarray(counts[labels == 1].sum(axis=0)).ravel() + 1.0
    q = np.asarray(counts[labels == 0].sum(axis=0)).ravel() + 1.0
    ratio = sparse.diags(np.log((p / p.sum()) / (q / q.sum())))

    def transform(texts):
        return vectorizer.transform(texts) @ ratio

    return counts @ ratio, transform


def scores(labels, probabilities) -> str:
    return (f"loss {log_loss(labels, probabilities):.4f} "
            f"acc {accuracy_score(labels, probabilities > 0.5):.4f}")  # fmt: skip


MODELS = {
    "tfidf-1-2gram + logistic regression": (tfidf_features, (3.0, 10.0, 30.0, 100.0)),
    "nb-weighted 1-3gram + logistic regression (NBSVM-style)": (nb_features, (0.1, 0.3, 1.0)),
    "the same over whole words (one letter, apostrophes)": (
        partial(nb_features, token_pattern=WHOLE_WORDS),
        (0.1, 0.3, 1.0),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("archive", help="aclImdb_v1.tar.gz or an extracted aclImdb/")
    parser.add_argument(
        "--refit-all",
        action="store_true",
        help="also refit with the chosen C on all 25,000 training reviews",
    )
    args = parser.parse_args()
    sets = review_sets(Path(args.archive))
    (fit_texts, fit_labels), (val_texts, val_labels) = sets["fit"], sets["val"]
    (texts, labels), (test_texts, test_labels) = sets["train"], sets["test"]
    print(f"{len(fit_texts):,} reviews to fit, {len(val_texts):,} to choose C, "
          f"{len(test_texts):,} to test")  # fmt: skip
    for name, (features, grid) in MODELS.items():
        started = time.perf_counter()
        fit_x, transform = features(fit_texts, fit_labels)
        val_x = transform(val_texts)
        fitted = {}
        for c in grid:
            model = LogisticRegression(C=c, max_iter=1000).fit(fit_x, fit_labels)
            fitted[c] = (log_loss(val_labels, model.predict_proba(val_x)[:, 1]), model)
        best_c = min(fitted, key=lambda c: fitted[c][0])
        seconds = time.perf_counter() - started
        model = fitted[best_c][1]
        test_x = transform(test_texts)
        val_p, test_p = model.predict_proba(val_x)[:, 1], model.predict_proba(test_x)[:, 1]
        print(
            f"{name}: {fit_x.shape[1]:,} features, C={best_c:g} "
            f"(of {', '.join(f'{c:g}' for c in grid)}); "
            f"val {scores(val_labels, val_p)}; test {scores(test_labels, test_p)}; "
            f"{seconds:.0f} s to vectorise and fit all {len(grid)} C values"
        )  # fmt: skip
        if args.refit_all:
            all_x, transform = features(texts, labels)
            model = LogisticRegression(C=best_c, max_iter=1000).fit(all_x, labels)
            test_p = model.predict_proba(transform(test_texts))[:, 1]
            print(f"  refitted on all {len(texts):,} training reviews (C={best_c:g}): "
                  f"test {scores(test_labels, test_p)}")  # fmt: skip


if __name__ == "__main__":
    main()
