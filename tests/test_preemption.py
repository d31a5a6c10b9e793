"""Preemption: SIGTERM mid-epoch saves last.ckpt and exits 143, and the resumed run is bitwise the uninterrupted
one, on both training-data paths; SLURM's SIGUSR1 requeue, with a fake scontrol."""

import logging
import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from proj.data.device import DeviceBatches
from proj.data.sampling import EpochShuffle, ResumableLoader

from conftest import cli_in
from helpers import ROOT, RUN, RUN_DIR, kill_at, logged, proj

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("preemption")]  # its module fixture is built once

LAST = RUN_DIR / "checkpoints" / "last.ckpt"


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key  # bitwise: same batches, dropout, augmentation, optimizer


def test_a_loader_given_its_checkpointed_state_continues_with_the_next_batch_of_that_epoch():
    x, y = torch.arange(40.0).view(40, 1), torch.arange(40)
    for make in (
        lambda: DeviceBatches(x, y, batch_size=8, seed=3),
        lambda: ResumableLoader(TensorDataset(x, y), batch_size=8, sampler=EpochShuffle(40, seed=3)),
    ):
        straight, resumed = make(), make()
        straight.sampler.set_epoch(1)
        batches = iter(straight)
        order = [next(batches)[1] for _ in range(2)]
        state = straight.state_dict()  # what Lightning saves: epoch 1, 2 batches handed out
        order += [b for _, b in batches]
        resumed.load_state_dict(state)
        resumed.sampler.set_epoch(1)
        rest = [b for _, b in resumed]
        assert len(rest) == 3 and all(torch.equal(a, b) for a, b in zip(order[2:], rest, strict=True))
        resumed.sampler.set_epoch(2)
        assert len(list(resumed)) == 5  # the next epoch starts at its beginning


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """last.ckpt of the uninterrupted RUN on each training-data path, made once (in-process)."""
    made: dict[tuple[str, ...], Path] = {}

    def last(resident: str, *more: str) -> Path:
        key = (resident, *more)
        if key not in made:
            workdir = tmp_path_factory.mktemp(f"uninterrupted_{resident}")
            cli_in(workdir, *RUN, f"--data.init_args.device_resident={resident}", *more)
            made[key] = workdir / LAST
        return made[key]

    return last


def preempted(workdir: Path, args: list[str], caplog, monkeypatch, own_process: bool = False) -> tuple[int, str]:
    """`python -m proj ARGS` run until the signal that KillAt sends it: (its exit status, what it logged). In a
    process of its own where `own_process` (the status a shell sees), else in this one, where `python -m proj`
    raises the SystemExit that is that status (KillAt signals its own process either way; a new process would
    only import torch and Lightning again, about 8 s)."""
    if own_process:
        done = proj(workdir, *args)
        return done.returncode, done.stderr
    monkeypatch.setattr(logging.getLogger("lightning.pytorch"), "handlers", [caplog.handler])  # it does not propagate
    with pytest.raises(SystemExit) as stopped:
        cli_in(workdir, *args)
    return stopped.value.code, caplog.text


# `data.init_args.device_resident`: the digits fit the device (true, the default "auto"), or a DataLoader. The
# first one is stopped in a process of its own, the status a scheduler sees; the others in this process.
@pytest.mark.parametrize("resident", ["true", "false"], ids=["device_resident", "dataloader"])
def test_sigterm_mid_epoch_exits_non_zero_and_resumes_bitwise(tmp_path, uninterrupted, resident, caplog, monkeypatch):
    run = [*RUN, f"--data.init_args.device_resident={resident}"]
    args = [*run, kill_at(epoch=1, batch=3, signal="SIGTERM")]
    status, err = preempted(tmp_path, args, caplog, monkeypatch, own_process=resident == "true")
    assert status == 143, err[-3000:]  # 128 + SIGTERM: not taken for a finished run
    assert "Preempted: saved" in err
    assert torch.load(tmp_path / LAST, weights_only=True)["global_step"] == 6 + 4  # mid-epoch 1, after batch 3
    cli_in(tmp_path, "fit", "--resume", str(RUN_DIR))  # the rest of epoch 1 from batch 4, then epoch 2
    assert_same_weights(uninterrupted(resident), tmp_path / LAST)
    # and the interrupted epoch's train/ values, from the metric states saved with it (once 0.0 and a partial mean)
    for tag in ("train/loss_epoch", "train/acc", "train/f1"):
        assert logged(tmp_path / RUN_DIR, tag) == logged(uninterrupted(resident).parents[1], tag), tag


