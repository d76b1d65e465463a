"""The train and test tools, run as a user runs them, on the tiny fixtures."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imdb_torch.cli import test as test_cli
from imdb_torch.cli import train as train_cli
from imdb_torch.cli.flags import given_settings
from imdb_torch.cli.parsers import build_train_parser, command_for
from imdb_torch.config import resolve
from imdb_torch.training.checkpoint import model_from_checkpoint, read_checkpoint, vocabulary

from .conftest import TINY_RUN_FLAGS

ROOT = Path(__file__).resolve().parents[1]


def train(tmp_path, data, *extra, save="best.ckpt"):
    argv = [
        *TINY_RUN_FLAGS,
        "--data",
        str(data),
        "--lr",
        "0.01",
        "--no-progress",
        "--logdir",
        str(tmp_path / "logs"),
        "--save",
        str(tmp_path / save),
        *extra,
    ]
    return train_cli.main(argv)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_tarball):
    tmp_path = tmp_path_factory.mktemp("trained")
    os.environ["IMDB_TORCH_CACHE"] = str(tmp_path / "cache")
    assert train(tmp_path, tiny_tarball, "--arch", "gru", "--seed", "1") == 0
    return tmp_path


def test_training_writes_checkpoint_logs_history_and_plot(trained):
    run_dir = trained / "logs" / "gru" / "version_0"
    assert (trained / "best.ckpt").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all({"train_loss", "val_loss", "val_acc", "train_acc"} <= set(row) for row in history)


def test_best_checkpoint_is_the_lowest_validation_loss(trained):
    history = json.loads((trained / "logs/gru/version_0/history.json").read_text())
    best = min(history, key=lambda row: row["val_loss"])
    checkpoint = read_checkpoint(trained / "best.ckpt")
    assert checkpoint["epoch"] == best["epoch"] - 1


def test_hparams_yaml_holds_the_runs_settings_beside_the_models_and_the_datas(trained):
    import yaml

    hparams = yaml.safe_load((trained / "logs" / "gru" / "version_0" / "hparams.yaml").read_text())
    assert hparams["model"]["arch"] == "gru" and hparams["maxlen"] == 20
    assert hparams["run"] == {"seed": 1, "max_epochs": 3, "patience": 3}


def test_checkpoint_round_trip_keeps_weights_settings_and_vocabulary(trained, tiny_tarball):
    checkpoint = read_checkpoint(trained / "best.ckpt")
    model = model_from_checkpoint(checkpoint)
    assert model.model_config.arch == "gru" and model.model_config.num_words == 30
    assert model.hparams["model"]["arch"] == "gru"  # hparams.yaml's form
    for name, tensor in checkpoint["state_dict"].items():
        assert torch.equal(model.state_dict()[name], tensor)
    words = vocabulary(checkpoint)
    assert len(words) == 24  # the fixture's whole vocabulary fits in 30
    assert words[:2] == ["movie", "plot"]  # most frequent in the fixture's training reviews
    assert checkpoint["datamodule_hyper_parameters"]["maxlen"] == 20
    assert checkpoint["datamodule_hyper_parameters"]["data"] == str(tiny_tarball)


def test_test_tool_reports_accuracy_and_confusion_matrix(trained, capsys):
    assert test_cli.main(["--ckpt", str(trained / "best.ckpt")]) == 0
    out = capsys.readouterr().out
    assert "test reviews: 80" in out
    accuracy = float(out.split("test_acc:")[1].split()[0])
    assert accuracy > 0.8  # the fixture's cue words make the task easy
    assert "confusion matrix" in out and "precision" in out


def test_test_py_names_the_result_file_it_could_not_write(trained, capsys):
    test_json = trained / "logs" / "gru" / "version_0" / "test.json"
    kept = test_json.read_bytes() if test_json.is_file() else None
    test_json.unlink(missing_ok=True)
    test_json.mkdir()  # in the way: a directory where the result goes
    try:
        assert test_cli.main(["--ckpt", str(trained / "best.ckpt")]) == 0
        err = capsys.readouterr().err.strip()
        assert (
            err == f"(the result is not recorded in the run directory: Is a directory: {test_json})"
        )
    finally:
        test_json.rmdir()
        if kept is not None:
            test_json.write_bytes(kept)


def test_test_py_takes_no_progress_as_train_py_does(trained, capsys):
    assert test_cli.main(["--ckpt", str(trained / "best.ckpt"), "--no-progress"]) == 0
    assert "test_acc:" in capsys.readouterr().out


def test_plain_rnn_flag_gives_the_same_evaluation_and_trains(
    trained, tmp_path, capsys, tiny_tarball
):
    """--plain-rnn runs nn.GRU's own code: the same test figures as the fused kernel."""
    outputs = []
    for extra in ([], ["--plain-rnn"]):
        assert test_cli.main(["--ckpt", str(trained / "best.ckpt"), *extra]) == 0
        outputs.append(capsys.readouterr().out)
    fused, plain = (float(out.split("test_loss:")[1].split()[0]) for out in outputs)
    assert fused == pytest.approx(plain, abs=1e-4)
    assert outputs[0].split("test_acc:")[1] == outputs[1].split("test_acc:")[1]
    assert train(tmp_path, tiny_tarball, "--arch", "gru", "--max-epochs", "1", "--plain-rnn") == 0


