"""``SentimentRNN``: embedding → stacked ``nn.LSTM``/``nn.GRU`` → one logit, as in the lesson."""

from __future__ import annotations

from functools import partial

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy

from . import __version__
from .errors import UserError
from .fused_rnn import fused_supports, kernel_available, run_fused_feature_major
from .optim import DEFAULT_LR, OPTIMIZERS, ROW_SQUARES, make_optimizer
from .text import PAD

ARCHS = {"lstm": nn.LSTM, "gru": nn.GRU}
INITS = ("keras", "torch")
POOLINGS = ("last", "max", "mean-max")
STAGES = ("train", "val", "test")


class SequenceDropout(nn.Module):
    """Keras's ``dropout=`` on a recurrent layer: drop *input features*, one mask per sequence.

    The same features are zeroed at every time step of a sequence (``nn.LSTM(dropout=...)``
    instead drops between stacked layers, with a new mask at each step). Kept units are scaled
    by ``1 / (1 - p)``; in eval mode the layer is the identity.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor, feature_major: bool = False) -> torch.Tensor:
        """``x``: (batch, time, features), or (features, time, batch) when ``feature_major``."""
        if not self.training or self.p == 0:
            return x
        batch, features = (x.shape[2], x.shape[0]) if feature_major else (x.shape[0], x.shape[2])
        # Drawn in the batch-first shape either way, so both layouts drop the same units.
        keep = x.new_empty(batch, 1, features).bernoulli_(1 - self.p)
        if feature_major:
            keep = keep.permute(2, 1, 0)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class WordDropout(nn.Module):
    """Drop whole words: each vocabulary word leaves a batch with probability ``p``.

    A dropped word's embedding is zeroed at every one of its occurrences, so the classifier
    cannot lean on any single word (Gal & Ghahramani's embedding dropout, as AWD-LSTM applies
    it, one draw per batch); kept words are scaled by ``1 / (1 - p)``. Padding is never dropped.
    Keras has no such layer; ``p = 0`` (the default) leaves it out.
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
        scale[PAD] = 1
        return embedded * scale[tokens].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def keras_init_(model: SentimentRNN) -> None:
    """Re-initialise as Keras does: ``Embedding`` uniform(±0.05), Glorot-uniform input kernels
    and ``Dense``, orthogonal recurrent kernels, zero biases with LSTM forget-gate bias 1."""
    nn.init.uniform_(model.embedding.weight, -0.05, 0.05)
    for rnn in model.rnns:
        hidden = rnn.hidden_size
        for name, param in rnn.named_parameters():
            if name.startswith("weight_ih"):
                # (gates·hidden, inputs): the same Glorot fans as Keras's transposed kernel.
                nn.init.xavier_uniform_(param)
            elif name.startswith("weight_hh"):
                nn.init.orthogonal_(param)
            else:
                nn.init.zeros_(param)
        if isinstance(rnn, nn.LSTM):
            # PyTorch gate order i, f, g, o matches Keras's. Keras's LSTM has one bias; nn.LSTM
            # adds bias_ih and bias_hh. Training both would move their sum twice as far per
            # RMSprop step as Keras moves its bias, so bias_hh is held at zero.
            with torch.no_grad():
                for name, param in rnn.named_parameters():
                    if name.startswith("bias_ih"):
                        param[hidden : 2 * hidden].fill_(1.0)
                    elif name.startswith("bias_hh"):
                        param.requires_grad_(False)
    nn.init.xavier_uniform_(model.head.weight)
    nn.init.zeros_(model.head.bias)


def _add_row_squares(weight: torch.Tensor, tokens: torch.Tensor, grad: torch.Tensor) -> None:
    """Sum, per embedding row, the squares of the gradients of each of its occurrences."""
    squares = torch.zeros_like(weight).index_add_(
        0, tokens.reshape(-1), grad.reshape(-1, grad.shape[-1]).square()
    )
    previous = getattr(weight, ROW_SQUARES, None)
    setattr(weight, ROW_SQUARES, squares if previous is None else previous + squares)


