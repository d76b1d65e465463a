"""Reviews per second that predict.py's ``Predictor`` classifies, from raw text.

Trains nothing: give it a checkpoint and the aclImdb archive; it reads the 25,000 test reviews
as raw text and times encoding plus the model, batched, on the CPU:

    python benchmarks/predict_speed.py --ckpt best.ckpt --data aclImdb_v1.tar.gz
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from imdb_torch.data.imdb_archive import read_reviews  # noqa: E402
from imdb_torch.predictor import Predictor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data", required=True, help="aclImdb archive or directory")
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    reviews = read_reviews(Path(args.data))["test"]
    texts = [review.text for review in reviews]
    predictor = Predictor.from_path(args.ckpt)
    predictor.predict(texts[:256])  # warm-up
    started = time.perf_counter()
    predictions = predictor.predict(texts, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    right = sum(p.label == ("positive" if r.label else "negative")
                for p, r in zip(predictions, reviews, strict=True))  # fmt: skip
    accuracy = right / len(reviews)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{len(texts):,} raw reviews in {seconds:.2f} s: {len(texts) / seconds:,.0f} reviews/s "
          f"(accuracy {accuracy:.4f})")  # fmt: skip


if __name__ == "__main__":
    main()
