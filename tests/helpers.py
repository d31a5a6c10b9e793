"""Callbacks that tests put into real `python -m proj` processes (PYTHONPATH=tests), by class_path, and the short
augmented run that the kill, preemption and fault-injection checks interrupt."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from proj.callbacks import AtomicCheckpointIO

ROOT = Path(__file__).resolve().parents[1]
# Dropout, augmentation and MixUp all draw random numbers: a resume that lost or shifted any of them would diverge.
RUN = [
    "fit",
    "--config",
    str(ROOT / "configs" / "default.yaml"),
    "--config",
    str(ROOT / "configs" / "experiment" / "digits_augmented.yaml"),
    "--trainer.max_epochs=3",
    "--trainer.limit_train_batches=6",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--test_after_fit=false",
]
RUN_DIR = Path("logs/digits_augmented/version_0")
DEFAULT = str(ROOT / "configs" / "default.yaml")


def stacked(*configs: str) -> list[str]:
    """--config arguments: the default config with `configs` stacked on it."""
    return ["--config", DEFAULT, *(arg for c in configs for arg in ("--config", c))]


# The recipes' stacks (tests/test_techniques.py, tests/extras/): 2 batches an epoch, no test.
TINY = [
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--test_after_fit=false",
]


def resumed_equals_straight(folder: Path, args: list[str], probes: list[Callback] = ()) -> torch.nn.Module:
    """Fit `args` for its epochs (with `probes` watching), keeping a checkpoint of each epoch; fit again from the
    first epoch's checkpoint: the final weights must be bitwise those of the uninterrupted run (data order,
    augmentation, drop-path, SAM's two passes, Lookahead's slow weights, the unfreezing epochs, the schedule)."""
    from proj.cli.run import lightning_main, run_fit

    every = ModelCheckpoint(dirpath=folder / "every", save_top_k=-1, filename="{epoch}")
    straight = run_fit(args, [every, *probes]).model
    resumed = lightning_main(args, run=False)
    resumed.trainer.fit(resumed.model, datamodule=resumed.datamodule, ckpt_path=folder / "every" / "epoch=0.ckpt")
    final, reference = resumed.model.state_dict(), straight.state_dict()
    assert final.keys() == reference.keys()
    for key in final:
        assert torch.equal(final[key], reference[key]), key
    return resumed.model


def free_port() -> int:
    """A port nothing listens on, for a server a test starts (or one that must not answer)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_at(epoch: int, batch: int, signal: str) -> str:
    spec = f'{{"epoch": {epoch}, "batch": {batch}, "signal": "{signal}"}}'
    return f'--trainer.callbacks+={{"class_path": "helpers.KillAt", "init_args": {spec}}}'


