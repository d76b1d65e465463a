import json

from imdb_torch.cli import reproduce as reproduce_cli
from imdb_torch.reporting.report import parity_table, summary_table


def test_reproduce_writes_runs_summary_and_figures_and_skips_finished(tmp_path, tiny_tarball,
                                                                      capsys):  # fmt: skip
    argv = ["--data", str(tiny_tarball), "--experiments", "lstm", "gru", "--seeds", "1", "2",
            "--max-epochs", "2", "--out", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    assert reproduce_cli.main(argv) == 0
    runs = sorted((tmp_path / "out" / "runs").glob("*.json"))
    assert [p.name for p in runs] == [
        "imdb-torch-gru-seed1.json", "imdb-torch-gru-seed2.json",
        "imdb-torch-lstm-seed1.json", "imdb-torch-lstm-seed2.json",
    ]  # fmt: skip
    record = json.loads(runs[0].read_text())
    assert record["parameters"] == record["keras_parameters"] == 8633
    assert record["epochs_run"] == 2 and len(record["history"]) == 2
    assert record["resumed_after_epochs"] == 0
    # The run directory holds the test result too, where compare.py and TensorBoard read it.
    run_dir = tmp_path / "out" / "lightning_logs" / "gru" / "version_1"
    assert json.loads((run_dir / "test.json").read_text())["test_acc"] == record["test_acc"]
    assert 0 <= record["test_acc"] <= 1 and record["median_epoch_seconds"] > 0
    assert record["settings"]["optimizer"] == "rmsprop" and record["settings"]["lr"] == 1e-4
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| gru | imdb-torch | 2 |" in summary and "±" in summary
    # What the figures come from, first; and no rows of experiments that were not run.
    assert summary.startswith("Data: aclImdb_tiny.tar.gz; max_epochs 2, patience 3; seeds 1, 2.")
    assert "lstm-2layer" not in summary and "| lstm | book (Keras) |" in summary
    assert (tmp_path / "out" / "curves.png").is_file()
    assert (tmp_path / "out" / "test_accuracy.png").is_file()

    before = {p.name: p.stat().st_mtime_ns for p in runs}
    capsys.readouterr()
    assert reproduce_cli.main(argv) == 0
    assert capsys.readouterr().out.count("done before, kept") == 4
    assert {p.name: p.stat().st_mtime_ns for p in runs} == before


def test_summary_table_means_and_deviations():
    runs = [
        {"framework": "keras", "experiment": "gru", "seed": s, "epochs_run": e,
         "best_epoch": e - 3, "best_val_loss": loss, "best_val_acc": 0.8, "test_acc": 0.79,
         "median_epoch_seconds": 3.0}
        for s, e, loss in ((1, 10, 0.40), (2, 12, 0.44))
    ]  # fmt: skip
    table = summary_table(runs)
    assert "| gru | keras | 2 | 11.0 ± 1.4 | 8.0 ± 1.4 | 0.4200 ± 0.0283 |" in table
    assert "| gru | book (Keras) | 1 | | | 0.432 | 0.798 |" in table
    assert "| lstm |" not in table  # an experiment not run has no rows, not even the book's
    one = summary_table([{**runs[0], "epochs_run": 10, "best_epoch": 7}])
    assert "| gru | keras | 1 | 10 | 7 | 0.4000 |" in one  # counts as whole numbers


def test_the_figures_hold_what_was_run_and_tell_seeds_apart(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from imdb_torch.reporting import report

    history = [{"epoch": 1, "train_loss": 0.7, "val_loss": 0.69}]
    runs = [{"framework": "imdb-torch", "experiment": "gru", "seed": seed, "history": history,
             "test_acc": 0.6} for seed in (1, 2)]  # fmt: skip
    drawn, savefig = [], Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda figure, *a, **k: (drawn.append(figure), savefig(figure, *a, **k))
    )
    report.plot_curves(runs, tmp_path / "curves.png")
    report.plot_test_accuracy(runs, tmp_path / "test_accuracy.png")
    curves, bars = drawn
    (panel,) = curves.axes  # gru alone: one panel, not four with three empty
    assert panel.get_title() == "gru"
    colours = {
        line.get_label(): line.get_color() for line in panel.lines if line.get_label()[0] != "_"
    }
    assert (
        set(colours) == {"imdb-torch seed 1", "imdb-torch seed 2"}
        and len(set(colours.values())) == 2
    )
    labels = bars.axes[0].get_legend_handles_labels()[1]
    assert labels == ["imdb-torch"]  # no entry for Keras, which was not run
    low, high = bars.axes[0].get_ylim()
    assert low <= 0.5 and high >= 0.9  # the lesson's range, and every bar in it

    runs = [{**run, "test_acc": 0.45} for run in runs]  # far below the lesson's figures
    drawn.clear()
    report.plot_test_accuracy(runs, tmp_path / "test_accuracy.png")
    assert drawn[0].axes[0].get_ylim()[0] < 0.45


def test_parity_table_compares_means_with_keras():
    def run(framework, seed, val_acc, test_acc, val_loss):
        return {"framework": framework, "experiment": "lstm", "seed": seed, "best_val_acc": val_acc,
                "test_acc": test_acc, "best_val_loss": val_loss}  # fmt: skip

    close = [run("keras", 1, 0.79, 0.80, 0.44), run("imdb-torch", 1, 0.795, 0.805, 0.445)]
    assert "| lstm | +0.50 | +0.50 | +0.0050 | yes |" in parity_table(close)
    far = [run("keras", 1, 0.79, 0.80, 0.44), run("imdb-torch", 1, 0.77, 0.80, 0.44)]
    assert "| lstm | -2.00 | +0.00 | +0.0000 | no |" in parity_table(far)
    assert parity_table(close[:1]) == ""


def _one_line(capsys, code, *phrases):
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    for phrase in phrases:
        assert phrase in err, err


def test_reproduce_refuses_jobs_that_would_mix_settings(tmp_path, tiny_tarball, capsys,
                                                         monkeypatch):  # fmt: skip
    from .conftest import make_reviews, write_tarball

    out = tmp_path / "out"
    argv = ["--data", str(tiny_tarball), "--experiments", "lstm", "--seeds", "1",
            "--max-epochs", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    assert reproduce_cli.main(argv) == 0
    record = out / "runs" / "imdb-torch-lstm-seed1.json"
    kept = record.read_bytes()

    # Every seed is checked before the first job trains.
    _one_line(
        capsys,
        reproduce_cli.main([*argv, "--seeds", "3", "-1", "--out", str(tmp_path / "new")]),
        "--seeds must be a whole number",
    )
    assert not (tmp_path / "new").exists()
    # A finished run of other settings is not averaged with this one's, and that is found
    # before any job trains.
    code = reproduce_cli.main([*argv, "--seeds", "9", "1", "--max-epochs", "3"])
    _one_line(capsys, code, "max_epochs=2", "--out")
    assert not (out / "lightning_logs" / "lstm" / "version_9").exists()
    assert record.read_bytes() == kept
    # The same archive named another way is the same data; a record of an older version,
    # without the settings added since, was made with their defaults.
    monkeypatch.chdir(tiny_tarball.parent)
    assert reproduce_cli.main([*argv, "--data", tiny_tarball.name]) == 0
    assert "done before, kept" in capsys.readouterr().out
    older = json.loads(kept)
    for key in ("ngrams", "ngram_buckets", "ngram_lr"):
        del older["settings"][key]
    record.write_text(json.dumps(older))
    assert reproduce_cli.main(argv) == 0
    assert "done before, kept" in capsys.readouterr().out
    record.write_bytes(kept)

    # The run interrupted (its record gone, its last.ckpt after 2 epochs): it is continued
    # only with its own settings and data, and not past where it is.
    record.unlink()
    _one_line(capsys, reproduce_cli.main([*argv, "--max-epochs", "1"]), "has trained 2 epochs")
    _one_line(capsys, reproduce_cli.main([*argv, "--patience", "1"]), "patience=3")
    other = write_tarball(make_reviews(seed=5, per_folder=10), tmp_path / "other.tar.gz")
    _one_line(capsys, reproduce_cli.main([*argv, "--data", str(other)]), "vocabulary differs")
    assert reproduce_cli.main(argv) == 0  # the same settings: it finishes the job
    finished = json.loads(record.read_text())
    assert finished["epochs_run"] == 2 and finished["resumed_after_epochs"] == 2


def test_reproduce_refuses_an_out_that_is_a_file(tmp_path, tiny_tarball, capsys):
    out = tmp_path / "a_file"
    out.write_text("keep me")
    argv = ["--data", str(tiny_tarball), "--experiments", "lstm", "--seeds", "1",
            "--max-epochs", "1", "--out", str(out), "--no-progress"]  # fmt: skip
    _one_line(capsys, reproduce_cli.main(argv), "is a file")
    _one_line(capsys, reproduce_cli.main([*argv, "--out", str(out / "results")]), "is a file")
    assert out.read_text() == "keep me"


def test_reproduce_refuses_empty_paths_rather_than_the_working_directory(
    tmp_path, tiny_tarball, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "summary.md").write_text("my notes")
    argv = ["--experiments", "lstm", "--seeds", "1", "--max-epochs", "1", "--no-progress"]
    _one_line(capsys, reproduce_cli.main([*argv, "--data", str(tiny_tarball), "--out", ""]),
              "--out '': give a directory")  # fmt: skip
    _one_line(capsys, reproduce_cli.main([*argv, "--data", "", "--out", "results"]),
              "--data must not be empty")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.md"]
    assert (tmp_path / "summary.md").read_text() == "my notes"


def test_reproduce_leaves_no_folder_behind_for_bad_data(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--data", str(tmp_path / "missing.tar.gz"), "--experiments", "lstm", "--seeds",
            "1", "--max-epochs", "1", "--out", str(out), "--no-progress"]  # fmt: skip
    code = reproduce_cli.main(argv)
    said = capsys.readouterr()
    assert code == 2 and len(said.err.strip().splitlines()) == 1 and "missing.tar.gz" in said.err
    assert "training" not in said.out  # said before any job is announced
    assert not out.exists()


def test_reproduce_leaves_a_job_another_process_is_running(tmp_path, tiny_tarball, capsys):
    from imdb_torch.fileio import run_lock

    out = tmp_path / "out"
    run_dir = out / "lightning_logs" / "lstm" / "version_1"
    run_dir.mkdir(parents=True)
    argv = ["--data", str(tiny_tarball), "--experiments", "lstm", "--seeds", "1",
            "--max-epochs", "1", "--out", str(out), "--no-progress"]  # fmt: skip
    with run_lock(run_dir):  # as a reproduce.py started a moment before would hold it
        _one_line(capsys, reproduce_cli.main(argv), "in use by another")
    assert not (run_dir / "checkpoints").exists()


def test_compare_refuses_a_place_it_cannot_write_before_reading_runs(tmp_path, capsys,
                                                                      monkeypatch):  # fmt: skip
    from imdb_torch.cli import common
    from imdb_torch.cli import compare as compare_cli

    def read_only(*args, **kwargs):  # as root, chmod would not stop the write: simulated
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(common.tempfile, "TemporaryFile", read_only)
    code = compare_cli.main([str(tmp_path / "no-runs"), "--out", str(tmp_path / "c.png")])
    _one_line(capsys, code, "cannot write in", "Read-only file system")


def test_reproduce_refuses_several_processes_before_any_work(tmp_path, tiny_tarball, capsys):
    """Each process of a DDP run would start reproduce.py again from the top, and the second
    found the first's run locked (exit 137)."""
    out = tmp_path / "results"
    argv = ["--data", str(tiny_tarball), "--experiments", "lstm", "--seeds", "1",
            "--max-epochs", "1", "--out", str(out), "--no-progress", "--accelerator", "cpu",
            "--devices", "2"]  # fmt: skip
    _one_line(capsys, reproduce_cli.main(argv), "--devices 2: reproduce.py trains on one device",
              "train.py trains a run on several")  # fmt: skip
    assert not out.exists()
