"""Two processes on the CPU (Lightning's DDP over gloo) train as one process does on the same
global batches; one rank writes the run's files; a multi-process run resumes."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DistributedSampler

from imdb_torch.config import Settings
from imdb_torch.data.datamodule import IMDBDataModule
from imdb_torch.training.module import SentimentClassifier

from .conftest import validation_by_hand

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"num_words": 30, "maxlen": 20, "batch_size": 16, "lr": 0.01, "seed": 7}
FLAGS = ["--num-words", "30", "--maxlen", "20", "--batch-size", "16", "--lr", "0.01",
         "--seed", "7", "--patience", "9", "--preset", "lstm", "--no-progress",
         "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]  # fmt: skip


def train(tmp_path, data, *extra):
    env = {**os.environ, "IMDB_TORCH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--data", str(data), *FLAGS,
         "--logdir", str(tmp_path / "logs"), "--save", str(tmp_path / "best.ckpt"), *extra],
        capture_output=True, text=True, timeout=300, env=env,  # a hang fails here
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def one_process_on_the_same_global_batches(data, epochs: int) -> SentimentClassifier:
    """What DDP computes, by hand: rank r's batch j holds the global batch's r-th, (r+2)-th …
    reviews of DistributedSampler's order, so together a batch of 32 in that order."""
    settings = Settings.from_flat({**SETTINGS, "data": str(data)})
    L.seed_everything(7, verbose=False)
    model = SentimentClassifier(settings.model, settings.optim)
    datamodule = IMDBDataModule(str(data), num_words=30, maxlen=20, batch_size=16)
    datamodule.setup("fit")
    optimizer = model.configure_optimizers()
    sampler = DistributedSampler(datamodule.train_set, num_replicas=1, rank=0, seed=7)
    model.train()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        for rows in order.split(2 * 16):
            tokens, labels = datamodule.train_set.__getitems__(rows.tolist())
            loss = model.loss_fn(model(tokens), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def test_two_processes_train_as_one_and_write_the_run_once(tiny_tarball, tmp_path):
    train(tmp_path, tiny_tarball, "--max-epochs", "2")
    run_dir = tmp_path / "logs" / "lstm" / "version_0"
    assert sorted(p.name for p in (tmp_path / "logs" / "lstm").iterdir()) == ["version_0"]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert (run_dir / "loss.png").is_file() and (tmp_path / "best.ckpt").is_file()
    rows = json.loads((run_dir / "history.json").read_text())
    assert [row["epoch"] for row in rows] == [1, 2]

    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    reference = one_process_on_the_same_global_batches(tiny_tarball, epochs=2)
    moved = 0.0
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(last[name], value, rtol=0, atol=1e-5, msg=name)
    start = SentimentClassifier(Settings.from_flat(SETTINGS).model).state_dict()
    moved = max((reference.state_dict()[n] - v).abs().max().item() for n, v in start.items())
    assert moved > 1e-3  # the comparison is of trained weights, not of the initial ones

    # The validation figures are the whole validation set's, not one rank's half.
    datamodule = IMDBDataModule(str(tiny_tarball), num_words=30, maxlen=20, batch_size=16)
    datamodule.setup("fit")
    loss, accuracy, count = validation_by_hand(reference, datamodule)
    assert count == 16
    assert abs(rows[-1]["val_loss"] - loss) < 1e-5 and abs(rows[-1]["val_acc"] - accuracy) < 1e-6


def test_a_multi_process_run_resumes(tiny_tarball, tmp_path):
    train(tmp_path, tiny_tarball, "--max-epochs", "1")
    done = train(tmp_path, tiny_tarball, "--resume", "--max-epochs", "2")
    assert done.stdout.count("resuming") == 1  # said by the first process alone
    run_dir = tmp_path / "logs" / "lstm" / "version_0"
    rows = json.loads((run_dir / "history.json").read_text())
    assert [row["epoch"] for row in rows] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "logs" / "lstm").iterdir()) == ["version_0"]