def test_test_tool_refuses_data_with_another_vocabulary(trained, tmp_path, capsys):
    from .conftest import make_reviews, write_tarball

    other = write_tarball(make_reviews(seed=5, per_folder=10), tmp_path / "other.tar.gz")
    assert test_cli.main(["--ckpt", str(trained / "best.ckpt"), "--data", str(other)]) == 2
    assert "vocabulary differs" in capsys.readouterr().err


def one_line_error(capsys, code, *phrases):
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for phrase in phrases:
        assert phrase in err, err
    return err


def test_missing_checkpoint(capsys, tmp_path):
    one_line_error(capsys, test_cli.main(["--ckpt", str(tmp_path / "nope.ckpt")]), "does not exist")


def test_garbage_checkpoint(capsys, tmp_path):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(os.urandom(2048))
    one_line_error(capsys, test_cli.main(["--ckpt", str(path)]), "not a readable checkpoint")


def test_truncated_checkpoint(capsys, trained, tmp_path):
    data = (trained / "best.ckpt").read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[: len(data) // 2])
    one_line_error(capsys, test_cli.main(["--ckpt", str(path)]), "not a readable checkpoint")


def test_checkpoint_from_another_program(capsys, tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, path)
    one_line_error(capsys, test_cli.main(["--ckpt", str(path)]), "not an imdb-torch checkpoint")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused(capsys, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"imdb_torch": {}, "state_dict": {}, "hyper_parameters": _Exploit(marker)}, path)
    one_line_error(capsys, test_cli.main(["--ckpt", str(path)]), "refusing to load")
    assert not marker.exists()


def test_unknown_arch(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["--arch", "transformer"])
    one_line_error(capsys, exit_info.value.code, "invalid choice", "transformer")


def test_missing_data_file(capsys, tmp_path):
    code = train_cli.main(
        ["--data", str(tmp_path / "nothing.tar.gz"), "--save", str(tmp_path / "b.ckpt")]
    )
    one_line_error(capsys, code, "does not exist", "--data")
    assert not (tmp_path / "b.ckpt").exists()


def test_corrupt_data_file_leaves_previous_checkpoint(capsys, tmp_path, tiny_tarball, trained):
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(tiny_tarball.read_bytes()[:3000])
    previous = tmp_path / "best.ckpt"
    shutil.copyfile(trained / "best.ckpt", previous)  # an earlier run's, which --save replaces
    kept = previous.read_bytes()
    capsys.readouterr()
    code = train(tmp_path, corrupt)
    one_line_error(capsys, code, "truncated")
    assert previous.read_bytes() == kept


