"""``SentimentClassifier``: the LightningModule that trains a ``SentimentNet`` as Keras would.

Keras's ``model.compile(optimizer=RMSprop(1e-4), loss='binary_crossentropy',
metrics=['accuracy'])`` is this class: the loss, the accuracy, the optimiser. ``model.fit``
is Lightning's ``Trainer`` (``training/trainer.py``).

Beyond the lesson, ``--ngrams`` sets NBSVM's linear model (``model/ngrams.py``) beside the
network: each learns from its own loss, and the classifier answers with their logits' mean.
At the end of the class, for speed only: on one GPU, CUDA graphs of the network's training pass.
"""

from __future__ import annotations

from dataclasses import asdict

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torchmetrics import MeanMetric

from .. import __version__
from ..config import ModelConfig, OptimConfig
from ..model.cuda_graphs import GraphedTraining
from ..model.fused_rnn import use_fused_kernel
from ..model.keras_compat import (
    EmbeddingOccurrences,
    KerasRMSprop,
    keras_init_,
    keras_parameter_count,
)
from ..model.network import SentimentNet
from ..model.ngrams import NgramBag

CHECKPOINT_MARK = "imdb_torch"  # marks a checkpoint as this program's (training/checkpoint.py)


class SentimentClassifier(L.LightningModule):
    """Trains ``SentimentNet(model)`` (and, with ``--ngrams``, an ``NgramBag`` beside it) with
    binary cross-entropy and ``optim``'s optimiser.

    Args:
        model: a ``ModelConfig``, the layer sizes Keras's ``Sequential`` is built with (not
            a model: the network is built here, as ``self.net``).
        optim: an ``OptimConfig``, what ``model.compile`` is given. Both may also be their
            ``asdict`` form, as saved in checkpoints and ``hparams.yaml``.
        fused_rnn: swap the recurrent layers for their fused twins, whose CPU forward and
            backward run the fused kernel (``model/fused_rnn.py``: same results to 1e-5,
            several times faster; on a GPU the layers' own code). Not a setting of the model:
            it is not saved, and a trained model may run either way.
        cuda_graphs: on one GPU, record the network's training forward and backward once as
            CUDA graphs and re-run each with one launch (``model/cuda_graphs.py``: the same
            computation). Not a setting of the model either.
    """

    def __init__(
        self,
        model: ModelConfig | dict | None = None,
        optim: OptimConfig | dict | None = None,
        fused_rnn: bool = True,
        cuda_graphs: bool = True,
    ):
        super().__init__()
        model = ModelConfig(**(model or {})) if not isinstance(model, ModelConfig) else model
        optim = OptimConfig(**(optim or {})) if not isinstance(optim, OptimConfig) else optim
        model.check()
        optim.check()
        self.save_hyperparameters({"model": asdict(model), "optim": asdict(optim)})
        self.model_config, self.optim_config = model, optim

        self.net = SentimentNet(model)
        self.ngrams = NgramBag(model.ngrams, model.ngram_buckets) if model.ngrams else None
        if optim.init == "keras":
            keras_init_(self.net)
        if fused_rnn:
            use_fused_kernel(self.net)
        self.cuda_graphs = cuda_graphs
        self.graphed_training: GraphedTraining | None = None  # made when training starts
        # Keras 3's embedding update, handed to the optimiser (see keras_compat.py).
        self.occurrences = (
            EmbeddingOccurrences(self.net.embedding)
            if optim.per_occurrence_embedding_updates
            else None
        )
        # loss='binary_crossentropy': on the logit, the sigmoid inside, computed more stably.
        self.loss_fn = nn.BCEWithLogitsLoss()
        # metrics=['accuracy'], and the loss Keras prints beside it, as Keras reports them:
        # the loss averaged with batch sizes as weights, and the accuracy over every review
        # of the epoch, which is how Keras defines it: the mean of per-review hits (a
        # MeanMetricWrapper).
        self.train_loss, self.train_acc = _epoch_mean(), _epoch_mean()
        self.val_loss, self.val_acc = _epoch_mean(), _epoch_mean()
        self.test_loss, self.test_acc = _epoch_mean(), _epoch_mean()
        self.test_probabilities: list[torch.Tensor] = []

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of "positive": the network's, or its mean with the n-gram model's."""
        logits = self.net(tokens)
        if self.ngrams is not None:
            logits = answer(logits, self.ngrams(tokens))
        return logits

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step("train", self.train_loss, self.train_acc, batch, batch_idx)[0]

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step("val", self.val_loss, self.val_acc, batch, batch_idx)

    def test_step(self, batch, batch_idx: int) -> None:
        _, logits = self._step("test", self.test_loss, self.test_acc, batch, batch_idx)
        self.test_probabilities.append(torch.sigmoid(logits).detach().cpu())

    def _step(self, stage, epoch_loss, epoch_acc, batch, batch_idx):
        tokens, labels = batch
        net = self.net
        if stage == "train" and self.graphed_training is not None:
            net = self.graphed_training  # speed only, on one GPU: "CUDA graphs", below
        logits = net(tokens)
        # objective: what backward minimises; loss: what is reported. The same, but for --ngrams.
        loss = objective = self.loss_fn(logits, labels)
        if self.ngrams is not None:
            # Each model learns from its own loss. Under one loss, the n-gram model, which
            # learns the training reviews by heart within an epoch, would leave the network
            # nothing to learn from. Reported: the loss of the answer, their mean.
            ngram_logits = self.ngrams(tokens)
            objective = objective + self.loss_fn(ngram_logits, labels)
            logits = answer(logits, ngram_logits)
            loss = self.loss_fn(logits, labels)
        # The batch's loss once per review: the epoch's mean weighs batches by their size.
        # (Not update(loss, weight): MeanMetric drops weights under nan_strategy="disable",
        # torchmetrics issue #3434.)
        epoch_loss.update(loss.detach().expand(len(labels)))
        # A hit: called positive (is_positive) exactly when the review is positive. Not
        # torchmetrics' BinaryAccuracy: it costs three times as much (docs/performance.md), and
        # by default checks its inputs on the host at every step.
        hits = is_positive(torch.sigmoid(logits.detach())) == labels.bool()
        epoch_acc.update(hits.float())
        # Logged once, at the epoch's last batch (self.log at every step would cost a quarter
        # of a step: docs/performance.md); Lightning computes and resets the metrics at the
        # epoch's end. Not to a logger: TensorBoard gets the epoch's figures at the epoch's
        # number from training/tensorboard.py, and the test figures are read from the
        # Trainer's callback_metrics (training/trainer.py's evaluate).
        if batch_idx == self._batches(stage) - 1:
            for name, metric in ((f"{stage}_loss", epoch_loss), (f"{stage}_acc", epoch_acc)):
                self.log(name, metric, on_step=False, on_epoch=True, prog_bar=True, logger=False)
        return objective, logits

    def _batches(self, stage: str) -> int:
        if stage == "train":
            return self.trainer.num_training_batches
        counts = self.trainer.num_val_batches if stage == "val" else self.trainer.num_test_batches
        return counts[0]

    # Lightning resets a logged metric after each epoch. The sanity check's two validation
    # batches, before training, are never logged (not the last batch): dropped here.
    def on_validation_epoch_start(self) -> None:
        self.val_loss.reset()
        self.val_acc.reset()

    def on_test_epoch_start(self) -> None:
        self.test_probabilities = []

    def setup(self, stage: str) -> None:
        # NBSVM's ratios come from the training reviews, before the first step; without them
        # the n-gram model would learn nothing. (A resumed run counts the same ratios, and
        # Lightning then loads them from its checkpoint.)
        if stage == "fit" and self.ngrams is not None:
            if self.trainer.datamodule is None:
                raise ValueError("--ngrams counts its ratios on the data module's training set")
            reviews = self.trainer.datamodule.train_set
            self.ngrams.count_ratios(reviews.tokens, reviews.labels)

    def configure_optimizers(self):
        optim = self.optim_config
        if optim.optimizer == "rmsprop":  # optimizer=RMSprop(learning_rate=1e-4), the lesson's
            optimizer = KerasRMSprop(
                self._parameter_groups(), lr=optim.learning_rate, occurrences=self.occurrences
            )
        else:  # Keras's Adam epsilon, so switching frameworks changes only the framework.
            # Fused on the CPU: one pass over the weights rather than several, a third of the
            # time for the n-gram model's millions. Not on a GPU: under 16-bit mixed precision
            # Lightning leaves a fused optimiser's gradients scaled, and the clipping below
            # would clip them so.
            fused = self.device.type == "cpu"
            optimizer = torch.optim.Adam(
                self._parameter_groups(), lr=optim.learning_rate, eps=1e-7, fused=fused
            )
        if optim.lr_decay is None:
            return optimizer
        # threshold 0: any lower loss counts, as for EarlyStopping's min_delta.
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=optim.lr_decay, patience=0, threshold=0.0
        )
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss"}}  # fmt: skip

    # --lr-decay's plateau rule judges each epoch by its validation loss as soon as that is
    # known, so that the epoch's checkpoints hold the rule's state after it. Lightning would
    # step it after writing them: a run resumed from one would never judge that epoch, and
    # would go on one judgement behind the uninterrupted run.
    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self.trainer.state.fn != TrainerFn.FITTING:
            return
        for config in self.trainer.lr_scheduler_configs:
            if config.reduce_on_plateau:
                config.scheduler.step(self.val_loss.compute())

    def lr_scheduler_step(self, scheduler, metric) -> None:
        if metric is None:  # a rule of its own time (none is made here): Lightning's way
            super().lr_scheduler_step(scheduler, metric)
        # a plateau rule was stepped in on_validation_epoch_end, above

    def _parameter_groups(self) -> list[dict]:
        groups = [{"params": list(self.net.parameters())}]
        if self.ngrams is not None:  # a linear model over millions of weights: a higher rate
            groups.append({"params": list(self.ngrams.parameters()),
                           "lr": self.optim_config.ngram_lr})  # fmt: skip
        return groups

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        # A model setting rather than a Trainer one, so a resumed run clips as the original.
        clip = self.optim_config.grad_clip if gradient_clip_val is None else gradient_clip_val
        if not clip:
            return
        # The network's gradient only: the n-gram model's own loss must not scale it down.
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
        if self.occurrences is not None:
            # The per-occurrence gradients are scaled as the gradient was (the factor
            # clip_grad_norm_ applies), so their squares by its square. Kept a tensor: reading
            # it on the host would make every step wait for a GPU.
            self.occurrences.scale_((clip / (norm + 1e-6)).clamp(max=1.0) ** 2)

    def configure_callbacks(self) -> list[L.Callback]:
        # A model setting rather than a Trainer one, so that a resumed run averages as the
        # original did; the callback saves and restores the average in checkpoints itself.
        if self.optim_config.ema is None or self.trainer.state.fn != TrainerFn.FITTING:
            return []
        return [EMAWeightAveraging(decay=self.optim_config.ema)]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_MARK] = {"version": __version__}

    def keras_parameter_count(self) -> int:
        """What Keras's ``model.summary()`` would count for this model."""
        return keras_parameter_count(self.model_config)

    # Beyond the lesson, speed only: CUDA graphs. On a GPU, a step of a network this small is
    # mostly Python launching the GPU's small programs (kernels) one at a time: profiled on
    # an H200, a step took 3.2 ms of the host's time and 0.4 ms of the GPU's. A CUDA graph
    # records a pass's kernels once and re-runs them with one launch (model/cuda_graphs.py).
    def on_train_start(self) -> None:
        use = self.cuda_graphs and self._cuda_graphs_apply()
        self.graphed_training = (
            GraphedTraining(self.net, after_capture=self._forget_warm_up) if use else None
        )

    def _cuda_graphs_apply(self) -> bool:
        trainer, model, optim = self.trainer, self.model_config, self.optim_config
        return (
            self.device.type == "cuda"
            and trainer.world_size == 1  # not under DDP's gradient hooks
            # Mixed precision keeps converted weights between calls, which a recording
            # cannot hold.
            and trainer.precision == "32-true"
            # A replay writes the gradient into the tensor that is the weight's .grad: a
            # second micro-batch would overwrite the first's rather than add to it.
            and trainer.accumulate_grad_batches == 1
            and optim.ema is None  # not tried with EMA
            and not model.packed  # packing reads the lengths on the host
        )

    def _forget_warm_up(self) -> None:
        # Recording ran the forward and backward a few times on the first batch: the
        # embedding squares those passes added are dropped.
        if self.occurrences is not None:
            self.occurrences.take()

    def on_train_end(self) -> None:
        if self.graphed_training is not None:
            self.graphed_training.release()  # the graphs' memory goes back to the GPU
        self.graphed_training = None


def is_positive(probability):
    """Keras's binary_accuracy rule: a review is called positive when its probability is above
    0.5 (at exactly 0.5, negative). For a tensor, an array or a number alike; the accuracy,
    test.py's report and predict.py's labels all call reviews by it."""
    return probability > 0.5


def answer(network_logits: torch.Tensor, ngram_logits: torch.Tensor) -> torch.Tensor:
    """The classifier's logits with an n-gram model beside the network: the two models' mean,
    in training, validation and prediction alike."""
    return (network_logits + ngram_logits) / 2


def _epoch_mean() -> MeanMetric:
    # "disable": a NaN loss makes the epoch's mean NaN, as it should (StopOnNonFiniteLoss
    # reads it); the other strategies leave such batches out, and look for them at every step.
    return MeanMetric(nan_strategy="disable")