def test_sigterm_mid_epoch_with_schedule_free_resumes_bitwise(tmp_path, uninterrupted, caplog, monkeypatch):
    """Schedule-Free trains at y and checkpoints x (its averaged weights): the checkpoint also holds y, which the
    resumed run starts from; y rebuilt from x differs in the last bits (1e-7 after two epochs)."""
    schedule_free = ("--config", str(ROOT / "configs" / "optim" / "schedulefree_adamw.yaml"))
    run = [*RUN, "--data.init_args.device_resident=true", *schedule_free]
    status, err = preempted(tmp_path, [*run, kill_at(epoch=1, batch=3, signal="SIGTERM")], caplog, monkeypatch)
    assert status == 143, err[-3000:]
    cli_in(tmp_path, "fit", "--resume", str(RUN_DIR))
    assert_same_weights(uninterrupted("true", *schedule_free), tmp_path / LAST)


def test_sigterm_inside_an_accumulation_window_stops_at_its_end_and_resumes_bitwise(
    tmp_path, uninterrupted, caplog, monkeypatch
):
    """A signal after the first batch of a 2-batch window: the run stops once the window's optimizer step is
    done, not with half a window of summed gradients that no checkpoint holds."""
    run = [*RUN, "--data.init_args.device_resident=true", "--trainer.accumulate_grad_batches=2"]
    kill = kill_at(epoch=1, batch=2, signal="SIGTERM")  # before batch 2: the window's first
    status, err = preempted(tmp_path, [*run, kill], caplog, monkeypatch)
    assert status == 143, err[-3000:]
    assert torch.load(tmp_path / LAST, weights_only=True)["global_step"] == 3 + 2  # after batch 3, the window's end
    cli_in(tmp_path, "fit", "--resume", str(RUN_DIR))
    assert_same_weights(uninterrupted("true", "--trainer.accumulate_grad_batches=2"), tmp_path / LAST)


def test_slurm_requeue_on_sigusr1_saves_an_hpc_checkpoint_and_the_requeued_job_resumes_from_it(
    tmp_path, uninterrupted, monkeypatch, caplog
):
    # What Lightning needs to pick its SLURMEnvironment (auto-requeue on), and an scontrol that logs its call.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\necho "$@" >> "$SCONTROL_LOG"\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "proj", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "1", "SLURM_NODELIST": "localhost", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0", "SCONTROL_LOG": str(tmp_path / "scontrol.log"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }  # fmt: skip
    run = [*RUN, "--data.init_args.device_resident=true"]
    run += ["--trainer.logger.init_args.version=slurm_4242", "--trainer.default_root_dir=logs/hpc/4242"]  # as sbatch
    done = proj(tmp_path, *run, kill_at(epoch=1, batch=3, signal="SIGUSR1"), env=slurm)
    assert done.returncode == 128 + 10, done.stderr[-3000:]  # as SIGUSR1 would
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    hpc = Path("logs/hpc/4242/hpc_ckpt_1.ckpt")  # Lightning's, in the trainer's default_root_dir
    assert torch.load(tmp_path / hpc, weights_only=True)["global_step"] == 6 + 4  # where every rank stopped

    # The requeued job: the same command line, job id and environment, run in this process (the first run had to
    # end by its signal in a process of its own; this one only has to run to its end, raising nothing).
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(logging.getLogger("lightning.pytorch"), "handlers", [caplog.handler])  # it does not propagate
    cli_in(tmp_path, *run)
    assert f"Restoring states from the checkpoint path at {hpc}" in caplog.text
    assert_same_weights(uninterrupted("true"), tmp_path / "logs/digits_augmented/slurm_4242/checkpoints/last.ckpt")
