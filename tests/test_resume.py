"""Fault tolerance: kill and resume equals an uninterrupted run, preemption, NaN stop, hostile checkpoints,
determinism, mixed precision on CPU."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from proj.callbacks.checkpointing import save_last_atomically
from proj.models import Classifier

from conftest import DEFAULT, QUICK, cli, cli_in
from helpers import RUN, RUN_DIR, kill_at, proj

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("resume")]  # its module fixture is built once


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def kill_in_save(**init_args) -> str:
    """The checkpoint writer replaced by one that SIGKILLs the process inside a save (tests/helpers.py)."""
    spec = {"class_path": "helpers.KillInSave", "init_args": init_args}
    return f"--trainer.plugins=[{json.dumps(spec)}]"


FREEZE_BEST = '--trainer.callbacks+={"class_path": "helpers.FreezeBest", "init_args": {"epoch": 1}}'


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of RUN uninterrupted, which every killed and resumed run must reach bitwise. In this
    process: only a run that is killed needs a process of its own (a new one imports torch and Lightning again)."""
    workdir = tmp_path_factory.mktemp("straight")
    cli_in(workdir, *RUN)
    return weights(workdir / RUN_DIR / "checkpoints/last.ckpt")


def resume_and_compare(workdir: Path, straight: dict[str, torch.Tensor]) -> None:
    last = workdir / RUN_DIR / "checkpoints/last.ckpt"
    assert last.is_file(), sorted(p.name for p in last.parent.iterdir())  # a complete last.ckpt survived
    torch.load(last, weights_only=True)  # complete: it loads
    cli_in(workdir, "fit", "--resume", str(RUN_DIR))  # in this process, which raises if it fails
    final = weights(last)
    assert final.keys() == straight.keys()
    for key in final:
        assert torch.equal(final[key], straight[key]), key  # bitwise: same data order, dropout, augmentation


def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path, straight):
    crashed = proj(tmp_path, *RUN, kill_at(epoch=1, batch=3, signal="SIGKILL"))
    assert crashed.returncode == -9  # SIGKILL in the middle of epoch 1: nothing could be saved then
    resume_and_compare(tmp_path, straight)
    assert sorted(p.name for p in (tmp_path / "logs/digits_augmented").iterdir()) == ["version_0"]  # same run dir
    assert len(list((tmp_path / RUN_DIR).glob("events.out.tfevents.*"))) == 2  # the resumed curves continue there