def test_empty_directory_as_data(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code = train_cli.main(["--data", str(tmp_path / "empty")])
    one_line_error(capsys, code, "not an aclImdb directory")


def test_save_into_missing_directory(capsys, tmp_path, tiny_tarball):
    code = train(tmp_path, tiny_tarball, save="no/such/dir/best.ckpt")
    one_line_error(capsys, code, "does not exist")


@pytest.mark.parametrize("flag", ["--batch-size", "--maxlen", "--num-words"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_sizes(capsys, flag, value):
    # A setting out of range is a usage error, found as the flags are parsed.
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main([flag, value])
    one_line_error(capsys, exit_info.value.code, f"{flag} must be a whole number from")


@pytest.mark.parametrize("script", ["train.py", "test.py"])
def test_scripts_explain_themselves(script):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "usage:" in result.stdout
    assert "--data" in result.stdout
    if script == "train.py":
        assert "--preset" in result.stdout and "lstm-2layer" in result.stdout
    else:
        assert "--ckpt" in result.stdout


@pytest.mark.parametrize("value", ["1.0", "1.5", "-0.1"])
def test_dropout_outside_its_range(capsys, tmp_path, tiny_tarball, value):
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, tiny_tarball, "--dropout", value)
    one_line_error(capsys, exit_info.value.code, "dropout must lie in [0, 1)")
    assert not (tmp_path / "logs").exists()  # nothing made


def test_unreadable_data_path(capsys, tmp_path, tiny_tarball, monkeypatch):
    # Tests run as root, for whom chmod 000 does not stop reading: ask os.access instead.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    code = train_cli.main(["--data", str(tiny_tarball), "--save", str(tmp_path / "b.ckpt")])
    one_line_error(capsys, code, "not readable")


def test_npz_with_wrong_arrays_via_cli(capsys, tmp_path):
    import numpy as np

    path = tmp_path / "mnist.npz"
    np.savez(path, x=np.zeros((3, 28, 28)), y=np.zeros(3))
    code = train_cli.main(["--data", str(path), "--save", str(tmp_path / "b.ckpt")])
    one_line_error(capsys, code, "not Keras's imdb.npz")


def test_test_tool_refuses_a_non_checkpoint_zip(capsys, tmp_path):
    import zipfile

    path = tmp_path / "archive.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a checkpoint")
    one_line_error(capsys, test_cli.main(["--ckpt", str(path)]), "not a readable checkpoint")


def test_lightning_tips_are_left_out(caplog):
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    from imdb_torch.cli.common import quiet_lightning

    quiet_lightning()
    with caplog.at_level("INFO"):
        rank_zero_info("GPU available: True (cuda), used: False")  # worth saying
        rank_zero_info("GPU available: False, used: False")  # not
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing a package")
        rank_zero_info("You are using a CUDA device ('NVIDIA H200') that has Tensor Cores. ...")
    assert "GPU available: True" in caplog.text
    assert "GPU available: False" not in caplog.text and "Tip" not in caplog.text
    assert "Tensor Cores" not in caplog.text


def settings_of(*argv: str):
    args = build_train_parser().parse_args(argv)
    return resolve(args.preset, given_settings(args)).flat()


def test_strong_preset_sets_its_epoch_limit_and_flags_override_it():
    lesson = settings_of()
    assert (lesson["max_epochs"], lesson["patience"]) == (100, 3)
    strong = settings_of("--preset", "strong")
    assert (strong["max_epochs"], strong["word_dropout"], strong["lr_decay"]) == (7, 0.3, 0.5)
    assert strong["patience"] == 3
    given = settings_of("--preset", "strong", "--max-epochs", "9", "--word-dropout", "0",
                        "--patience", "5")  # fmt: skip
    assert (given["max_epochs"], given["word_dropout"], given["patience"]) == (9, 0, 5)


def test_only_the_flags_given_are_settings_given():
    parser = build_train_parser()
    assert given_settings(parser.parse_args([])) == {}
    args = parser.parse_args(["--no-bidirectional", "--lr", "0.5", "--preset", "gru"])
    assert given_settings(args) == {"bidirectional": False, "lr": 0.5}
    assert settings_of("--preset", "strong", "--no-bidirectional")["bidirectional"] is False


@pytest.mark.parametrize("tool", ["train", "test", "predict", "compare", "reproduce"])
@pytest.mark.parametrize(("flags", "status"), [(["--help"], 0), (["--no-such-flag"], 2)])
def test_help_and_usage_errors_answer_before_pytorch_is_imported(tool, flags, status):
    # Importing PyTorch and Lightning takes seconds; argparse's answers need neither.
    result = _launch_in_a_fresh_process(tool, flags)
    assert result.stdout.strip().splitlines()[-1] == f"exit {status} []"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dropout", "1.5"], "--dropout must lie in [0, 1), got 1.5"),
        (["--preset", "strong", "--lr", "0"], "--lr must be positive, got 0.0"),
    ],
)
def test_a_new_runs_setting_out_of_range_answers_before_pytorch_is_imported(flags, message):
    result = _launch_in_a_fresh_process("train", flags)
    assert result.stdout.strip().splitlines()[-1] == "exit 2 []"
    assert result.stderr.strip() == f"train.py: error: {message} (see --help)"
    # On --resume the checkpoint holds the settings: train.py checks them against it later.
    assert build_train_parser().parse_args(["--resume", *flags]).resume == "latest"


