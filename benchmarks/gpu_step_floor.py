"""What a training epoch costs on a device with Lightning's loop taken away.

For each preset, the model and optimiser that ``train.py`` trains are run over the same
batches (``DeviceBatches``) in three ways, and the median epoch of ``--epochs`` is printed:

* ``lightning``: ``training.prepare``'s Trainer, as ``train.py`` runs it (from history.json);
* ``eager``: a plain loop, forward, backward, optimiser step, the epoch's metrics kept on the
  device, then the validation pass: what the step costs without Lightning's hooks;
* ``graphed``: the same loop with the whole training step captured once as a CUDA graph
  and replayed for every full batch (the last, smaller batch runs eagerly);
* ``no-network``: the Trainer of ``lightning`` with a network that computes nothing (one
  weight as every logit): the floor that Lightning's loop, the loss, the metrics and the
  optimiser's step set under any network.

    python benchmarks/gpu_step_floor.py --data aclImdb_v1.tar.gz --device cuda
    python benchmarks/gpu_step_floor.py --data aclImdb_v1.tar.gz --presets gru --epochs 2 \
        --profile-trainer    # where a step inside the Trainer spends the host's time
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import torch  # noqa: E402

import imdb_torch.cli  # noqa: E402, F401  (TensorBoard without TensorFlow, as the programs)
from imdb_torch.config import resolve  # noqa: E402
from imdb_torch.data.batches import DeviceBatches  # noqa: E402
from imdb_torch.data.datamodule import IMDBDataModule  # noqa: E402
from imdb_torch.training.module import SentimentClassifier  # noqa: E402
from imdb_torch.training.trainer import Hardware, prepare  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NoNetwork(torch.nn.Module):
    """A network that computes nothing: one weight, every review's logit."""

    def __init__(self):
        super().__init__()
        self.logit = torch.nn.Parameter(torch.zeros(()))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.logit.expand(tokens.shape[0])


def lightning_epochs(settings, device, epochs: int, no_network: bool = False) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        run = prepare(settings, logdir=Path(tmp), name="floor", version=0, progress=False,
                      hardware=Hardware(accelerator=device.type, devices=1))  # fmt: skip
        if no_network:  # what is left is Lightning's loop, the loss, metrics and optimiser
            run.model.net, run.model.cuda_graphs = NoNetwork(), False
        run.fit()
    return [row["seconds"] for row in run.history.epochs]


def loop_epochs(settings, datamodule, device, epochs: int, graphed: bool) -> list[float]:
    module = SentimentClassifier(settings.model, settings.optim).to(device)
    optimizer = module.configure_optimizers()
    if isinstance(optimizer, dict):
        optimizer = optimizer["optimizer"]
    train = DeviceBatches(datamodule.train_set.tokens, datamodule.train_set.labels,
                          settings.data.batch_size, True, device)  # fmt: skip
    val = DeviceBatches(datamodule.val_set.tokens, datamodule.val_set.labels,
                        settings.data.eval_batch_size, False, device)  # fmt: skip
    totals = torch.zeros(4, device=device)  # loss sum, hits, reviews; val alike in eval

    def step(tokens, labels):
        logits = module.net(tokens)
        loss = module.loss_fn(logits, labels)
        loss.backward()
        module.configure_gradient_clipping(optimizer)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        totals[0] += loss.detach() * len(labels)
        totals[1] += ((logits.detach() > 0) == labels.bool()).sum()
        totals[2] += len(labels)

    graph = None
    if graphed:
        tokens, labels = next(iter(train))
        static_tokens, static_labels = tokens.clone(), labels.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step(static_tokens, static_labels)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step(static_tokens, static_labels)

    seconds = []
    for _ in range(epochs):
        sync(device)
        started = time.perf_counter()
        module.train()
        totals.zero_()
        for tokens, labels in train:
            if graph is not None and len(labels) == len(static_labels):
                static_tokens.copy_(tokens)
                static_labels.copy_(labels)
                graph.replay()
            else:
                step(tokens, labels)
        module.eval()
        with torch.no_grad():
            val_loss = torch.zeros((), device=device)
            for tokens, labels in val:
                logits = module.net(tokens)
                val_loss += module.loss_fn(logits, labels) * len(labels)
        figures = (totals[0] / totals[2]).item(), (val_loss / len(val.labels)).item()
        sync(device)
        seconds.append(time.perf_counter() - started)
    print(f"    last epoch: train loss {figures[0]:.4f}, val loss {figures[1]:.4f}")
    return seconds