def logged(run: Path, tag: str) -> dict[int, float]:
    """Every value of a scalar in a run's TensorBoard files (a resumed run adds a file), by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = {}
    for events in sorted(run.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events)).Reload()
        if tag in accumulator.Tags()["scalars"]:
            values.update({e.step: e.value for e in accumulator.Scalars(tag)})
    return values


def proj(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m proj ARGS` in a real process inside `cwd`, which can load these callbacks."""
    path = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, **(env or {}), "PYTHONPATH": path}
    command = [sys.executable, "-m", "proj", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


class KillAt(Callback):
    """Send `signal` to this process at (epoch, batch) of training, once: a marker file remembers it.
    With `rank`, only that rank's process is signalled (a scheduler that tells one process)."""

    def __init__(
        self, epoch: int, batch: int, signal: str = "SIGKILL", marker: str = "killed.marker", rank: int | None = None
    ):
        self.epoch, self.batch, self.signal, self.marker, self.rank = epoch, batch, signal, Path(marker), rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and not self.marker.exists():
            self.marker.write_text(f"{trainer.global_step}")
            os.kill(os.getpid(), getattr(signal, self.signal))


class SeedPerRank(Callback):
    """Seed each rank's RNGs apart when a fit starts fresh (different dropout / augmentation per rank)."""

    def on_train_start(self, trainer, pl_module):
        if trainer.ckpt_path is None:
            torch.manual_seed(1000 + trainer.global_rank)


def predict_rows(run_dir: Path, ckpt: str, *options: str) -> list[dict[str, str]]:
    """`predict` with a checkpoint and its run's config.yaml (and `options`), from the fit's working directory
    (where the checkpoint path is relative to): the rows of the run's predict/predictions.csv."""
    import csv

    from proj.cli import main

    old = os.getcwd()
    os.chdir(run_dir.parents[2])
    try:
        main(
            [
                "predict",
                "--config",
                str(run_dir / "config.yaml"),
                f"--ckpt_path={ckpt}",
                "--trainer.enable_progress_bar=false",
                *options,
            ]
        )
    finally:
        os.chdir(old)
    with open(run_dir / "predict" / "predictions.csv") as f:
        return list(csv.DictReader(f))


def digits_as_png_folder(root: Path, count: int = 1000) -> Path:
    """The first `count` bundled digits as 8x8 grayscale PNGs, one folder per class (0.7 of them for training)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images[:count], digits.target[:count], strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * 15).astype("uint8")).save(root / str(label) / f"{i}.png")
    return root


class RecordSeen(Callback):
    """Write a digest of every training sample this rank sees in epoch 0 to seen_rank<r>.json: each batch's
    inputs brought back from the device's standardised floats to the stored uint8 pixels."""

    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 0:
            dm = trainer.datamodule
            mean, std = (torch.tensor(dm.stats[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
            pixels = ((batch[0] * std + mean) / dm.scale).round().to(torch.uint8)
            self.seen += [hashlib.sha1(p.numpy().tobytes()).hexdigest() for p in pixels]

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            Path(f"seen_rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


class RecordRank(Callback):
    """Write what each rank sees to record_rank<r>.json: world size, its sampler share, the parameter type."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch != 0:
            return
        sampler = trainer.train_dataloader.sampler  # the device-resident path is its own sampler
        sampler.set_epoch(0)
        share = sampler.epoch_indices() if hasattr(sampler, "epoch_indices") else sampler
        # A block of the body: FSDP2 keeps the root's own parameters unsharded between forward and backward.
        param = next(pl_module.net.body.parameters())
        record = {
            "world_size": trainer.world_size,
            "share": [int(i) for i in share],
            "sampler": type(sampler).__name__,
            "param_type": type(param).__name__,
            "param_is_dtensor": type(param).__name__ == "DTensor" or hasattr(param, "to_local"),
            "local_numel": param.to_local().numel() if hasattr(param, "to_local") else param.numel(),
            "full_numel": param.numel(),
            "torch": torch.__version__,
        }
        Path(f"record_rank{trainer.global_rank}.json").write_text(json.dumps(record))


class KillInSave(AtomicCheckpointIO):
    """The template's checkpoint writer that SIGKILLs this process inside its `nth` save of a file named `name`
    (any name if empty), once (a marker file remembers it): before anything is written, after the temporary file
    is written, or right after it is renamed into place (before ModelCheckpoint links or deletes anything)."""

    def __init__(self, nth: int = 1, name: str = "", phase: str = "written", marker: str = "killed.marker"):
        super().__init__()
        self.nth, self.name, self.phase, self.marker, self.seen = nth, name, phase, Path(marker), 0

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        target = Path(path)
        if (self.name and target.name != self.name) or self.marker.exists():
            return super().save_checkpoint(checkpoint, path, storage_options)
        self.seen += 1
        if self.seen != self.nth:
            return super().save_checkpoint(checkpoint, path, storage_options)
        self.kill_if("before", target, checkpoint)
        partial = target.with_name(f".{target.name}.partial")
        TorchCheckpointIO.save_checkpoint(self, checkpoint, partial, storage_options)
        self.kill_if("written", target, checkpoint)
        os.replace(partial, target)
        self.kill_if("renamed", target, checkpoint)

    def kill_if(self, phase, target, checkpoint):
        if phase == self.phase:
            self.marker.write_text(
                f"{target.name} {phase} epoch {checkpoint['epoch']} step {checkpoint['global_step']}"
            )
            os.kill(os.getpid(), signal.SIGKILL)


class FreezeBest(Callback):
    """From `epoch` on, no validation score counts as a new best: ModelCheckpoint then writes last.ckpt as a file
    (replacing its link to the older best), the save that a kill must not lose last.ckpt in."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_validation_end(self, trainer, pl_module):  # runs before the checkpoint callbacks'
        if trainer.current_epoch >= self.epoch and not trainer.sanity_checking:
            for callback in trainer.checkpoint_callbacks:
                best = torch.tensor(float("-inf") if callback.mode == "min" else float("inf"))
                callback.best_k_models = dict.fromkeys(callback.best_k_models, best)  # what new scores beat


# Two topics a bag of words tells apart at once: a text run trained in seconds, for the text tests of each extra.
TOPIC_ROWS = [[f"a sentence about {topic} number {i}", topic] for i in range(20) for topic in ("cats", "dogs")] * 4
# New texts of several lengths: one word, a few, and one past the run's max_length of 128 tokens.
NEW_TEXTS = ["cats", "the dogs sleep here", "a sentence about dogs number 99 " * 3, "cats and more cats " * 60]


def text_run(workdir: Path) -> tuple[Path, str, list[dict[str, str]]]:
    """A tiny text run on TOPIC_ROWS in `workdir` and its predictions for NEW_TEXTS (read from new.csv): (run
    directory, best checkpoint, the rows of predictions.csv)."""
    import csv

    from proj.cli import main

    with open(workdir / "texts.csv", "w", newline="") as f:
        csv.writer(f).writerows([["text", "label"], *TOPIC_ROWS])
    with open(workdir / "new.csv", "w", newline="") as f:
        csv.writer(f).writerows([["text"], *[[t] for t in NEW_TEXTS]])
    old = os.getcwd()
    os.chdir(workdir)
    try:
        result = main(
            [
                "fit", "--config", str(ROOT / "configs" / "default.yaml"),
                "--config", str(ROOT / "configs" / "experiment" / "stdlib_docstrings.yaml"),
                "--data=proj.data.TextCSVDataModule", "--data.init_args.path=texts.csv",
                "--data.init_args.vocab_size=50", "--trainer.max_epochs=20", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false",
            ]
        )  # fmt: skip
    finally:
        os.chdir(old)
    best = str(workdir / result.trainer.checkpoint_callback.best_model_path)
    run_dir = workdir / result.trainer.log_dir
    return run_dir, best, predict_rows(run_dir, best, "--data.init_args.predict_path=new.csv")
