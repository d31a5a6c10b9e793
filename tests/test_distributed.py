"""Scaling by flags only: 2-process DDP and FSDP2 on CPU through the real CLI, and two simulated nodes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from proj.data import DigitsDataModule
from proj.data.sampling import ClassBalancedSampler
from proj.models import Classifier

from conftest import CONFIGS, DEFAULT, ROOT
from helpers import digits_as_png_folder, free_port

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ARGS = [
    "fit",
    "--config",
    DEFAULT,
    "--trainer.accelerator=cpu",
    "--trainer.max_epochs=3",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    '--trainer.callbacks+={"class_path": "helpers.RecordRank"}',
]


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",  # two processes on two cores
    }


def run(cwd: Path, *args: str, timeout: int = 600, status: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "proj", *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == status, done.stderr[-4000:]
    return done


def records(cwd: Path) -> list[dict]:
    return [json.loads((cwd / f"record_rank{r}.json").read_text()) for r in range(2)]


def single_process_test_accuracy(checkpoint: Path) -> float:
    import lightning.pytorch as L

    model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    (metrics,) = trainer.test(model, datamodule=DigitsDataModule(), ckpt_path=None, verbose=False)
    return metrics["test/acc"]


def one_run_dir(cwd: Path) -> Path:
    runs = list((cwd / "logs" / "default").iterdir())
    assert [r.name for r in runs] == ["version_0"]
    assert (runs[0] / "config.yaml").is_file()
    return runs[0]


def test_ddp_device_resident_batches_share_one_resampled_epoch(tmp_path):
    flags = ["--trainer.strategy=ddp", "--trainer.devices=2", "--data.init_args.sampler=oversample"]
    run(tmp_path, *ARGS, *flags, "--data.init_args.device_resident=true", "--test_after_fit=false")
    run_dir = one_run_dir(tmp_path)
    first, second = records(tmp_path)
    assert first["world_size"] == second["world_size"] == 2
    # Each rank draws its own half of the oversampled epoch: the device-resident batches shard it themselves.
    assert first["sampler"] == "DeviceBatches"
    assert len(first["share"]) == len(second["share"])
    epoch = list(ClassBalancedSampler(DigitsDataModule().train_labels(), "oversample", seed=0))
    assert sorted(first["share"] + second["share"]) == sorted(epoch)  # together: exactly one resampled epoch
    assert first["share"] != second["share"]
    assert single_process_test_accuracy(run_dir / "checkpoints" / "last.ckpt") > 0.5  # chance is 0.1


def test_ddp_on_a_lazy_image_folder_reads_every_training_image_once_across_the_ranks(tmp_path):
    root = digits_as_png_folder(tmp_path / "digits")
    folder = ["--data=proj.data.ImageFolderDataModule", f"--data.root={root}", "--data.image_size=[8, 8]",
              "--data.grayscale=true", "--data.num_workers=1"]  # fmt: skip
    # One epoch, no test: the ranks' shares of an epoch are the point (worker processes on two ranks of a busy
    # machine are slow to start).
    one_epoch = ["--trainer.max_epochs=1", "--trainer.limit_val_batches=2", "--test_after_fit=false"]
    run(tmp_path, *ARGS, "--trainer.strategy=ddp", "--trainer.devices=2", *folder, *one_epoch)
    run_dir = one_run_dir(tmp_path)
    first, second = records(tmp_path)
    assert first["sampler"] == "DistributedSamplerWrapper"  # Lightning shards the loader's epoch order
    assert len(first["share"]) == len(second["share"]) == 350
    assert sorted(first["share"] + second["share"]) == list(range(700))  # each of the 700 images once
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0  # the epoch ran


def test_fsdp2_shards_parameters_and_reloads_in_one_process(tmp_path):
    run(tmp_path, *ARGS, "--config", str(CONFIGS / "trainer" / "fsdp2.yaml"), "--trainer.devices=2")
    run_dir = one_run_dir(tmp_path)
    first, second = records(tmp_path)
    assert first["param_is_dtensor"] and second["param_is_dtensor"]
    assert first["local_numel"] < first["full_numel"]  # each rank holds a shard
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()  # gathered into one file
    assert single_process_test_accuracy(checkpoint) > 0.5


def recipes_stack() -> list[str]:
    """RandAugment, drop-path and layer decay, with the optim_extras extra's AGC and SAM where it is present."""
    files = ["augment/randaugment.yaml", "model/resnet20_drop_path.yaml", "optim/layer_decay.yaml"]
    files += [f for f in ("callbacks/agc.yaml", "optim/sam.yaml") if (CONFIGS / f).is_file()]
    return [*(arg for f in files for arg in ("--config", str(CONFIGS / f))), "--model.init_args.net.init_args.depth=8"]


def test_ddp_yaml_with_a_stack_of_recipes_stops_on_sigterm_mid_epoch_and_resumes_bitwise(tmp_path):
    """configs/trainer/ddp.yaml on two CPU processes, stacked with recipes of docs/techniques.md (SAM's two passes
    are two gradient all-reduces a step): it asks for SyncBatchNorm, which torch runs on GPUs only, so on CPUs it
    is switched off with one info line instead of failing in every process, and the run saves finite weights.
    The same run signalled mid-epoch exits non-zero and resumes to those weights bitwise. One two-process run
    checks both (each costs two interpreters that import torch and Lightning)."""
    # Ranks seeded apart: each has its own drop-path, augmentation and MixUp stream, which the checkpoint must
    # keep for each rank. Only rank 0 is signalled; every rank has to stop at the same batch.
    flags = [
        "--config", str(CONFIGS / "experiment" / "digits_augmented.yaml"), *recipes_stack(),
        "--config", str(CONFIGS / "trainer" / "ddp.yaml"), "--trainer.devices=2", "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1", "--test_after_fit=false",
        '--trainer.callbacks+={"class_path": "helpers.SeedPerRank"}',
    ]  # fmt: skip
    kill = '{"class_path": "helpers.KillAt", "init_args": {"epoch": 1, "batch": 1, "signal": "SIGTERM", "rank": 0}}'
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    straight.mkdir(), stopped.mkdir()
    done = run(straight, *ARGS, *flags)
    assert done.stderr.count("trainer.sync_batchnorm=true needs GPUs") == 1, done.stderr[-3000:]
    last = Path("logs/digits_augmented/version_0/checkpoints/last.ckpt")
    weights = torch.load(straight / last, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    done = run(stopped, *ARGS, *flags, f"--trainer.callbacks+={kill}", status=143)
    assert torch.load(stopped / last, weights_only=True)["global_step"] == 4 + 2, done.stderr[-3000:]
    run(stopped, "fit", "--resume", str(last.parent.parent), "--trainer.devices=2")
    a, b = (torch.load(d / last, weights_only=True)["state_dict"] for d in (straight, stopped))
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def torchrun(cwd: Path, node_rank: int, port: int) -> subprocess.Popen:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={node_rank}"]
    launcher += ["--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}"]
    flags = ["--trainer.strategy=ddp", "--trainer.num_nodes=2", "--trainer.devices=1"]
    return subprocess.Popen(
        [*launcher, "-m", "proj", *ARGS, *flags],
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_nodes_simulated_with_torchrun(tmp_path):
    port = free_port()
    nodes = [torchrun(tmp_path, rank, port) for rank in range(2)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-4000:]
    first, second = records(tmp_path)
    assert first["world_size"] == second["world_size"] == 2
    assert torch.load(one_run_dir(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
