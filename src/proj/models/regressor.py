"""A regressor: MSE / Huber / L1 loss on standardised targets; MAE, RMSE and R^2 in the target's own units."""

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from proj.models.base import NetFactory, TaskModule
from proj.models.batches import BatchKeys
from proj.optim import OptimConfig

LOSSES = {"mse": nn.MSELoss, "huber": nn.HuberLoss, "l1": nn.L1Loss}


class Regressor(TaskModule):
    """Predicts `num_outputs` real values; `num_outputs`, `input_shape` and `targets` (target names, the training
    split's mean and std) are linked from the data.

    The net learns standardised targets, (y - mean) / std with the training split's statistics (kept as
    buffers, so they travel in every checkpoint): one lr suits targets of any scale.
    Batches carry raw targets; predictions, metrics and exports are in the target's units.

    loss: mse | huber | l1, on the standardised targets (huber_delta in standard deviations).
    """

    task = "regression"
    headline_metrics = ("rmse", "r2")

    def __init__(
        self,
        net: NetFactory | dict,
        num_outputs: int,
        input_shape: Sequence[int],
        targets: dict[str, Any] | None = None,
        optim: OptimConfig | dict | None = None,
        loss: Literal["mse", "huber", "l1"] = "mse",
        huber_delta: float = 1.0,
        channels_last: bool = False,
        compile: bool = False,
        activation_checkpointing: bool = False,
        batch_keys: BatchKeys | None = None,
    ) -> None:
        super().__init__(
            net, num_outputs, input_shape, targets, optim, channels_last, compile, activation_checkpointing, batch_keys
        )
        if loss not in LOSSES:
            raise ValueError(f"model.init_args.loss={loss!r}: choose one of {', '.join(LOSSES)}")
        mean, std = self.targets.get("mean") or [0.0] * num_outputs, self.targets.get("std") or [1.0] * num_outputs
        if len(mean) != num_outputs or len(std) != num_outputs:
            raise ValueError(f"the data gives target statistics for {len(mean)} targets; the model has {num_outputs}")
        self.register_buffer("target_mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(std, dtype=torch.float32))
        target_names = self.targets.get("names")
        default_names = ["y"] if num_outputs == 1 else [f"y{i}" for i in range(num_outputs)]
        self.target_names = list(target_names) if target_names else default_names
        self.loss_fn = LOSSES[loss](delta=huber_delta) if loss == "huber" else LOSSES[loss]()

    def standardized(self, target: Tensor) -> Tensor:
        return (target.reshape(len(target), -1).float() - self.target_mean) / self.target_std

    def to_units(self, outputs: Tensor) -> Tensor:
        """The net's standardised outputs in the target's units: what predictions, metrics and exports show."""
        return outputs.float() * self.target_std + self.target_mean

    def compute_loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        return self.loss_fn(outputs.float(), self.standardized(target))

    def make_metrics(self, split: str) -> MetricCollection:
        return MetricCollection(
            {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False), "r2": R2Score()},
            prefix=f"{split}/",
        )

    def update_metrics(self, metrics: MetricCollection, outputs: Tensor, target: Tensor) -> dict[str, Tensor]:
        preds = self.to_units(outputs)
        target = target.reshape(preds.shape).float()
        if preds.shape[1] == 1:  # one target: R^2 over samples; several: averaged over targets
            metrics.update(preds[:, 0], target[:, 0])
        else:
            metrics.update(preds, target)
        return {"preds": preds.detach(), "target": target}

    def predictions(self, outputs: Tensor) -> Tensor:
        return self.to_units(outputs)

    def prediction_columns(self) -> list[str]:
        return list(self.target_names)
