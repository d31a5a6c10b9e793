"""The command line: every subcommand listed and typed, one-line usage errors, no stray files or warnings, and a
README command reference that matches the real --help."""

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

from proj.cli.registry import LIGHTNING, commands

from conftest import DEFAULT, QUICK, cli, help_text, usage_error

# Lightning's subcommands' own options, as their --help must show them (each extra's tests check its own).
OWN_OPTIONS = {
    "fit": ["--resume", "--init_from", "--test_after_fit", "--test_ckpt", "--ckpt_path", "--weights_only"],
    "validate": ["--ckpt_path", "--weights_only"],
    "test": ["--ckpt_path", "--weights_only"],
    "predict": ["--ckpt_path", "--weights_only"],
}
SUBCOMMANDS = [*LIGHTNING, *commands()]  # and those of the extras that are installed


@pytest.fixture(scope="module")
def top_level_help() -> str:
    """`python -m proj --help`, in a real process."""
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run(
        [sys.executable, "-m", "proj", "--help"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout


@pytest.mark.slow  # a real process, or real fits
def test_top_level_help_lists_every_subcommand_on_one_line_each(top_level_help):
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+{name}\s+\S.*$", top_level_help, re.M), f"{name} missing from:\n{top_level_help}"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help_shows_its_own_options(name, capsys):
    out = help_text(capsys, name)
    for option in OWN_OPTIONS.get(name, []):
        assert option in out, f"{name} --help lacks {option}"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_a_wrong_option_is_one_line_naming_it(name, capsys, in_tmp):
    args = [str(in_tmp / "new")] if name == "new" else ["--config", DEFAULT]
    error = usage_error(capsys, name, *args, "--no_such_option=1")
    assert "no_such_option" in error
    assert not list(in_tmp.iterdir())  # nothing written


def test_a_wrong_value_names_the_key_on_one_line(capsys, in_tmp):
    error = usage_error(capsys, "fit", "--config", DEFAULT, "--trainer.max_epochs=many")
    assert "trainer.max_epochs" in error and "many" in error
    assert "--init_from" in usage_error(capsys, "fit", "--config", DEFAULT, "--init_from")  # given last, no value
    assert not (in_tmp / "logs").exists()


def test_an_unknown_subcommand_is_one_line_listing_the_real_ones(capsys):
    error = usage_error(capsys, "fitt")
    assert "'fitt'" in error and all(name in error for name in SUBCOMMANDS)


@pytest.mark.slow  # a real process, or real fits
def test_commands_leave_no_stray_files_and_print_no_lightning_args_warning(in_tmp, tmp_path_factory, monkeypatch):
    temp = tmp_path_factory.mktemp("tempdir")  # the system's temporary folder, for this test alone
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli("fit", "--config", DEFAULT, *QUICK, "--test_after_fit=false")
        run = in_tmp / "logs" / "default" / "version_0"
        on_run = ["--config", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]
        cli("test", *on_run, *QUICK[-2:])
        cli("predict", "--config", str(run / "config.yaml"), "--ckpt_path=last", *QUICK[-2:])  # the run's last.ckpt
    assert not [w for w in caught if "args parameter is intended" in str(w.message)]
    assert not list(temp.iterdir())  # no temporary files left
    assert sorted(p.name for p in in_tmp.iterdir()) == ["logs"]
    # no new versions: `--ckpt_path last` once meant this new trainer's last checkpoint (none: untrained weights)
    assert [p.name for p in (in_tmp / "logs" / "default").iterdir()] == ["version_0"]
    assert {"test", "predict"} <= {p.name for p in run.iterdir()}
    assert (run / "predict" / "predictions.csv").is_file()


def copy_of(tiny_run: Path, workdir: Path) -> Path:
    """The session's tiny run (`fit --config DEFAULT QUICK --trainer.max_epochs=1 --test_after_fit=false`) copied to
    workdir/logs/default/version_0, where that fit in workdir would have written it, for a test to resume or edit."""
    run = workdir / "logs" / "default" / "version_0"
    shutil.copytree(tiny_run, run, symlinks=True)  # last.ckpt links to its best-*.ckpt beside it
    return run


@pytest.mark.xdist_group("tiny_run")
def test_a_resumed_runs_config_still_tests_and_starts_new_runs(tiny_run, in_tmp):
    run = copy_of(tiny_run, in_tmp)
    cli("fit", "--resume", str(run), "--trainer.max_epochs=2", "--test_after_fit=false")
    saved = (run / "config.yaml").read_text()
    assert "max_epochs: 2" in saved and "resume:" not in saved and "ckpt_path:" not in saved
    last = run / "checkpoints" / "last.ckpt"
    tested = cli("test", "--config", str(run / "config.yaml"), f"--ckpt_path={last}")
    assert "test/acc" in tested.trainer.callback_metrics and (run / "test").is_dir()
    # the other order: config.yaml holds no ckpt_path that would reset the one given before it
    again = cli("test", f"--ckpt_path={last}", "--config", str(run / "config.yaml"))
    assert again.trainer.ckpt_path == str(last)
    assert again.trainer.callback_metrics["test/acc"] == tested.trainer.callback_metrics["test/acc"]
    cli("fit", "--config", str(run / "config.yaml"), "--trainer.max_epochs=1", "--test_after_fit=false")
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0", "version_1"]  # a new run, not a resume


@pytest.mark.xdist_group("tiny_run")
def test_resume_applies_model_overrides_over_the_checkpoint(tiny_run, in_tmp, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("lightning.pytorch"), "handlers", [caplog.handler])  # it does not propagate
    run = copy_of(tiny_run, in_tmp)
    resume = ["fit", "--resume", str(run), "--test_after_fit=false"]
    resumed = cli(*resume, "--trainer.max_epochs=2", "--model.init_args.label_smoothing=0.3")
    assert resumed.model.loss_fn.label_smoothing == 0.3  # the checkpoint has 0.05 (default.yaml)
    assert resumed.trainer.current_epoch == 2  # it continued the run: epoch 1 trained
    assert "model.init_args.label_smoothing=0.3 (checkpoint: 0.05)" in caplog.text
    # A value edited into the run's config.yaml wins over the checkpoint's too.
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("label_smoothing: 0.3", "label_smoothing: 0.2"))
    assert cli(*resume, "--trainer.max_epochs=3").model.loss_fn.label_smoothing == 0.2


class CountBatches(Callback):
    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1


@pytest.mark.parametrize(
    ("given", "batches"),
    [
        (["--trainer.limit_train_batches", "1"], 1),
        (["--config", "{yaml}"], 2),
        (["--trainer.limit_train_batches=0.5"], 10),
    ],
    ids=["command_line", "yaml", "fraction"],
)
def test_an_integer_batch_limit_counts_batches_and_a_float_a_fraction(given, batches, in_tmp):
    (in_tmp / "limit.yaml").write_text("trainer:\n  limit_train_batches: 2\n")
    args = [a.replace("{yaml}", str(in_tmp / "limit.yaml")) for a in given]
    quick = [a for a in QUICK if "limit_train_batches" not in a]
    built = cli("--config", DEFAULT, *quick, "--trainer.max_epochs=1", *args, run=False)
    counter = CountBatches()
    built.trainer.callbacks.append(counter)
    built.trainer.fit(built.model, datamodule=built.datamodule)
    assert counter.batches == batches  # digits: 20 training batches of 64
    assert isinstance(built.trainer.limit_train_batches, int) == (batches != 10)


@pytest.mark.parametrize(
    ("with_logger", "extra_file", "removed"),
    [
        (False, None, False),  # no logger: trainer.log_dir is the working directory, the user's project
        (True, None, True),  # a logger's version_<n> holding only what setup wrote: an empty run, removed
        (True, "notes.txt", False),  # a version directory with a file of the user's: kept
    ],
)
def test_a_run_failing_before_its_first_step_removes_only_its_own_empty_run_directory(
    tmp_path, monkeypatch, with_logger, extra_file, removed
):
    from types import SimpleNamespace

    from proj.cli.run_dir import SaveRunConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("the user's own code")
    run_dir = tmp_path / "logs" / "default" / "version_0" if with_logger else tmp_path
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "hparams.yaml", "events.out.tfevents.1.host", extra_file):
        if name:
            (run_dir / name).write_text("written at setup")
    callback = SaveRunConfig.__new__(SaveRunConfig)  # only on_exception is exercised
    callback.resumed = False
    logger = SimpleNamespace(log_dir=str(run_dir)) if with_logger else None
    trainer = SimpleNamespace(global_step=0, is_global_zero=True, logger=logger, log_dir=str(run_dir))
    callback.on_exception(trainer, None, RuntimeError("failed in setup"))
    assert (tmp_path / "train.py").read_text() == "the user's own code"
    assert run_dir.exists() != removed


