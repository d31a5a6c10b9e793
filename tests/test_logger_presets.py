"""The CSV and TensorBoard logger presets (configs/logger/, Lightning's own loggers) read back from what they wrote."""

import csv

import pytest

from test_default_run import reference_lrs

from conftest import CONFIGS, cli_in
from helpers import RUN, RUN_DIR, proj

pytestmark = pytest.mark.xdist_group("csv_run")  # the session's CSV run, trained by one worker


def test_csv_preset_writes_metrics_into_the_run_directory(csv_run):
    run_dir, result, _ = csv_run
    assert (run_dir / "config.yaml").is_file() and list((run_dir / "checkpoints").glob("best-*.ckpt"))
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    test_acc = [float(r["test/acc"]) for r in rows if r.get("test/acc")]
    assert test_acc == [pytest.approx(float(result.trainer.callback_metrics["test/acc"]))]
    assert sum(1 for r in rows if r.get("val/loss")) == 2  # one per epoch


def test_the_lr_of_every_optimizer_step_is_logged_not_only_every_log_every_n_steps(csv_run):
    run_dir, result, _ = csv_run
    with open(run_dir / "metrics.csv") as f:
        logged = [(int(r["step"]), float(r["lr/default"])) for r in csv.DictReader(f) if r.get("lr/default")]
    steps = result.trainer.global_step  # 6, fewer than log_every_n_steps=10: Lightning's monitor logs none
    assert [step for step, _ in logged] == list(range(steps))
    expected = reference_lrs(total_steps=steps, steps=steps)  # torch's own warmup + cosine, stepped by hand
    assert [lr for _, lr in logged] == pytest.approx(expected[:steps], rel=1e-6)


@pytest.mark.slow  # real processes
def test_a_killed_run_resumed_with_the_csv_preset_keeps_every_epoch_of_its_history(tmp_path):
    """SIGKILL at the start of epoch 2, then --resume: metrics.csv holds every epoch's values, equal to an
    uninterrupted run's (Lightning's CSVLogger deleted the rows of epochs 0 and 1 when the run logged again)."""
    csv_preset = ["--config", str(CONFIGS / "logger" / "csv.yaml")]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for folder in (straight, killed):
        folder.mkdir()
    cli_in(straight, *RUN, *csv_preset)  # in-process: only the killed run needs a process of its own
    spec = '{"epoch": 2, "batch": 0, "signal": "SIGKILL"}'
    done = proj(
        killed, *RUN, *csv_preset, f'--trainer.callbacks+={{"class_path": "helpers.KillAt", "init_args": {spec}}}'
    )
    assert done.returncode == -9
    cli_in(killed, "fit", "--resume", str(RUN_DIR), "--trainer.enable_progress_bar=false")

    def val_losses(folder):
        with open(folder / RUN_DIR / "metrics.csv") as f:
            return [(row["epoch"], float(row["val/loss"])) for row in csv.DictReader(f) if row.get("val/loss")]

    assert [epoch for epoch, _ in val_losses(straight)] == ["0", "1", "2"]
    assert val_losses(killed) == val_losses(straight)  # every epoch, the same values: a bitwise resume
