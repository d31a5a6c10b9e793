"""The diagnose extra: HealthMonitor's records, and `python -m proj diagnose RUN` firing each rule on a run built to
have its problem (benchmarks/diagnose_cases.py, the same runs `make bench` trains in full), and on nothing else."""

import math
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import DEFAULT, ROOT, cli, cli_in, usage_error

sys.path.insert(0, str(ROOT / "benchmarks"))
from diagnose_cases import CASES, case_args  # benchmarks/ holds scripts, not a package

from proj.extras.diagnose.health import activation_stats, is_spike
from proj.extras.diagnose.health_files import read_rows, truncate_after, write_rows

pytestmark = pytest.mark.slow
TINY = ["--trainer.enable_model_summary=false"]


def diagnosed(workdir, *args):
    """One fit (a failed one too: diagnose reads what it recorded), then diagnose on its run directory."""
    try:
        run = Path(cli_in(workdir, "fit", *args).trainer.log_dir)
    except SystemExit:  # refused mid-run (a non-finite loss): the run directory is still there
        run = next((workdir / "logs" / "default").glob("version_*")).relative_to(workdir)
    return run, cli_in(workdir, "diagnose", str(run))


@pytest.mark.xdist_group("diagnose")
@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_rule_fires_on_the_run_built_to_have_its_problem(rule, tmp_path, monkeypatch):
    tested = [] if rule == "class_imbalance" else ["--test_after_fit=false"]  # only imbalance reads the test
    run, result = diagnosed(tmp_path, *case_args(rule, tmp_path / "case"), *TINY, *tested)
    assert rule in result["findings"], (
        rule,
        result["findings"],
        (tmp_path / run / "diagnose" / "report.md").read_text(),
    )
    report = (tmp_path / run / "diagnose" / "report.md").read_text()
    assert "## Healthy" not in report
    fix = tmp_path / run / "diagnose" / f"fix_{rule}.yaml"
    if rule != "train_test_duplicates":  # the fix of duplicates is in the data: no override
        # the override file parses stacked on the run's config (its first line says so), as the report prints it
        command = fix.read_text().splitlines()[1].removeprefix("# python -m proj ").split()
        assert command[:3] == ["fit", "--config", str(run / "config.yaml")], command
        monkeypatch.chdir(tmp_path)
        cli(*command[1:], run=False)  # parsed and built, not trained


@pytest.mark.xdist_group("default_run")
def test_the_default_run_is_healthy_and_the_report_says_why(default_run):
    workdir, _ = default_run
    run = workdir / "logs" / "default" / "version_0"
    result = cli_in(workdir, "diagnose", str(run))
    assert result["findings"] == [], result["findings"]
    report = (run / "diagnose" / "report.md").read_text()
    assert "## Healthy" in report and "update / weight ratio" in report and "0 of 360 test inputs" in report
    for figure in ("curves.png", "gradients.png", "updates.png", "activations.png"):
        assert (run / "diagnose" / figure).read_bytes()[:4] == b"\x89PNG", figure
    # The model card links the report once the diagnosis is recorded into the run.
    assert "diagnose/report.md" in (run / "model_card.md").read_text()


@pytest.mark.xdist_group("default_run")
def test_per_block_gradient_norms_add_up_to_the_logged_global_norm(default_run):
    workdir, _ = default_run
    run = workdir / "logs" / "default" / "version_0"
    rows = read_rows(run / "health" / "steps.csv")
    events = EventAccumulator(str(run)).Reload()
    logged = {e.step: e.value for e in events.Scalars("train/grad_norm")}
    compared = 0
    for row in rows:
        if int(row["step"]) in logged:
            blocks = [v for k, v in row.items() if k.startswith("grad/")]
            assert math.sqrt(sum(v * v for v in blocks)) == pytest.approx(logged[int(row["step"])], rel=1e-4)
            compared += 1
    assert compared >= 0.9 * len(rows) > 10, (compared, len(rows))
    # Clipping at 1.0 changes some steps of the default run (its first ones), never fewer than none or more than all.
    assert all(0.0 <= row["clipped"] <= 1.0 for row in rows)
    assert "health/clipped" in events.Tags()["scalars"]


@pytest.mark.xdist_group("diagnose")
def test_try_trains_the_fix_and_shows_it_beats_the_original_beyond_the_interval(tmp_path):
    run = cli_in(tmp_path, "fit", *case_args("lr_too_low", tmp_path / "case"), "--trainer.max_epochs=2", *TINY)
    run_dir = tmp_path / run.trainer.log_dir
    result = cli_in(tmp_path, "diagnose", str(run_dir), "--try", "--epochs", "2")
    [tried] = result["tried"]
    assert tried["rule"] == "lr_too_low" and tried["epochs"] == 2
    difference = tried["difference"]
    assert tried["fixed"] > tried["original"] + 0.2, tried
    assert 0 < difference["low"] <= difference["value"] <= difference["high"], difference
    assert tried["helped"]
    assert "--try" in (run_dir / "diagnose" / "report.md").read_text()


def test_a_path_that_is_no_run_is_refused_in_one_line(capsys, tmp_path):
    line = usage_error(capsys, "diagnose", str(tmp_path / "nowhere"))
    assert "nowhere is not a run directory" in line


def test_dead_units_are_channels_constant_over_the_batch():
    out = torch.randn(8, 4, 3, 3)
    out[:, 1] = 0.0  # a ReLU channel that never fires
    out[:, 2] = 0.7  # a saturated one
    mean, std, zeros, dead = activation_stats(out)
    assert dead == 0.5 and zeros == pytest.approx(0.25)
    assert mean == pytest.approx(float(out.mean())) and std == pytest.approx(float(out.std()), rel=1e-5)


def test_a_spike_is_far_above_the_recent_median_and_its_spread():
    recent = [1.0, 1.1, 0.9, 1.05, 0.95] * 4
    assert is_spike(3.0, recent, 2.0) and is_spike(float("nan"), recent, 2.0)
    assert not is_spike(1.5, recent, 2.0)


def test_a_resume_drops_what_was_recorded_after_its_checkpoint(tmp_path):
    write_rows(tmp_path / "steps.csv", [{"step": s, "epoch": s // 10, "loss": 1.0} for s in range(0, 40, 5)])
    write_rows(tmp_path / "epochs.csv", [{"epoch": e, "lr": 0.1} for e in range(4)])
    truncate_after(tmp_path, step=20, epoch=2)
    assert [r["step"] for r in read_rows(tmp_path / "steps.csv")] == [0, 5, 10, 15]
    assert [r["epoch"] for r in read_rows(tmp_path / "epochs.csv")] == [0, 1]


def test_fix_files_change_only_what_the_net_and_data_take():
    from proj.extras.diagnose import fixes

    config = yaml.safe_load(Path(DEFAULT).read_text())
    bigger = fixes.bigger_net(config)["model"]["init_args"]["net"]["init_args"]
    assert bigger == {"widths": [128, 256], "dropout": 0.1}  # SmallCNN has no batch_norm or activation to set
    assert fixes.normalised_net(config, "relu") is None
    lower = fixes.scale_lr(config, 0.1)["model"]["init_args"]["optim"]["stages"]
    assert lower[0]["optimizer"]["init_args"]["lr"] == pytest.approx(3e-4)
    assert lower[0]["lr_scheduler"] == config["model"]["init_args"]["optim"]["stages"][0]["lr_scheduler"]
