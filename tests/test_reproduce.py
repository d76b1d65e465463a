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
    assert 0 <= record["test_acc"] <= 1 and record["median_epoch_seconds"] > 0
    assert record["settings"]["optimizer"] == "rmsprop" and record["settings"]["lr"] == 1e-4
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| gru | imdb-torch | 2 |" in summary and "±" in summary
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


def test_parity_table_compares_means_with_keras():
    def run(framework, seed, val_acc, test_acc, val_loss):
        return {"framework": framework, "experiment": "lstm", "seed": seed, "best_val_acc": val_acc,
                "test_acc": test_acc, "best_val_loss": val_loss}  # fmt: skip

    close = [run("keras", 1, 0.79, 0.80, 0.44), run("imdb-torch", 1, 0.795, 0.805, 0.445)]
    assert "| lstm | +0.50 | +0.50 | +0.0050 | yes |" in parity_table(close)
    far = [run("keras", 1, 0.79, 0.80, 0.44), run("imdb-torch", 1, 0.77, 0.80, 0.44)]
    assert "| lstm | -2.00 | +0.00 | +0.0000 | no |" in parity_table(far)
    assert parity_table(close[:1]) == ""
