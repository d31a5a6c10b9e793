"""Fault tolerance: kill and resume equals an uninterrupted run, preemption, NaN stop, hostile checkpoints,
determinism, mixed precision on CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from proj.callbacks import NonFiniteLossError
from proj.models import Classifier

from conftest import CONFIGS, DEFAULT, QUICK, ROOT, cli

pytestmark = pytest.mark.slow

# Dropout, augmentation and MixUp all draw random numbers: a resume that lost the RNG state would diverge.
RUN = [
    "fit",
    "--config",
    DEFAULT,
    "--config",
    str(CONFIGS / "experiment" / "digits_augmented.yaml"),
    "--trainer.max_epochs=3",
    "--trainer.limit_train_batches=6",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--test_after_fit=false",
]
RUN_DIR = Path("logs/digits_augmented/version_0")


def proj(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "proj", *args], cwd=cwd, env=env, capture_output=True, text=True)


def killer(epoch: int, batch: int, signal: str) -> str:
    spec = (
        f'{{"class_path": "helpers.KillAt", "init_args": {{"epoch": {epoch}, "batch": {batch}, "signal": "{signal}"}}}}'
    )
    return f"--trainer.callbacks+={spec}"


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    done = proj(straight, *RUN)
    assert done.returncode == 0, done.stderr[-3000:]

    crashed = proj(killed, *RUN, killer(epoch=1, batch=3, signal="SIGKILL"))
    assert crashed.returncode == -9  # SIGKILL in the middle of epoch 1: nothing could be saved then
    resumed = proj(killed, "fit", "--resume", str(RUN_DIR))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = weights(straight / RUN_DIR / "checkpoints/last.ckpt"), weights(killed / RUN_DIR / "checkpoints/last.ckpt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bitwise: same data order, dropout, augmentation, optimizer
    assert sorted(p.name for p in (killed / "logs/digits_augmented").iterdir()) == ["version_0"]  # same run dir
    assert len(list((killed / RUN_DIR).glob("events.out.tfevents.*"))) == 2  # the resumed curves continue there


def test_preempted_run_saves_a_checkpoint_and_resume_completes(tmp_path):
    stopped = proj(tmp_path, *RUN, killer(epoch=1, batch=3, signal="SIGTERM"))
    last = tmp_path / RUN_DIR / "checkpoints/last.ckpt"
    assert "Preempted: saved" in stopped.stderr + stopped.stdout
    checkpoint = torch.load(last, weights_only=True)
    # Saved at the signal, mid-epoch (6 steps of epoch 0, then 3 of epoch 1 and the batch in flight).
    assert checkpoint["global_step"] == 6 + 4
    resumed = proj(tmp_path, "fit", "--resume", str(RUN_DIR))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, weights_only=True)["epoch"] == 2  # the last of max_epochs=3


def test_a_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(in_tmp):
    blow_up = in_tmp / "blow_up.yaml"
    blow_up.write_text(
        "model:\n  init_args:\n    optim:\n      stages:\n"
        "        - optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.01}}\n"
        "        - start_epoch: 1\n"
        "          optimizer: {class_path: torch.optim.SGD, init_args: {lr: 1.0e+30}}\n"  # overflows float32 at once
    )
    with pytest.raises(NonFiniteLossError, match=r"became non-finite .* at optimizer step \d+ \(epoch 1\)"):
        cli(
            "fit",
            "--config",
            DEFAULT,
            *QUICK,
            "--trainer.max_epochs=3",
            "--trainer.gradient_clip_val=null",
            "--config",
            str(blow_up),
        )
    last = in_tmp / "logs/default/version_0/checkpoints/last.ckpt"
    model = Classifier.load_from_checkpoint(last)  # intact and loadable
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.load(last, weights_only=True)["epoch"] == 0


class Payload:
    """Unpickling this runs code: it creates a file."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_with_a_pickled_payload_is_refused_by_default(in_tmp):
    cli("fit", "--config", DEFAULT, *QUICK, "--test_after_fit=false")
    checkpoint = torch.load(in_tmp / "logs/default/version_0/checkpoints/last.ckpt", weights_only=True)
    checkpoint["payload"] = Payload(str(in_tmp / "pwned"))
    torch.save(checkpoint, in_tmp / "hostile.ckpt")
    refusal = r"Refused to load a checkpoint .*hostile.ckpt: it holds a pickled reference to io.open"
    with pytest.raises(SystemExit, match=refusal + r".*--weights_only false"):
        cli("fit", "--config", DEFAULT, *QUICK, "--trainer.max_epochs=3", f"--ckpt_path={in_tmp / 'hostile.ckpt'}")
    assert not (in_tmp / "pwned").exists()  # the payload never ran


def test_weights_only_false_is_the_explicit_opt_out_for_trusted_files(in_tmp):
    import datetime

    cli("fit", "--config", DEFAULT, *QUICK, "--test_after_fit=false")
    checkpoint = torch.load(in_tmp / "logs/default/version_0/checkpoints/last.ckpt", weights_only=True)
    checkpoint["note"] = datetime.date(2026, 1, 1)  # harmless, but not a plain tensor / number / string
    torch.save(checkpoint, in_tmp / "trusted.ckpt")
    result = cli(
        "fit", "--config", DEFAULT, *QUICK, "--trainer.max_epochs=3", "--test_after_fit=false",
        f"--ckpt_path={in_tmp / 'trusted.ckpt'}", "--weights_only=false",
    )  # fmt: skip
    assert result.trainer.current_epoch == 3


def test_two_seeded_runs_are_identical(in_tmp):
    runs = [cli("fit", "--config", DEFAULT, *QUICK, "--seed_everything=3") for _ in range(2)]
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (r.trainer.callback_metrics for r in runs)
    assert {k: float(v) for k, v in ma.items()} == {k: float(v) for k, v in mb.items()}


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_runs_on_cpu(in_tmp, precision):
    result = cli("fit", "--config", DEFAULT, *QUICK, f"--trainer.precision={precision}")
    assert result.trainer.precision == "bf16-mixed"  # CPU autocast is bf16; Lightning maps 16-mixed to it
    assert torch.isfinite(result.trainer.callback_metrics["test/loss"])