def test_fit_without_a_logger_trains_in_the_working_directory(tmp_path, monkeypatch, capsys):
    """`--trainer.logger false` (with the Rich bar stacked on the default) trains: the LearningRateMonitor,
    which needs a logger, is left out, the Rich bar replaces the TQDM one, and nothing of the user's is lost."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("the user's own code")
    rich = str(Path(DEFAULT).parent / "trainer" / "rich.yaml")
    cli(
        "fit",
        "--config",
        DEFAULT,
        "--config",
        rich,
        *QUICK,
        "--trainer.logger=false",
        "--test_after_fit=false",
        "--trainer.enable_progress_bar=true",
        "--trainer.max_epochs=1",
    )
    assert (tmp_path / "train.py").read_text() == "the user's own code"
    assert list((tmp_path / "checkpoints").glob("*.ckpt"))
    printed = capsys.readouterr()
    assert "━" in printed.out + printed.err  # Rich's bar, not tqdm's


@pytest.mark.slow  # a real process
def test_the_first_run_prints_the_net_the_results_and_where_the_run_went_and_nothing_else(tmp_path):
    args = ["fit", "--config", DEFAULT, *QUICK[:-1], "--trainer.limit_test_batches=2"]  # with the model summary
    command = [sys.executable, "-m", "proj", *args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert re.search(r"^net\s+SmallCNN\s+75\.1 K$", out, re.M) and "test/acc" in out
    assert "The run is in logs/default/version_0/: config.yaml, checkpoints/best-" in out
    for noise in ("LeafSpec", "skipped", "MeanMetric", "MetricCollection", "FLOPs", "Tip:", "Warning", "already"):
        assert noise not in out, f"{noise!r} in the output of a default fit:\n{out}"
