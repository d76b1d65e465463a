"""Chapter 9-3 of 혼자 공부하는 머신러닝+딥러닝 (first edition), step by step, in PyTorch Lightning.

LSTM and GRU sentiment classifiers on IMDB, in the lesson's order: load, split, pad, four
models trained with RMSprop, checkpoint and early stopping, a loss plot each, and the best
two-layer model on the test set. Each step names the Keras line it replaces.

    python examples/lesson_9_3.py                             # Keras's imdb.npz, downloaded
    python examples/lesson_9_3.py --data aclImdb_v1.tar.gz    # or the review archive

``scripts/train.py`` runs the same experiments with resuming, TensorBoard and more
(``--preset lstm``, ``lstm-dropout``, ``lstm-2layer``, ``gru``), with the same numbers: each
experiment here starts from the seed 42 that train.py uses.
"""

import argparse
import sys
from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")  # files, not windows
import matplotlib.pyplot as plt  # noqa: E402
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from imdb_torch.cli.common import quiet_lightning  # noqa: E402
from imdb_torch.config import ModelConfig, OptimConfig  # noqa: E402
from imdb_torch.data.corpus import load_corpus, resolve_source  # noqa: E402
from imdb_torch.data.datamodule import PaddedReviews, keep_batch  # noqa: E402
from imdb_torch.data.sequences import cap_vocabulary, pad_sequences  # noqa: E402
from imdb_torch.errors import UserError  # noqa: E402
from imdb_torch.training.callbacks import EpochHistory  # noqa: E402
from imdb_torch.training.console import EpochLines  # noqa: E402
from imdb_torch.training.module import SentimentClassifier  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument(
    "--data",
    help="imdb.npz, aclImdb_v1.tar.gz or an aclImdb/ directory (default: Keras's imdb.npz)",
)
parser.add_argument("--epochs", type=int, default=100, help="at most (default 100)")
parser.add_argument(
    "--out", default="lesson_9_3", help="where checkpoints and plots go (default: lesson_9_3)"
)
args = parser.parse_args()
quiet_lightning()  # without Lightning's tips about its cloud services, at every Trainer

# (train_input, train_target), (test_input, test_target) = imdb.load_data(num_words=500)
try:
    corpus = load_corpus(resolve_source(args.data))  # reviews as word indices, 1 = start
except UserError as error:  # offline, or a bad --data: one line, as the scripts say it
    print(f"lesson_9_3.py: error: {error}", file=sys.stderr)
    sys.exit(2)
# num_words=500: every word rarer than the 496 most frequent becomes 2, "unknown"
train_input = [cap_vocabulary(corpus.train[i], 500) for i in range(len(corpus.train))]
test_input = [cap_vocabulary(corpus.test[i], 500) for i in range(len(corpus.test))]
train_target, test_target = corpus.train_labels, corpus.test_labels

# train_input, val_input, train_target, val_target = train_test_split(
#     train_input, train_target, test_size=0.2, random_state=42)
train_input, val_input, train_target, val_target = train_test_split(
    train_input, train_target, test_size=0.2, random_state=42
)


# train_seq = pad_sequences(train_input, maxlen=100): padding in front, the last 100 words kept
train_seq = pad_sequences(train_input, maxlen=100)
val_seq = pad_sequences(val_input, maxlen=100)
test_seq = pad_sequences(test_input, maxlen=100)

out = Path(args.out)  # for the checkpoints and the loss plots
out.mkdir(parents=True, exist_ok=True)


# model.fit(train_seq, train_target, batch_size=64, validation_data=(val_seq, val_target))
def loader(seq, target, shuffle=False) -> DataLoader:
    reviews = PaddedReviews(seq, target)  # hands out whole batches, so no collating is needed
    return DataLoader(reviews, batch_size=64, shuffle=shuffle, collate_fn=keep_batch)