def test_a_kill_inside_the_save_of_last_ckpt_leaves_the_previous_one(tmp_path, straight):
    # Epoch 1 brings no new best (FreezeBest), so last.ckpt, a link to best-00.ckpt, is replaced by a file:
    # killed once that file is written, before it is renamed over the link. Lightning removed the link first.
    crashed = proj(tmp_path, *RUN, FREEZE_BEST, kill_in_save(name="last.ckpt", phase="written"))
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    assert (tmp_path / "killed.marker").read_text().startswith("last.ckpt written epoch 1")
    assert torch.load(tmp_path / RUN_DIR / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 0
    resume_and_compare(tmp_path, straight)


def test_a_kill_between_saving_a_new_best_and_linking_last_ckpt_to_it(tmp_path, straight):
    crashed = proj(tmp_path, *RUN, kill_in_save(nth=2, phase="renamed"))  # epoch 1's save, in its place
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    assert "epoch 1" in (tmp_path / "killed.marker").read_text()
    resume_and_compare(tmp_path, straight)


def test_a_copied_run_directory_resumes_in_its_new_place(in_tmp):
    cli("fit", "--config", DEFAULT, *QUICK, "--trainer.max_epochs=1", "--test_after_fit=false")
    original = in_tmp / "logs/default/version_0"
    moved = in_tmp / "elsewhere/logs/default/version_0"
    shutil.copytree(original, moved, symlinks=True)  # last.ckpt is a relative link to best-00.ckpt
    before = sorted(p.relative_to(original) for p in original.rglob("*"))
    checkpoints = moved / "checkpoints"
    state = torch.load(checkpoints / "last.ckpt", weights_only=True)["callbacks"]
    (ours,) = (v for k, v in state.items() if k.startswith("ModelCheckpoint"))
    stored = [ours["best_model_path"], ours["last_model_path"], *ours["best_k_models"]]
    assert stored[0] == "best-00.ckpt" and not any(os.path.dirname(p) for p in stored)  # relative to its folder

    result = cli("fit", "--resume", str(moved), "--trainer.max_epochs=2")  # tests the best checkpoint after fit
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 1
    assert not list(checkpoints.glob("last-v*")), sorted(p.name for p in checkpoints.iterdir())
    assert Path(result.trainer.checkpoint_callback.best_model_path).parent == checkpoints
    assert sorted(p.relative_to(original) for p in original.rglob("*")) == before  # the original is untouched
    assert torch.load(original / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 0

    cli("fit", "--resume", str(moved), "--trainer.max_epochs=3", "--test_after_fit=false")
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 3 * 3)
    assert len(list(checkpoints.glob("best-*.ckpt"))) == 1  # top-k kept its state: the older best was removed


def test_save_last_atomically_replaces_a_link_by_a_file_and_leaves_the_best_alone(in_tmp):
    result = cli("fit", "--config", DEFAULT, *QUICK, "--trainer.max_epochs=1", "--test_after_fit=false")
    checkpoints = in_tmp / "logs/default/version_0/checkpoints"
    last, best = checkpoints / "last.ckpt", checkpoints / "best-00.ckpt"
    assert last.is_symlink()
    best_bytes = best.read_bytes()
    save_last_atomically(result.trainer, last)
    assert not last.is_symlink() and torch.load(last, weights_only=True)["global_step"] == 3  # complete
    assert best.read_bytes() == best_bytes  # not written through the link
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best-00.ckpt", "last.ckpt"]  # no temporary left


def second_stage_blow_up(folder: Path) -> str:
    """A config whose second stage (from epoch 1) is SGD at lr 1e30: float32 overflows at its first step."""
    path = folder / "blow_up.yaml"
    path.write_text(
        "model:\n  init_args:\n    optim:\n      stages:\n"
        "        - optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.01}}\n"
        "        - start_epoch: 1\n"
        "          optimizer: {class_path: torch.optim.SGD, init_args: {lr: 1.0e+30}}\n"
    )
    return str(path)


def assert_last_is_epoch_0_and_finite(run_dir: Path) -> None:
    last = run_dir / "checkpoints/last.ckpt"
    model = Classifier.load_from_checkpoint(last)  # intact and loadable
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.load(last, weights_only=True)["epoch"] == 0
    for path in (run_dir / "checkpoints").glob("*.ckpt"):  # nothing of the blown-up epoch, best or last
        assert torch.load(path, weights_only=True)["epoch"] == 0, path


def test_a_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(in_tmp):
    with pytest.raises(SystemExit, match=r"became non-finite .* at optimizer step \d+ \(epoch 1\)"):
        cli(
            "fit", "--config", DEFAULT, *QUICK, "--trainer.max_epochs=3", "--trainer.gradient_clip_val=null",
            "--config", second_stage_blow_up(in_tmp),
        )  # fmt: skip
    assert_last_is_epoch_0_and_finite(in_tmp / "logs/default/version_0")


def test_a_blow_up_in_the_last_step_of_an_epoch_is_caught_before_its_checkpoint(in_tmp):
    # One step an epoch: its loss is computed before the update that ruins the weights, so no training loss
    # shows it; the weights (huge or NaN) and the validation loss do. Lightning saved them as last.ckpt.
    with pytest.raises(SystemExit, match=r"(weights|val/loss) .* at optimizer step 2 \(epoch 1\).*last\.ckpt"):
        cli(
            "fit", "--config", DEFAULT, *QUICK, "--trainer.max_epochs=3", "--trainer.gradient_clip_val=null",
            "--trainer.limit_train_batches=1", "--config", second_stage_blow_up(in_tmp),
        )  # fmt: skip
    assert_last_is_epoch_0_and_finite(in_tmp / "logs/default/version_0")


def test_adamw_at_lr_1e6_exits_non_zero_naming_the_epoch_and_writes_no_checkpoint(in_tmp, capfd):
    blow_up = in_tmp / "adamw.yaml"
    blow_up.write_text(
        "model:\n  init_args:\n    optim:\n      stages:\n"
        "        - optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 1.0e+6}}\n"
    )
    with pytest.raises(SystemExit) as done:
        cli("fit", "--config", DEFAULT, *QUICK, "--config", str(blow_up))
    message = done.value.code  # what `python -m proj` prints to stderr before it exits with status 1
    assert isinstance(message, str), message
    assert re.search(r"non-finite .* at optimizer step \d+ \(epoch 0\).*Lower the learning rate", message)
    out, err = capfd.readouterr()
    assert "test/loss" not in out + err + message  # the blown-up weights were not tested either
    assert not list((in_tmp / "logs").rglob("*.ckpt"))  # no best-00.ckpt of NaN weights, no last.ckpt


def test_early_stopping_says_why_it_stopped(in_tmp, caplog):
    stop = json.dumps(
        {
            "class_path": "proj.callbacks.EarlyStoppingWithReason",
            # mode max: another state key than the default config's; any cross-entropy is above 0
            "init_args": {"monitor": "val/loss", "mode": "max", "stopping_threshold": 0.0},
        }
    )
    with caplog.at_level("INFO"):
        result = cli("fit", "--config", DEFAULT, *QUICK, "--test_after_fit=false", f"--trainer.callbacks+={stop}")
    assert result.trainer.current_epoch == 1  # stopped after epoch 0 of 2
    assert "Early stopping after epoch 0: Stopping threshold reached: val/loss" in caplog.text


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
