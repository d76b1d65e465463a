"""The lesson's four Keras models, trained by Keras, on the sequences imdb-torch prepares.

Needs the optional extra: ``pip install -e '.[keras]'`` (tensorflow-cpu and keras). The data
comes from ``IMDBDataModule`` (same encoding, same ``train_test_split``, same padding), handed
to Keras as NumPy arrays; everything after that is Keras's own layers, optimiser, training loop
and callbacks. Results are written in reproduce.py's format, so both land in one table:

    python benchmarks/keras_parity.py --data aclImdb_v1.tar.gz --seeds 42 43 44
    python scripts/reproduce.py      --data aclImdb_v1.tar.gz --seeds 42 43 44
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from imdb_torch.config import resolve  # noqa: E402
from imdb_torch.data.datamodule import IMDBDataModule  # noqa: E402
from imdb_torch.reporting.report import EXPERIMENTS, run_file, write_report, write_run  # noqa: E402


def keras_model(experiment: str):
    import keras
    from keras import layers

    settings = resolve(experiment).flat()
    recurrent = {"lstm": layers.LSTM, "gru": layers.GRU}[settings["arch"]]
    stack = [keras.Input(shape=(settings["maxlen"],)),
             layers.Embedding(settings["num_words"], settings["embedding_dim"])]  # fmt: skip
    for layer in range(settings["num_layers"]):
        stack.append(recurrent(settings["hidden_size"], dropout=settings["dropout"],
                               return_sequences=layer < settings["num_layers"] - 1))  # fmt: skip
    stack.append(layers.Dense(1, activation="sigmoid"))
    model = keras.Sequential(stack)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-4),
                  loss="binary_crossentropy", metrics=["accuracy"])  # fmt: skip
    return model


def arrays(data: str | None, cache_dir: str | None):
    datamodule = IMDBDataModule(data=data, cache_dir=cache_dir)
    datamodule.prepare_data()
    datamodule.setup()
    return {
        name: (subset.tokens.numpy(), subset.labels.numpy())
        for name, subset in (("train", datamodule.train_set), ("val", datamodule.val_set),
                             ("test", datamodule.test_set))
    }  # fmt: skip


def training_data(data: dict, seed: int, shuffle: str):
    """What ``fit`` trains on. ``each-epoch``: a tf.data pipeline that reshuffles every epoch.

    ``keras-default`` hands Keras the arrays with ``shuffle=True``, as the lesson does. With a
    global seed set (``keras.utils.set_random_seed``), Keras 3 on TensorFlow then draws the
    same permutation at every epoch, because each epoch starts a new iterator whose shuffle op
    is seeded alike; the reshuffling pipeline keeps what shuffling is meant to do.
    """
    x, y = data["train"]
    if shuffle == "keras-default":
        return {"x": x, "y": y, "batch_size": 64, "shuffle": True}
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(64)
    return {"x": dataset.prefetch(tf.data.AUTOTUNE)}


def run_one(
    experiment: str, seed: int, data: dict, max_epochs: int, patience: int, shuffle: str
) -> dict:
    import keras

    keras.utils.set_random_seed(seed)
    model = keras_model(experiment)

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs["seconds"] = time.perf_counter() - self.started

    with tempfile.TemporaryDirectory() as tmp:
        callbacks = [
            EpochTimer(),
            keras.callbacks.ModelCheckpoint(f"{tmp}/best-model.keras", save_best_only=True),
            keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True),
        ]
        started = time.perf_counter()
        fit = model.fit(**training_data(data, seed, shuffle), epochs=max_epochs,
                        validation_data=data["val"], callbacks=callbacks, verbose=2)  # fmt: skip
        wall = time.perf_counter() - started
    evaluate_started = time.perf_counter()
    test_loss, test_acc = model.evaluate(*data["test"], batch_size=64, verbose=0)
    evaluate_seconds = time.perf_counter() - evaluate_started
    h = fit.history
    history = [
        {"epoch": i + 1, "train_loss": h["loss"][i], "train_acc": h["accuracy"][i],
         "val_loss": h["val_loss"][i], "val_acc": h["val_accuracy"][i],
         "seconds": round(h["seconds"][i], 3)}
        for i in range(len(h["loss"]))
    ]  # fmt: skip
    best = min(history, key=lambda row: row["val_loss"])
    return {
        "framework": "keras",
        "experiment": experiment,
        "seed": seed,
        "settings": {**resolve(experiment).flat(), "shuffle": shuffle},
        "parameters": model.count_params(),
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "best_val_loss": best["val_loss"],
        "best_val_acc": best["val_acc"],
        "test_loss": float(test_loss),
        "test_acc": float(test_acc),
        "evaluate_seconds": round(evaluate_seconds, 3),
        "wall_seconds": round(wall, 2),
        "median_epoch_seconds": statistics.median(row["seconds"] for row in history),
        "history": history,
        "machine": f"{platform.machine()}, CPU",
        "versions": {"keras": keras.__version__, "backend": keras.backend.backend()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--experiments", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS))
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--out", default="results/chapter")
    parser.add_argument(
        "--shuffle",
        choices=("each-epoch", "keras-default"),
        default="each-epoch",
        help="each-epoch: reshuffle the training reviews every epoch, as imdb-torch does; "
        "keras-default: fit(shuffle=True) on arrays, which under a global seed repeats one "
        "order every epoch in Keras 3 on TensorFlow",
    )
    args = parser.parse_args()
    try:
        import keras  # noqa: F401
    except ImportError:
        print("keras_parity.py needs the keras extra: pip install -e '.[keras]'", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    data = arrays(args.data, args.cache_dir)
    jobs = [(e, s) for e in args.experiments for s in args.seeds]
    for number, (experiment, seed) in enumerate(jobs, start=1):
        target = run_file(out, "keras", experiment, seed)
        if target.is_file():
            print(f"[{number}/{len(jobs)}] keras {experiment} seed {seed}: done before, kept")
            continue
        print(f"[{number}/{len(jobs)}] keras {experiment} seed {seed}: training", flush=True)
        record = run_one(experiment, seed, data, args.max_epochs, args.patience, args.shuffle)
        write_run(target, record)
        print(
            f"[{number}/{len(jobs)}] keras {experiment} seed {seed}: best epoch "
            f"{record['best_epoch']}, val_loss {record['best_val_loss']:.4f}, "
            f"val_acc {record['best_val_acc']:.4f}, test_acc {record['test_acc']:.4f}"
        )
    print(write_report(out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