def _launch_in_a_fresh_process(tool: str, flags: list[str]) -> subprocess.CompletedProcess:
    """``launch(tool, flags)`` in a new interpreter, which prints how it exited and which of
    PyTorch and Lightning it had imported by then: ``exit 2 []``."""
    program = (
        "import sys\n"
        "from imdb_torch.cli import launch\n"
        "try:\n"
        f"    launch({tool!r}, {flags!r})\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code, sorted({'torch', 'lightning'} & set(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60
    )


def test_every_installed_command_is_its_script(monkeypatch, capsys):
    # pyproject.toml's [project.scripts]: imdb-torch-X answers as scripts/X.py does, under
    # its own name.
    import importlib

    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]\n")[1]
    lines = section.split("\n[")[0].splitlines()  # until the next table
    scripts = dict(
        (part.strip().strip('"') for part in line.split("=")) for line in lines if "=" in line
    )
    assert {name.removeprefix("imdb-torch-") for name in scripts} == {
        path.stem for path in (ROOT / "scripts").glob("*.py")
    }
    for name, target in scripts.items():
        module, function = target.split(":")
        monkeypatch.setattr(sys, "argv", [name, "--help"])
        with pytest.raises(SystemExit) as stopped:
            getattr(importlib.import_module(module), function)()
        assert stopped.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: {name} ")
        monkeypatch.setattr(sys, "argv", [name, "--no-such-flag"])
        with pytest.raises(SystemExit) as stopped:
            getattr(importlib.import_module(module), function)()
        assert stopped.value.code == 2
        assert capsys.readouterr().err.startswith(f"{name}: error: ")


def test_a_script_answers_under_its_file_name(monkeypatch, tmp_path):
    # Messages name a tool the way the running one was started: itself, or test.py beside it.
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["scripts/train.py"])
    assert build_train_parser().prog == "train.py"
    assert command_for("train") == "python scripts/train.py"
    assert command_for("test") == "python scripts/test.py"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(ROOT / "scripts" / "train.py")])
    assert command_for("test") == f"python {ROOT / 'scripts' / 'test.py'}"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/imdb-torch-train"])
    assert command_for("train") == "imdb-torch-train"
    assert command_for("test") == "imdb-torch-test"
    # python -m imdb_torch.cli.train: the module's own file, which runs only as a module.
    monkeypatch.setattr(sys, "argv", [str(ROOT / "src" / "imdb_torch" / "cli" / "train.py")])
    assert command_for("train") == "python -m imdb_torch.cli.train"
    assert command_for("test") == "python -m imdb_torch.cli.test"


def test_the_sigterm_callback_puts_back_the_handler_that_was_there_before_lightnings():
    import signal

    from imdb_torch.cli.common import SigtermAsCtrlC

    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a SIGTERM the caller chose to ignore
        callback = SigtermAsCtrlC()
        callback.setup(None, None, "fit")
        signal.signal(signal.SIGTERM, lambda signum, frame: None)  # as Lightning installs its
        callback.on_train_start(None, None)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_vocabulary_larger_than_the_reviews_words_is_warned_of(tiny_tarball):
    import warnings

    from imdb_torch.cli.train import _prepared_data

    from .conftest import tiny_settings

    with pytest.warns(UserWarning, match="--num-words 2000: the training reviews hold") as said:
        datamodule = _prepared_data(tiny_settings(tiny_tarball, num_words=2000))
    covering = len(datamodule.words) + 4  # indices 0-3 are reserved; the words' start at 4
    assert f"(--num-words {covering} covers every word)" in str(said[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning where the vocabulary covers every word
        _prepared_data(tiny_settings(tiny_tarball, num_words=covering))


def test_flags_that_change_nothing_are_said_so():
    import warnings

    from imdb_torch.cli.train import _warn_of_flags_without_effect

    parser = build_train_parser()
    args = parser.parse_args(["--ngram-lr", "0.1", "--optimizer", "adam",
                              "--dense-embedding-updates"])  # fmt: skip
    with pytest.warns(UserWarning) as said:
        _warn_of_flags_without_effect(given_settings(args), args.settings)
    assert [str(w.message) for w in said] == [
        "--ngram-lr has no effect without --ngrams",
        "--dense-embedding-updates has no effect with adam",
    ]
    args = parser.parse_args(["--ngrams", "2", "--ngram-lr", "0.1"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_of_flags_without_effect(given_settings(args), args.settings)