def profile_steps(settings, datamodule, device, steps: int = 50) -> None:
    module = SentimentClassifier(settings.model, settings.optim).to(device)
    optimizer = module.configure_optimizers()
    batches = iter(DeviceBatches(datamodule.train_set.tokens, datamodule.train_set.labels,
                                 settings.data.batch_size, True, device))  # fmt: skip
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    for i in range(steps + 5):
        if i == 5:
            sync(device)
            profiler = torch.profiler.profile(activities=activities)
            profiler.__enter__()
        tokens, labels = next(batches)
        loss = module.loss_fn(module.net(tokens), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    sync(device)
    profiler.__exit__(None, None, None)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(profiler.key_averages().table(sort_by=sort, row_limit=18, max_name_column_width=50))


def profile_trainer(settings, device, steps: int = 50) -> None:
    """A profile of ``steps`` training steps inside ``train.py``'s Trainer, in the second
    epoch (after any CUDA graphs were recorded; ``--epochs`` at least 2): where the host's
    time goes around the network, and how many calls into the CUDA runtime (launches, waits)
    each step makes."""
    import lightning as L

    if settings.run.max_epochs < 2:
        print("--profile-trainer profiles the second epoch: give --epochs 2 or more")
        return

    class Window(L.Callback):
        def __init__(self):
            self.profiler, self.first = None, 100

        def on_train_start(self, trainer, module):
            # Steps 100 to 149 of the epoch, or its last 50 if it has fewer batches.
            self.first = max(0, min(self.first, trainer.num_training_batches - steps))
            self.last = min(self.first + steps, trainer.num_training_batches) - 1

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == self.first:
                sync(device)
                activities = [torch.profiler.ProfilerActivity.CPU]
                if device.type == "cuda":
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                self.profiler = torch.profiler.profile(activities=activities)
                self.profiler.__enter__()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.profiler is not None and batch_idx == self.last:
                sync(device)
                self.profiler.__exit__(None, None, None)
                report(self.profiler.key_averages(), self.last - self.first + 1)
                self.profiler = None

    def report(events, steps: int) -> None:
        sort = "self_cpu_time_total"
        print(events.table(sort_by=sort, row_limit=25, max_name_column_width=50))
        runtime = sorted((e for e in events if e.key.startswith("cuda")), key=lambda e: -e.count)
        if runtime:
            print("calls into the CUDA runtime per step: " + ", ".join(
                f"{e.key} {e.count / steps:.1f}" for e in runtime))  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        run = prepare(settings, logdir=Path(tmp), name="profile", version=0, progress=False,
                      hardware=Hardware(accelerator=device.type, devices=1))  # fmt: skip
        run.trainer.callbacks.append(Window())
        run.fit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="as train.py's --data")
    parser.add_argument("--presets", nargs="+", default=["lstm", "lstm-2layer", "gru"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--profile", action="store_true", help="a profiler table per preset")
    parser.add_argument(
        "--profile-trainer",
        action="store_true",
        help="a profiler table of 50 steps inside train.py's Trainer per preset",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        print(torch.cuda.get_device_name(device), "torch", torch.__version__)
    for preset in args.presets:
        settings = resolve(preset, {"data": args.data, "max_epochs": args.epochs,
                                    "patience": args.epochs + 1})  # fmt: skip
        datamodule = IMDBDataModule.from_settings(settings)
        datamodule.prepare_data()
        datamodule.setup("fit")
        ways = {
            "lightning": partial(lightning_epochs, settings, device, args.epochs),
            "eager": partial(loop_epochs, settings, datamodule, device, args.epochs, False),
            "no-network": partial(lightning_epochs, settings, device, args.epochs, True),
        }
        if device.type == "cuda":
            ways["graphed"] = partial(loop_epochs, settings, datamodule, device, args.epochs, True)
        for way, epochs in ways.items():
            try:
                seconds = epochs()
                print(
                    f"{preset:13s} {way:10s} median epoch {statistics.median(seconds[1:]):.3f} s"
                    f"  ({', '.join(f'{s:.3f}' for s in seconds)})",
                    flush=True,
                )
            except Exception:  # noqa: BLE001  (a way that fails is reported, the rest still run)
                print(f"{preset:13s} {way:10s} failed:\n{traceback.format_exc(limit=6)}")
        if args.profile:
            try:
                profile_steps(settings, datamodule, device)
            except Exception:  # noqa: BLE001
                print(f"profile failed:\n{traceback.format_exc(limit=6)}")
        if args.profile_trainer:
            try:
                profile_trainer(settings, device)
            except Exception:  # noqa: BLE001
                print(f"profile failed:\n{traceback.format_exc(limit=6)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
