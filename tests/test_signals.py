"""A second Ctrl-C or SIGTERM ends a process that does not stop after the first."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest

STUCK = textwrap.dedent("""
    import signal, threading
    from imdb_torch.cli.common import second_signal_ends_it
    signal.signal(signal.SIGTERM, lambda *args: None)  # notes it and goes on, as a stuck run
    signal.signal(signal.SIGINT, lambda *args: None)
    with second_signal_ends_it(lambda: print("ending the other ranks", flush=True)):
        print("ready", flush=True)
        threading.Event().wait()  # for ever
""")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_second_signal_ends_a_process_that_does_not_stop(signum):
    process = subprocess.Popen([sys.executable, "-c", STUCK], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signum)
        time.sleep(0.5)
        assert process.poll() is None  # the first only asks
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 128 + signum
    assert "ending the other ranks" in out and "second interrupt: stopping at once" in err


FORKED = textwrap.dedent("""
    import os, signal, threading, time
    from imdb_torch.cli.common import second_signal_ends_it
    signal.signal(signal.SIGINT, lambda *args: None)
    with second_signal_ends_it():
        child = os.fork()  # as a DataLoader worker is
        if child == 0:
            os.kill(os.getpid(), signal.SIGINT)  # the worker's own copy of a Ctrl-C
            time.sleep(0.2)
            os._exit(0)
        os.waitpid(child, 0)
        print("ready", flush=True)
        threading.Event().wait(3)
        print("still running", flush=True)
""")


def test_a_forked_childs_signal_does_not_count_as_the_parents():
    process = subprocess.Popen([sys.executable, "-c", FORKED], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGINT)  # the parent's first
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "still running" in out


def test_a_ctrl_c_while_pytorch_loads_is_one_line(monkeypatch, capsys):
    import importlib

    from imdb_torch import cli

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert cli.launch("predict", ["--ckpt", "best.ckpt", "a review"]) == 130
    assert capsys.readouterr().err == "predict.py: interrupted\n"