@pytest.mark.parametrize("attempt", [1, 2])  # a race: each try may miss it
@pytest.mark.parametrize("to", ["the first process", "every process"])
def test_sigterm_stops_a_multi_process_run_as_ctrl_c_does(tiny_tarball, tmp_path, to, attempt):
    """SIGTERM, from `kill` (the first process alone) or a job scheduler (the whole process
    group), stops a multi-process run gracefully and leaves it resumable."""
    env = {**os.environ, "IMDB_TORCH_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--data", str(tiny_tarball),
         *FLAGS, "--max-epochs", "100000", "--patience", "100000",
         "--logdir", str(tmp_path / "logs"), "--save", str(tmp_path / "best.ckpt")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,  # a process group of its own, its second rank included
    )  # fmt: skip
    last = tmp_path / "logs" / "lstm" / "version_0" / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 180
        while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert last.is_file(), "no epoch finished"
        time.sleep(1)  # well inside training: two ranks exchanging gradients at every step
        if to == "the first process":
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=90)  # a hang fails here
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    assert process.returncode == 143, err[-3000:]
    assert "resume with" in err and "Traceback" not in err, err[-3000:]
    # With the hardware it ran on: else it would go on in one process, on other batches.
    (hint,) = [line for line in err.splitlines() if line.startswith("resume with: ")]
    assert hint.endswith("--accelerator cpu --devices 2 --strategy ddp"), hint


def _children(pid: int) -> list[int]:
    """The train.py processes ``pid`` started (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # Fields after the name, which is in parentheses and may hold spaces: state, ppid.
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid and b"train.py" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def test_the_other_processes_end_with_the_first_however_it_ends(tiny_tarball, tmp_path):
    """Killed outright (SIGKILL, or an interrupt that came while Lightning was starting the
    others), the first process cannot end the others; they would wait for it for ever in a
    collective, where no signal but SIGKILL reaches them. The kernel ends them with it."""
    env = {**os.environ, "IMDB_TORCH_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--data", str(tiny_tarball),
         *FLAGS, "--max-epochs", "100000", "--patience", "100000",
         "--logdir", str(tmp_path / "logs"), "--save", str(tmp_path / "best.ckpt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        # Killed as soon as it has started the second: that one is still starting, and would
        # next wait to meet the first.
        deadline, others = time.monotonic() + 180, []
        while not others and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            others = _children(process.pid)
        assert len(others) == 1, "no second process started"
        (other,) = others
        process.kill()
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(other) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(other), "the second process outlived the first"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"])
def test_only_a_runs_first_process_claims_its_directory(variable, tmp_path, monkeypatch):
    # Lightning's launcher, torchrun and SLURM's srun each name a process's rank in their own
    # variables: any rank but the first must leave the run's directory to the first.
    from imdb_torch.cli import train

    for name in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"):
        monkeypatch.setenv(name, "0")
    assert train._claim_version(tmp_path / "first") == 0
    monkeypatch.setenv(variable, "1")
    assert train._claim_version(tmp_path / "other") is None
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    ("started_by", "asked"),
    [("parent", signal.SIGKILL), (None, 0)],  # train.py's rank; torchrun's, srun's or a shell's
)
def test_only_a_rank_that_train_py_started_ends_with_its_parent(started_by, asked):
    probe = (
        "import ctypes, os\n"
        "from imdb_torch.cli.train import _end_with_the_process_that_started_this as ask\n"
        "ask()\n"
        "got = ctypes.c_int()\n"
        "ctypes.CDLL(None).prctl(2, ctypes.byref(got))  # PR_GET_PDEATHSIG\n"
        "print(got.value)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "IMDB_TORCH_STARTED_BY"}
    env["LOCAL_RANK"] = "1"
    if started_by == "parent":
        env["IMDB_TORCH_STARTED_BY"] = str(os.getpid())  # this process starts the probe
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) == asked


def test_a_run_resumed_in_another_number_of_processes_is_warned():
    from types import SimpleNamespace

    from imdb_torch.config import RunConfig
    from imdb_torch.training.callbacks import RunSettings

    callback = RunSettings(RunConfig())
    checkpoint = {}
    callback.on_save_checkpoint(SimpleNamespace(world_size=2), None, checkpoint)
    with pytest.warns(UserWarning, match="the run trained in 2 processes and goes on in 1"):
        callback.on_load_checkpoint(SimpleNamespace(world_size=1), None, checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as many as before: not a word
        callback.on_load_checkpoint(SimpleNamespace(world_size=2), None, checkpoint)


def test_the_ranks_variable_goes_with_the_run(monkeypatch, capsys):
    # Left behind, a torchrun started later from this process would hand it to its ranks,
    # which would take it for their parent's pid.
    from imdb_torch.cli import train as train_cli

    monkeypatch.delenv("IMDB_TORCH_STARTED_BY", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(SystemExit):  # refused by the parser: a run that starts and ends
        train_cli.main(["--max-epochs", "0"])
    assert "IMDB_TORCH_STARTED_BY" not in os.environ
