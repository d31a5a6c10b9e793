"""run.json and model_card.md in every run directory: git state, packages, seed, commands, final metrics, the card."""

import csv
import json
import os
import platform
import subprocess
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from proj.cli.config_commands import ConfigCommandCLI, run_config_command

from conftest import CONFIGS, DEFAULT, cli_in

TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
FIT = ["fit", "--config", DEFAULT, "--config", str(CONFIGS / "logger/csv.yaml"), "--seed_everything=7", *TINY]
MINE = "For demos of handwritten digit recognition only.\n"


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def last_logged(metrics_csv: str, name: str) -> float:
    """The last value of a metric in the text of a CSV logger's metrics.csv."""
    values = [row[name] for row in csv.DictReader(metrics_csv.splitlines()) if row.get(name)]
    return float(values[-1])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fit inside a git repository (the user's copied project), then: a tracked file changed, a `test` into the
    run, the card's "Intended use" written by the user, a `fit --resume`, and a subcommand on the run. Snapshots
    after each."""
    repo = tmp_path_factory.mktemp("project")
    (repo / "notes.txt").write_text("v1\n")
    git(repo, "init", "-q")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-qm", "first")
    cli_in(repo, *FIT)
    run = repo / "logs" / "default" / "version_0"
    after_fit = record(run)
    after_fit["metrics.csv"] = (run / "metrics.csv").read_text()  # the resumed fit writes it again
    (repo / "notes.txt").write_text("v2\n")  # an uncommitted change to a tracked file
    cli_in(repo, "test", "--config", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints/last.ckpt'}", *TINY)
    after_test = record(run)
    card = (run / "model_card.md").read_text()
    placeholder = card.split("## Intended use\n\n", 1)[1].split("\n", 1)[0]
    (run / "model_card.md").write_text(card.replace(placeholder, MINE.strip()))
    cli_in(repo, "fit", "--resume", str(run), "--trainer.max_epochs=2", "--test_after_fit=false")
    after_resume = record(run)
    old = os.getcwd()
    os.chdir(repo)
    try:  # one of the template's subcommands on the run (as export or lr_find), recorded by the run record
        run_config_command(
            "probe", probe, ["--config", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints/last.ckpt'}"]
        )
    finally:
        os.chdir(old)
    return repo, run, {"fit": after_fit, "test": after_test, "resume": after_resume, "probe": record(run)}


def probe(cli: ConfigCommandCLI, note: str = "") -> str:
    """A subcommand of this test that works on a run's config, as export, lr_find and schedule do (and takes
    a moment, as they do: its recorded wall time is above zero)."""
    time.sleep(0.01)
    return note


@pytest.mark.xdist_group("run_record")  # its module fixture is trained once, on one worker
def test_run_json_holds_the_commit_the_packages_the_device_and_the_seed(project):
    repo, _, records = project
    fit = records["fit"]
    assert fit["git"]["commit"] == git(repo, "rev-parse", "HEAD") and fit["git"]["dirty"] is False  # logs/: untracked
    assert records["test"]["commands"][-1]["git"]["dirty"] is True  # notes.txt changed before the test
    packages = fit["packages"]
    assert packages["python"] == platform.python_version()
    for name in ("torch", "lightning", "torchmetrics", "numpy"):
        assert packages[name] == metadata.version(name), name
    assert fit["seed"] == 7
    assert fit["device"]["accelerator"] == "cpu" and fit["device"]["precision"] == "32-true"
    assert fit["device"]["world_size"] == 1 and fit["device"]["device_names"][0]


@pytest.mark.xdist_group("run_record")  # its module fixture is trained once, on one worker
def test_every_command_into_the_run_is_one_entry(project):
    *_, records = project
    assert [c["command"] for c in records["fit"]["commands"]] == ["fit", "test_after_fit"]
    assert records["fit"]["commands"][0]["argv"] == FIT
    assert [c["command"] for c in records["probe"]["commands"]] == ["fit", "test_after_fit", "test", "fit", "probe"]
    test, resume = records["probe"]["commands"][2:4]
    assert test["ckpt_path"] == "checkpoints/last.ckpt" and "--resume" in resume["argv"]
    for command in records["probe"]["commands"]:
        assert command["status"] == "ok" and command["wall_s"] > 0, command
        datetime.fromisoformat(command["started"])
    fits = [c["wall_s"] for c in records["probe"]["commands"] if c["command"] == "fit"]
    assert records["probe"]["wall_time_s"] == pytest.approx(sum(fits), abs=0.01)
    assert records["resume"]["card"]["trained"]["epochs"] == 2  # the resumed fit's facts


@pytest.mark.xdist_group("run_record")  # its module fixture is trained once, on one worker
def test_final_metrics_are_what_the_logger_recorded(project):
    _, run, records = project
    metrics = records["fit"]["card"]["metrics"]
    for name in ("val/acc", "val/loss", "test/acc", "test/loss"):
        assert metrics[name] == pytest.approx(last_logged(records["fit"]["metrics.csv"], name), rel=1e-6), name
    later = records["test"]["card"]["metrics"]  # the later test (of last.ckpt) replaces the test values
    tested = (run / "test" / "metrics.csv").read_text()
    assert later["test/loss"] == pytest.approx(last_logged(tested, "test/loss"), rel=1e-6)
    assert later["val/acc"] == metrics["val/acc"]


@pytest.mark.xdist_group("run_record")  # its module fixture is trained once, on one worker
def test_the_card_names_the_classes_and_metrics_and_keeps_the_users_text(project):
    _, run, records = project
    card = (run / "model_card.md").read_text()
    assert records["fit"]["card"]["classes"] == [str(i) for i in range(10)]
    assert "## Classes\n\n`0`, `1`" in card and "classification: 10 classes" in card
    for name, value in records["probe"]["card"]["metrics"].items():
        assert f"| {name} | {value:.4g} |" in card
    assert "AdamW (lr 0.003, weight_decay 0.05) with CosineAnnealingLR" in card
    assert card.split("## Intended use\n\n", 1)[1].startswith(MINE)  # kept through the resume and the subcommand
    assert "_To fill in:" in card.split("## Limitations", 1)[1]


def test_a_regression_card_names_its_target(in_tmp):
    regression = str(CONFIGS / "experiment/diabetes_regression.yaml")
    cli_in(in_tmp, "fit", "--config", DEFAULT, "--config", regression, *TINY)
    run = in_tmp / "logs" / "diabetes_regression" / "version_0"
    card = record(run)["card"]
    assert card["task"] == "regression" and card["target_names"] == ["progression"]
    assert {"val/rmse", "test/rmse", "test/r2"} <= set(card["metrics"])
    text = (run / "model_card.md").read_text()
    assert "## Targets\n\n`progression`" in text and "regression: 1 target(s)" in text


def test_a_multi_label_card_names_each_label_with_its_threshold(in_tmp):
    multilabel = str(CONFIGS / "experiment/digits_multilabel.yaml")
    cli_in(in_tmp, "fit", "--config", DEFAULT, "--config", multilabel, *TINY)
    run = in_tmp / "logs" / "digits_multilabel" / "version_0"
    card = record(run)["card"]
    assert card["classes"] == ["even", "greater_than_4", "has_loop"] and len(card["thresholds"]) == 3
    assert {"test/f1_macro", "test/f1_even", "test/auroc_has_loop"} <= set(card["metrics"])
    text = (run / "model_card.md").read_text()
    assert "multilabel: 3 labels" in text and "`even` (threshold " in text


def test_without_a_logger_the_record_goes_beside_config_yaml_in_the_working_directory(in_tmp):
    (in_tmp / "mine.txt").write_text("the user's file\n")
    cli_in(in_tmp, "fit", "--config", DEFAULT, *TINY, "--trainer.logger=false", "--test_after_fit=false")
    assert (in_tmp / "config.yaml").is_file() and (in_tmp / "mine.txt").read_text() == "the user's file\n"
    assert [c["status"] for c in record(in_tmp)["commands"]] == ["ok"] and (in_tmp / "model_card.md").is_file()
    assert record(in_tmp)["git"] is None  # not a git repository


class Stop(Callback):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def on_train_batch_end(self, trainer, *args) -> None:
        raise self.error


@pytest.mark.parametrize(("error", "status"), [(RuntimeError("boom"), "failed"), (SIGTERMException(), "interrupted")])
def test_a_run_that_dies_records_how(in_tmp, error, status):
    from proj.cli.run import run_fit

    with pytest.raises(type(error)):
        run_fit(["--config", DEFAULT, *TINY], callbacks=[Stop(error)])
    (command,) = record(in_tmp / "logs" / "default" / "version_0")["commands"]
    assert command["status"] == status and command["argv"] == ["--config", DEFAULT, *TINY]


def test_a_record_that_cannot_be_written_is_one_warning_not_a_lost_run(in_tmp, monkeypatch):
    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr("proj.extras.run_record.record.write_record", broken)
    with pytest.warns(UserWarning, match="run record not written: OSError: disk full"):
        result = cli_in(in_tmp, "fit", "--config", DEFAULT, *TINY, "--test_after_fit=false")
    assert result.trainer.state.finished and (in_tmp / "logs/default/version_0/checkpoints/last.ckpt").is_file()


def test_the_card_shows_the_evaluations_intervals_beside_their_values_and_links_its_files(tmp_path):
    """The diagnose extra's <run>/evaluation/test.json, read from disk when the card is written (the extras never
    import each other): an interval only beside the value it was computed for, the figures and the report linked."""
    from proj.extras.run_record.record import write_record

    run = tmp_path
    (run / "evaluation").mkdir()
    (run / "evaluation" / "test_roc.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    metrics = {"acc": {"value": 0.9, "low": 0.85, "high": 0.95, "logged": "test/acc"},
               "f1": {"value": 0.7, "low": 0.6, "high": 0.8, "logged": "test/f1"}}  # fmt: skip
    evaluation = {"bootstrap": {"level": 0.95}, "metrics": metrics, "figures": {"roc": "test_roc.png"}}
    (run / "evaluation" / "test.json").write_text(json.dumps(evaluation))
    card = {"metrics": {"test/acc": 0.9000000238, "test/f1": 0.75, "val/acc": 0.8}}  # test/f1: of another test
    write_record(run, {"commands": [], "card": card})
    text = (run / "model_card.md").read_text()
    assert "| metric | value | 95% interval |" in text and "| test/acc | 0.9 | 0.85 to 0.95 |" in text
    assert "| test/f1 | 0.75 |  |" in text and "| val/acc | 0.8 |  |" in text
    assert "[ROC curves](evaluation/test_roc.png)" in text and "Diagnosis:" not in text
    assert record(run)["card"]["intervals"] == {"test/acc": {"low": 0.85, "high": 0.95, "level": 0.95}}
    (run / "diagnose").mkdir()
    (run / "diagnose" / "report.md").write_text("# report\n")
    write_record(run, record(run))  # as a later command (diagnose) writes it
    assert "Diagnosis: [diagnose/report.md](diagnose/report.md)" in (run / "model_card.md").read_text()
    (run / "evaluation" / "test.json").unlink()
    write_record(run, record(run))
    assert "| metric | value |\n" in (run / "model_card.md").read_text() and "intervals" not in record(run)["card"]
