"""The repeat extra: one config over several seeds, each a complete fit and test, summarised by each test metric's
mean, sample std and 95% Student-t interval; a rerun trains only the seeds without a result, and resumes an
interrupted one; seeds run in parallel processes give the same numbers; bad input is one line before training."""

import json
import shutil

import numpy as np
import pytest
from scipy import stats

from conftest import DEFAULT, cli, cli_in, usage_error

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("repeat")]  # its module fixture is built once, on one worker

TINY = [
    "--config", DEFAULT, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    # The callbacks a seed's result and its resume need, not the views and records of the other extras (a second
    # of each fit, and a subprocess pays for their imports).
    '--trainer.callbacks=[{"class_path": "proj.callbacks.ModelCheckpointEveryEpoch", "init_args": {"monitor": '
    '"val/loss", "filename": "best-{epoch:02d}", "save_last": "link"}}, "proj.callbacks.RngState"]',
]  # fmt: skip
OUT = ("logs", "default_repeat")


@pytest.fixture(scope="module")
def repeated(tmp_path_factory):
    """`repeat --seeds 0 1 --processes 2`: each seed a `python -m proj fit` process, both at once. (Its working
    directory, its result.)"""
    workdir = tmp_path_factory.mktemp("repeat")
    return workdir, cli_in(workdir, "repeat", *TINY, "--seeds", "0", "1", "--processes", "2")


def copy_of(repeated, tmp_path, monkeypatch):
    """The repeat's logs/ copied into tmp_path, the working directory: its folder there."""
    shutil.copytree(repeated[0] / "logs", tmp_path / "logs", symlinks=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path.joinpath(*OUT)


def test_the_summary_is_the_mean_std_and_t_interval_of_the_seeds_results(repeated):
    workdir, result = repeated
    out = workdir.joinpath(*OUT)
    summary = json.loads((out / "summary.json").read_text())
    seeds = {s: json.loads((out / f"seed_{s}" / "test_metrics.json").read_text()) for s in (0, 1)}
    assert summary["seeds"] == {"0": seeds[0], "1": seeds[1]} and summary["n"] == 2
    assert seeds[0]["test/loss"] != seeds[1]["test/loss"]  # the seed changes the run...
    configs = {s: (out / f"seed_{s}" / "config.yaml").read_text() for s in (0, 1)}
    assert all(f"seed_everything: {s}\n" in configs[s] for s in (0, 1))
    assert all("split_seed: 0\n" in config for config in configs.values())  # ... not the split
    for key in ("test/acc", "test/loss"):
        values = np.array([seeds[0][key], seeds[1][key]])
        low, high = stats.t.interval(0.95, df=1, loc=values.mean(), scale=values.std(ddof=1) / np.sqrt(2))
        assert summary["mean"][key] == pytest.approx(values.mean())
        assert summary["std"][key] == pytest.approx(values.std(ddof=1))
        assert summary["interval"][key] == pytest.approx([low, high])
    rows = (out / "summary.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["seed", "0", "1", "mean", "std", "low", "high"]
    assert result["trained"] == [0, 1] and (out / "config.yaml").is_file()
    assert sorted(p.name for p in out.glob("seed_*.log")) == ["seed_0.log", "seed_1.log"]  # their processes' output


def test_a_rerun_trains_only_the_missing_seed_and_in_this_process_as_in_its_own(repeated, tmp_path, monkeypatch):
    """Seed 0 done: not a file of it rewritten. Seed 1 missing: trained, here in this process, to the numbers its
    own process gave (float rounding aside: the two ran with different thread counts)."""
    out = copy_of(repeated, tmp_path, monkeypatch)
    shutil.rmtree(out / "seed_1")
    before = {p: p.stat().st_mtime_ns for p in (out / "seed_0").rglob("*") if p.is_file()}
    result = cli("repeat", *TINY, "--seeds", "0", "1")
    assert result["trained"] == [1] and result["n"] == 2
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert result["seeds"]["0"] == repeated[1]["seeds"]["0"]
    assert result["seeds"]["1"] == pytest.approx(repeated[1]["seeds"]["1"], rel=1e-4, abs=1e-6)


def test_an_interrupted_seed_resumes_from_its_last_checkpoint(repeated, tmp_path, monkeypatch, capsys):
    """A seed with a last.ckpt and no result (stopped before its test) continues from it instead of starting over:
    its checkpoints are not rewritten, and its test gives the numbers the first run's did."""
    out = copy_of(repeated, tmp_path, monkeypatch)
    (out / "seed_1" / "test_metrics.json").unlink()
    checkpoints = {p: p.stat().st_mtime_ns for p in (out / "seed_1" / "checkpoints").iterdir()}
    result = cli("repeat", *TINY, "--seeds", "0", "1")
    assert "seed 1: resuming from logs/default_repeat/seed_1/checkpoints/last.ckpt" in capsys.readouterr().out
    assert result["trained"] == [1] and {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints
    assert result["seeds"]["1"] == pytest.approx(repeated[1]["seeds"]["1"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--seeds"], "--seeds: give at least 2 seeds"),
        (["--seeds", "3"], "--seeds 3: give at least 2 seeds"),
        (["--seeds", "0", "1", "0"], "--seeds 0 1 0: seed 0 is given twice"),
        (["--seeds", "0", "-1"], "seed -1 is out of range"),
        (["--seeds", "0", "1", "--processes", "0"], "--processes=0"),
    ],
    ids=["no_seeds", "one_seed", "duplicate", "negative", "no_processes"],
)
def test_bad_input_is_one_line_before_training(args, named, in_tmp, capsys):
    assert named in usage_error(capsys, "repeat", "--config", DEFAULT, *args)
    assert not (in_tmp / "logs").exists()


def test_another_config_in_a_repeat_folder_is_refused_naming_the_key(repeated, tmp_path, monkeypatch, capsys):
    """Another config under the same logger name would be reported with the first one's seeds: refused."""
    copy_of(repeated, tmp_path, monkeypatch)
    error = usage_error(capsys, "repeat", *TINY, "--model.init_args.label_smoothing=0.2", "--seeds", "0", "1", "2")
    assert "model.init_args.label_smoothing differs from logs/default_repeat/config.yaml" in error
    assert not (tmp_path.joinpath(*OUT) / "seed_2").exists()


def test_seeds_are_read_space_separated_or_as_one_list():
    from proj.extras.repeat.command import seeds_as_one_value

    assert seeds_as_one_value(["--seeds", "0", "1", "2", "--processes", "2"]) == ["--seeds=[0,1,2]", "--processes", "2"]
    assert seeds_as_one_value(["--seeds", "[0, 1]"]) == ["--seeds", "[0, 1]"]
    assert seeds_as_one_value(["--seeds=4", "5"]) == ["--seeds=[4,5]"]
    assert seeds_as_one_value(["--seeds"]) == ["--seeds=[]"]