def keras_parameter_count(
    arch: str,
    num_words: int,
    embedding_dim: int,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool = False,
) -> int:
    """Parameters of the same model in Keras (``model.summary()``'s total).

    Keras's LSTM has one bias vector per layer where ``nn.LSTM`` has two (``bias_ih`` and
    ``bias_hh``); Keras's GRU (``reset_after=True``) has two, like ``nn.GRU``.
    """
    gates, biases = (4, 1) if arch == "lstm" else (3, 2)
    directions = 2 if bidirectional else 1
    total = num_words * embedding_dim + directions * hidden_size + 1
    inputs = embedding_dim
    for _ in range(num_layers):
        per_direction = inputs * hidden_size + hidden_size * hidden_size + biases * hidden_size
        total += directions * gates * per_direction
        inputs = directions * hidden_size
    return total


def left_align(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's tokens in front of its padding (for packing) and return the lengths.

    Works for pre- and post-padded rows alike; a row of padding only keeps length 1 so that
    packing accepts it.
    """
    is_pad = tokens == PAD
    order = torch.argsort(is_pad.to(torch.int8), dim=1, stable=True)
    lengths = (~is_pad).sum(dim=1).clamp(min=1)
    return tokens.gather(1, order), lengths


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


class SentimentRNN(L.LightningModule):
    """Binary sentiment classifier over padded IMDB token sequences.

    Args:
        arch: ``lstm`` or ``gru``.
        num_words, embedding_dim: embedding table size (must match the data's ``num_words``).
        hidden_size, num_layers: units per recurrent layer, and how many are stacked (each
            layer after the first reads the full output sequence of the one below).
        dropout: Keras-style input dropout on every recurrent layer (see ``SequenceDropout``).
        word_dropout: probability of dropping each vocabulary word from a training batch (see
            ``WordDropout``); 0 in the lesson.
        init: ``keras`` (Keras's initialisers) or ``torch`` (PyTorch's defaults).
        optimizer, lr: ``rmsprop`` (Keras's formula and defaults) or ``adam``; ``lr`` defaults
            to Keras's default for the optimiser (the lesson's RMSprop uses 1e-4).
        bidirectional: each layer reads the review both ways; the head sees both final states.
        packed: run the recurrent layers on packed sequences, so no step is spent on padding
            (Keras's lesson runs over the padding).
        grad_clip: clip the gradient norm to this value (``None``: no clipping).
        lr_decay: multiply the learning rate by this factor after every epoch whose validation
            loss is not the lowest so far (``ReduceLROnPlateau`` with patience 0, as Keras's
            callback of that name); ``None``: a constant learning rate, as in the lesson.
        ema: keep an exponential moving average of the weights with this decay per training
            step (Lightning's ``EMAWeightAveraging``); validation, checkpoints and so the best
            model hold the averaged weights, training goes on with the raw ones. ``None``: off.
        pooling: what the head reads: ``last``, the final hidden state (Keras's
            ``return_sequences=False``); ``max``, the top layer's outputs max-pooled over the
            review's tokens; ``mean-max``, their mean and max side by side. Padding is left
            out of both pools.
        sparse_embedding_updates: with RMSprop, update the embedding as Keras 3 does: its
            gradient is sparse, one slice per occurrence of a word, and the running average of
            squared gradients adds each slice's square rather than the square of their sum, so
            a word seen n times in a batch takes a step up to √n times larger. ``False`` gives
            the dense update (Keras 2 behaved so).
        fused_rnn: on the CPU, run the recurrent layers through the fused kernel of
            ``imdb_torch.fused_rnn`` (same parameters, same results to 1e-5, several times
            faster); ``False`` runs ``nn.LSTM``/``nn.GRU`` themselves. Not a hyperparameter: it
            is not saved, and can be changed on a trained model. CUDA always runs cuDNN.
    """

    def __init__(
        self,
        arch: str = "lstm",
        num_words: int = 500,
        embedding_dim: int = 16,
        hidden_size: int = 8,
        num_layers: int = 1,
        dropout: float = 0.0,
        init: str = "keras",
        optimizer: str = "rmsprop",
        lr: float | None = None,
        bidirectional: bool = False,
        packed: bool = False,
        grad_clip: float | None = None,
        sparse_embedding_updates: bool = True,
        pooling: str = "last",
        ema: float | None = None,
        word_dropout: float = 0.0,
        lr_decay: float | None = None,
        fused_rnn: bool = True,
    ):
        super().__init__()
        _check_settings(
            arch, num_words, embedding_dim, hidden_size, num_layers, dropout, init, optimizer, lr,
            grad_clip, pooling, ema, word_dropout, lr_decay,
        )  # fmt: skip
        if lr is None:
            lr = DEFAULT_LR[optimizer]
        self.save_hyperparameters(ignore=["fused_rnn"])
        self.fused_rnn = fused_rnn
        self.embedding = nn.Embedding(num_words, embedding_dim)
        self.word_dropout = WordDropout(word_dropout, num_words)
        self.input_dropouts = nn.ModuleList(SequenceDropout(dropout) for _ in range(num_layers))
        directions = 2 if bidirectional else 1
        self.rnns = nn.ModuleList(
            ARCHS[arch](
                embedding_dim if i == 0 else directions * hidden_size,
                hidden_size,
                batch_first=True,
                bidirectional=bidirectional,
            )
            for i in range(num_layers)
        )
        pooled = 2 if pooling == "mean-max" else 1
        self.head = nn.Linear(pooled * directions * hidden_size, 1)
        self.loss_fn = nn.BCEWithLogitsLoss()
        # Epoch values, as Keras reports them: the loss averaged with batch sizes as weights,
        # and the accuracy over every review of the epoch.
        for stage in STAGES:
            setattr(self, f"{stage}_loss", MeanMetric())
            setattr(self, f"{stage}_acc", BinaryAccuracy(validate_args=False))
        self.test_probabilities: list[torch.Tensor] = []
        if init == "keras":
            keras_init_(self)
        self._tracks_row_squares = sparse_embedding_updates and optimizer == "rmsprop"

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the positive class, shape ``(batch,)``."""
        if self.hparams.packed:
            tokens, lengths = left_align(tokens)
            outputs, state = self._module_layers(tokens, lengths.cpu())
        elif self._runs_fused(tokens):
            outputs, state = self._fused_layers(tokens)
        else:
            outputs, state = self._module_layers(tokens)
        if self.hparams.pooling == "last":
            # The final hidden state of the top layer: without packing it is the last time
            # step's output, as Keras's return_sequences=False returns; each direction's own.
            final = state[0] if isinstance(state, tuple) else state  # (directions, batch, hidden)
            features = torch.cat(list(final), dim=-1)
        else:
            features = pool_over_tokens(outputs, tokens != PAD, self.hparams.pooling)
        return self.head(features).squeeze(-1)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)
        if self._tracks_row_squares and x.requires_grad:
            x.register_hook(partial(_add_row_squares, self.embedding.weight, tokens))
        return self.word_dropout(x, tokens)

    def _module_layers(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None):
        """``nn.LSTM``/``nn.GRU`` themselves: batch-first outputs and the last layer's state."""
        x = self._embed(tokens)
        for dropout, rnn in zip(self.input_dropouts, self.rnns, strict=True):
            x = dropout(x)
            if lengths is None:
                x, state = rnn(x)
            else:
                packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
                x, state = rnn(packed)
                x, _ = pad_packed_sequence(x, batch_first=True, total_length=tokens.shape[1])
        return x, state

    def _fused_layers(self, tokens: torch.Tensor):
        """The same through the fused kernel, in its layout (features, time, batch) from the
        embedding to the top: embedding the transposed tokens gives it as a view."""
        sequence = self._embed(tokens.t().contiguous()).permute(2, 0, 1)
        for dropout, rnn in zip(self.input_dropouts, self.rnns, strict=True):
            sequence, state = run_fused_feature_major(rnn, dropout(sequence, feature_major=True))
        return sequence.permute(2, 1, 0), state

    def _runs_fused(self, tokens: torch.Tensor) -> bool:
        weight = self.embedding.weight
        return (
            self.fused_rnn
            and tokens.dim() == 2
            and tokens.shape[1] > 0
            and all(fused_supports(rnn, weight.device, weight.dtype) for rnn in self.rnns)
            and kernel_available()
        )

    def _shared_step(self, batch, batch_idx: int, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, labels = batch
        logits = self(tokens)
        loss = self.loss_fn(logits, labels)
        epoch_loss, epoch_acc = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_acc")
        epoch_loss.update(loss.detach(), weight=len(labels))
        # Probabilities, not logits: torchmetrics takes a batch whose values all lie in [0, 1]
        # for probabilities, which small logits can be.
        epoch_acc.update(torch.sigmoid(logits.detach()), labels.long())
        # self.log costs about half a millisecond on the CPU (Lightning moves its bookkeeping
        # to the value's device at every call), a quarter of a training step of the lesson's
        # model. The metric objects accumulate every batch, so they are logged once, at the
        # epoch's last batch; Lightning computes and resets them at the epoch's end.
        if batch_idx == self._batches(stage) - 1:
            self.log(f"{stage}_loss", epoch_loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log(f"{stage}_acc", epoch_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss, logits

    def _batches(self, stage: str) -> int:
        if stage == "train":
            return self.trainer.num_training_batches
        counts = self.trainer.num_val_batches if stage == "val" else self.trainer.num_test_batches
        return counts[0]

    def _reset_epoch_metrics(self, stage: str) -> None:
        # Also drops what the sanity-check batches accumulated before training.
        getattr(self, f"{stage}_loss").reset()
        getattr(self, f"{stage}_acc").reset()

    def on_train_epoch_start(self) -> None:
        self._reset_epoch_metrics("train")

    def on_validation_epoch_start(self) -> None:
        self._reset_epoch_metrics("val")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, batch_idx, "train")[0]

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, batch_idx, "val")

    def on_test_epoch_start(self) -> None:
        self._reset_epoch_metrics("test")
        self.test_probabilities = []

    def test_step(self, batch, batch_idx: int) -> None:
        _, logits = self._shared_step(batch, batch_idx, "test")
        self.test_probabilities.append(torch.sigmoid(logits).detach().cpu())

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        tokens = batch[0] if isinstance(batch, (tuple, list)) else batch
        return torch.sigmoid(self(tokens))

    def configure_optimizers(self):
        optimizer = make_optimizer(self.hparams.optimizer, self.parameters(), self.hparams.lr)
        if self.hparams.lr_decay is None:
            return optimizer
        # threshold 0: any lower loss counts, as for EarlyStopping's min_delta.
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=self.hparams.lr_decay, patience=0, threshold=0.0
        )
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss"}}  # fmt: skip

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        # Part of the model's settings, so a resumed run clips as the original did.
        clip = self.hparams.grad_clip if gradient_clip_val is None else gradient_clip_val
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def configure_callbacks(self) -> list[L.Callback]:
        # A model setting rather than a Trainer one, so that a resumed run averages as the
        # original did; the callback saves and restores the average in checkpoints itself.
        if self.hparams.ema is None or self.trainer.state.fn != TrainerFn.FITTING:
            return []
        return [EMAWeightAveraging(decay=self.hparams.ema)]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Marks the file as this program's, so other checkpoints are told apart from corrupt ones.
        checkpoint["imdb_torch"] = {"version": __version__}

    def keras_parameter_count(self) -> int:
        hp = self.hparams
        return keras_parameter_count(
            hp.arch, hp.num_words, hp.embedding_dim, hp.hidden_size, hp.num_layers,
            hp.bidirectional,
        )  # fmt: skip


def _check_settings(
    arch, num_words, embedding_dim, hidden_size, num_layers, dropout, init, optimizer, lr,
    grad_clip, pooling, ema, word_dropout, lr_decay,
):  # fmt: skip
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    if pooling not in POOLINGS:
        raise UserError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
    if init not in INITS:
        raise UserError(f"unknown initialisation {init!r}; choose from {', '.join(INITS)}")
    if optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    for name, value in (
        ("num_words", num_words),
        ("embedding_dim", embedding_dim),
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
    ):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if not 0 <= dropout < 1:
        raise UserError(f"dropout must lie in [0, 1), got {dropout}")
    if not 0 <= word_dropout < 1:
        raise UserError(f"word dropout must lie in [0, 1), got {word_dropout}")
    if grad_clip is not None and grad_clip <= 0:
        raise UserError(f"the gradient clipping norm must be positive, got {grad_clip}")
    if lr is not None and lr <= 0:
        raise UserError(f"the learning rate must be positive, got {lr}")
    if lr_decay is not None and not 0 < lr_decay < 1:
        raise UserError(f"the learning-rate decay factor must lie in (0, 1), got {lr_decay}")
    if ema is not None and not 0 < ema < 1:
        raise UserError(f"the weight-averaging decay must lie in (0, 1), got {ema}")