def train(name: str, model_config: ModelConfig) -> str:
    """One experiment: returns the path of its best checkpoint."""
    # Each experiment starts from the same seed, as `scripts/train.py --preset NAME` does,
    # so that it does not depend on which experiments ran before it.
    L.seed_everything(42, verbose=False)
    # model = keras.Sequential([Embedding(500, 16), LSTM(8), Dense(1, activation='sigmoid')])
    # rmsprop = keras.optimizers.RMSprop(learning_rate=1e-4)
    # model.compile(optimizer=rmsprop, loss='binary_crossentropy', metrics=['accuracy'])
    #
    # SentimentClassifier holds the network (model.net, a plain nn.Module: model/network.py)
    # and trains it as Keras would: Keras's initial weights, Keras's RMSprop formula and its
    # per-occurrence embedding update (model/keras_compat.py). Its LSTM and GRU layers are
    # FusedLSTM / FusedGRU: nn.LSTM / nn.GRU whose CPU forward and backward run a faster
    # kernel (model/fused_rnn.py), and which run nn.LSTM's own code on a GPU;
    # fused_rnn=False keeps nn.LSTM itself. On one GPU, training batches replay the network
    # from CUDA graphs (model/cuda_graphs.py); cuda_graphs=False launches every kernel.
    model = SentimentClassifier(model_config, OptimConfig(optimizer="rmsprop", lr=1e-4))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # model.summary(). Beside Keras's layers the printout shows TimeMajorEmbedding (the
    # Embedding, its output laid out for the fused kernel), SequenceDropout (the dropout
    # Keras keeps inside LSTM(dropout=...)) and WordDropout (beyond the lesson); a dropout
    # with p=0 is the identity.
    print(f"\n{name}: {model.net}")
    print(f"{trainable:,} trainable parameters, as Keras counts {model.keras_parameter_count():,}")

    # checkpoint_cb = keras.callbacks.ModelCheckpoint('best-lstm-model.h5', save_best_only=True)
    # early_stopping_cb = keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)
    # (restore_best_weights: the best epoch's weights are in its checkpoint; as in the book,
    # only the two-layer model's is loaded again, below, to score the test set.)
    # enable_version_counter=False: a second run replaces the file, as Keras replaces its .h5.
    checkpoint_cb = ModelCheckpoint(dirpath=out, filename=f"best-{name}-model", monitor="val_loss",
                                    save_top_k=1, enable_version_counter=False)  # fmt: skip
    early_stopping_cb = EarlyStopping(monitor="val_loss", patience=3)
    history = EpochHistory()  # Keras's History: one row of metrics per epoch
    epoch_lines = EpochLines(history)  # what Keras's fit prints: a line per epoch

    # history = model.fit(..., epochs=100, callbacks=[checkpoint_cb, early_stopping_cb])
    trainer = L.Trainer(
        max_epochs=args.epochs,
        callbacks=[history, epoch_lines, checkpoint_cb, early_stopping_cb],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,  # printed above
    )
    trainer.fit(model, loader(train_seq, train_target, shuffle=True), loader(val_seq, val_target))
    best = history.best()  # the lowest val_loss
    print(f"{name}: best epoch {best['epoch']}, val_loss {best['val_loss']:.4f}, "
          f"val_acc {best['val_acc']:.4f}")  # fmt: skip

    # plt.plot(history.history['loss']); plt.plot(history.history['val_loss']); ...
    plt.figure()
    epochs = [row["epoch"] for row in history.epochs]
    plt.plot(epochs, [row["train_loss"] for row in history.epochs])
    plt.plot(epochs, [row["val_loss"] for row in history.epochs])
    plt.xlabel("epoch")
    plt.ylabel("loss")
    plt.legend(["train", "val"])
    plt.title(name)
    plt.savefig(out / f"{name}-loss.png")
    plt.close()
    return checkpoint_cb.best_model_path


# The four experiments of the lesson.
train("lstm", ModelConfig(arch="lstm"))  # LSTM(8)
train("lstm-dropout", ModelConfig(arch="lstm", dropout=0.3))  # LSTM(8, dropout=0.3)
best_2rnn = train(  # LSTM(8, dropout=0.3, return_sequences=True), LSTM(8, dropout=0.3)
    "2rnn", ModelConfig(arch="lstm", num_layers=2, dropout=0.3)
)  # train.py's preset lstm-2layer
train("gru", ModelConfig(arch="gru"))  # GRU(8)

# rnn_model = keras.models.load_model('best-2rnn-model.h5')
# rnn_model.evaluate(test_seq, test_target)
# weights_only: loading a checkpoint never runs code from it, whatever torch's default.
rnn_model = SentimentClassifier.load_from_checkpoint(best_2rnn, weights_only=True)
tester = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
tester.test(rnn_model, loader(test_seq, test_target), verbose=False)
result = tester.callback_metrics  # test_loss and test_acc, what evaluate() returns
print(f"\ntest set, best two-layer model: loss {result['test_loss']:.4f}, "
      f"accuracy {result['test_acc']:.4f}")  # fmt: skip
print(f"checkpoints and loss plots: {out}/")
