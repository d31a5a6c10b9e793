"""A task module of the user's own, written here in a few lines, gets the whole training core for free:
multi-stage optimizers, the stage in checkpoints, resume, epoch logging and predictions.csv."""

import csv
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from proj.models import TaskModule

from conftest import DEFAULT, cli

pytestmark = pytest.mark.slow


class FocalTask(TaskModule):
    """Classification with a focal loss (Lin et al. 2017): all a task says is its loss, metrics, predictions."""

    task = "focal"
    headline_metrics = ("acc",)

    def __init__(self, gamma: float = 2.0, **kwargs) -> None:  # the core's arguments (net, optim, ...) pass through
        super().__init__(**kwargs)
        self.gamma = gamma

    def compute_loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        log_p = outputs.log_softmax(-1).gather(1, target[:, None]).squeeze(1)
        return (-((1 - log_p.exp()) ** self.gamma) * log_p).mean()

    def make_metrics(self, split: str) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(self.num_outputs)}, prefix=f"{split}/")

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs.softmax(-1)


CONFIG = """
model:
  class_path: test_custom_task.FocalTask
  init_args:
    gamma: 2.0
    net: {class_path: proj.nets.SmallCNN, init_args: {widths: [8, 16]}}
    optim:
      stages:
        - optimizer: {class_path: torch.optim.Adam, init_args: {lr: 1.0e-2}}
          lr_scheduler: {class_path: torch.optim.lr_scheduler.StepLR, init_args: {step_size: 1, gamma: 0.5}}
          interval: epoch
        - start_epoch: 2
          optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.02, momentum: 0.9}}
trainer:
  logger: {init_args: {name: focal}}
"""
RUN = [
    "--trainer.limit_train_batches=8",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--test_after_fit=false",
]


class OptimizerNames(Callback):
    def __init__(self):
        self.names: dict[int, str] = {}

    def on_train_epoch_end(self, trainer, pl_module):
        self.names[trainer.current_epoch] = type(trainer.optimizers[0]).__name__


def fit(workdir: Path, *extra: str, ckpt_path: str | None = None):
    (workdir / "focal.yaml").write_text(CONFIG)
    args = ["--config", DEFAULT, "--config", str(workdir / "focal.yaml"), *RUN, *extra]
    result = cli(*args, run=False)
    names = OptimizerNames()
    result.trainer.callbacks.append(names)
    result.trainer.fit(result.model, datamodule=result.datamodule, ckpt_path=ckpt_path)
    return result, names.names


def test_own_task_trains_in_stages_logs_and_resumes_like_an_uninterrupted_run(tmp_path, monkeypatch):
    straight, split = tmp_path / "straight", tmp_path / "split"
    straight.mkdir(), split.mkdir()
    monkeypatch.chdir(straight)
    result, optimizers = fit(straight, "--trainer.max_epochs=4")
    assert optimizers == {0: "Adam", 1: "Adam", 2: "SGD", 3: "SGD"}  # the second stage started at epoch 2
    metrics = result.trainer.callback_metrics
    assert {"train/loss_epoch", "train/acc", "val/loss", "val/acc"} <= set(metrics)
    print(f"own task: val/acc {float(metrics['val/acc']):.3f} after 32 steps")
    assert float(metrics["val/acc"]) > 0.4  # four times chance (0.1)

    monkeypatch.chdir(split)
    fit(split, "--trainer.max_epochs=2")  # stops at the end of epoch 1, still in the first stage
    run_dir = "logs/focal/version_0"
    resumed, optimizers = fit(split, "--trainer.max_epochs=4", ckpt_path=f"{run_dir}/checkpoints/last.ckpt")
    assert optimizers == {2: "SGD", 3: "SGD"}
    for name, value in result.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name

    cli("predict", "--config", f"{run_dir}/config.yaml", f"--ckpt_path={run_dir}/checkpoints/last.ckpt", *RUN[2:4])
    with open(split / run_dir / "predict" / "predictions.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", *(f"output_{i}" for i in range(10))] and len(rows) == 1 + 360
