"""GradualPruning: Lightning's ModelPruning with a gradual schedule, conv / linear weights only."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import ModelPruning
from torch import nn


class GradualPruning(ModelPruning):
    """Global L1 unstructured pruning of conv / linear weights, raised gradually to `amount` (Zhu & Gupta 2017).

    Sparsity follows s(e) = amount * (1 - (1 - p)^3), p rising linearly from `start_epoch` to `end_epoch`:
    most weights go early, while the network can still recover. Each epoch prunes the fraction of the
    remaining weights that reaches s(e). BatchNorm and biases are never pruned. The pruning is made
    permanent in checkpoints and at the end of training, so exported weights are plain tensors with zeros.
    The global sparsity is logged as pruning/sparsity.
    """

    def __init__(self, amount: float = 0.5, start_epoch: int = 0, end_epoch: int = 10, verbose: int = 0) -> None:
        if not 0.0 <= amount < 1.0 or end_epoch < start_epoch:
            raise ValueError(f"GradualPruning(amount={amount}, start_epoch={start_epoch}, end_epoch={end_epoch})")
        self.target, self.start_epoch, self.end_epoch = amount, start_epoch, end_epoch
        super().__init__(
            pruning_fn="l1_unstructured",
            amount=self.epoch_amount,
            use_global_unstructured=True,
            make_pruning_permanent=True,
            verbose=verbose,
        )

    def sparsity_at(self, epoch: int) -> float:
        if epoch < self.start_epoch:
            return 0.0
        progress = min(1.0, (epoch - self.start_epoch + 1) / (self.end_epoch - self.start_epoch + 1))
        return self.target * (1 - (1 - progress) ** 3)

    def epoch_amount(self, epoch: int) -> float:
        before, after = self.sparsity_at(epoch - 1), self.sparsity_at(epoch)
        return 1 - (1 - after) / (1 - before)

    def filter_parameters_to_prune(self, parameters_to_prune: Any = ()) -> Any:
        prunable = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
        return [(m, name) for m, name in parameters_to_prune if isinstance(m, prunable) and name == "weight"]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Early stopping must not cut the schedule short: the sparsity would fall short of `amount`.
        if not trainer.sanity_checking and trainer.current_epoch < self.end_epoch:
            trainer.should_stop = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in self._parameters_to_prune)
        total = sum(getattr(m, n).numel() for m, n in self._parameters_to_prune)
        pl_module.log("pruning/sparsity", zeros / max(total, 1))
