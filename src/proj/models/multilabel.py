"""A multi-label classifier: BCE-with-logits per label (pos_weight from data.class_weights), micro / macro F1,
exact match and ROC-AUC, each label's F1 and ROC-AUC, and a decision threshold per label tuned on validation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import ClasswiseWrapper, MetricCollection
from torchmetrics.classification import (
    MultilabelAUROC,
    MultilabelExactMatch,
    MultilabelF1Score,
    MultilabelPrecisionRecallCurve,
)

from proj.models.base import NetFactory, TaskModule
from proj.models.batches import BatchKeys
from proj.models.targets import output_names, output_weights
from proj.optim import OptimConfig

# The thresholds tried per label: 0.01 .. 0.99. Binned, so the validation curve's memory is constant.
GRID = torch.linspace(0.01, 0.99, 99)


class MultiLabelClassifier(TaskModule):
    """Says which of `num_outputs` labels hold for each input (any number of them); `num_outputs`, `input_shape`
    and `targets` (label names, pos_weight) are linked from a data module whose task is multilabel.

    thresholds: "tune" (default): each label's threshold is the one that maximises its F1 on the validation split,
        tuned again after every validation epoch (from 0.5 before the first), so each checkpoint holds the ones
        that suit its weights. Or fixed: one number for all labels, a list with one per label, or the path of a
        thresholds.json ({label: threshold}, as a run writes it). Test, predict, export and serve use them.
    """

    task = "multilabel"
    headline_metrics = ("f1_macro", "exact_match")

    def __init__(
        self,
        net: NetFactory | dict,
        num_outputs: int,
        input_shape: Sequence[int],
        targets: dict[str, Any] | None = None,
        optim: OptimConfig | dict | None = None,
        thresholds: float | list[float] | str = "tune",
        channels_last: bool = False,
        compile: bool = False,
        activation_checkpointing: bool = False,
        batch_keys: BatchKeys | None = None,
    ) -> None:
        super().__init__(
            net, num_outputs, input_shape, targets, optim, channels_last, compile, activation_checkpointing, batch_keys
        )
        self.loss_fn = nn.BCEWithLogitsLoss(
            pos_weight=output_weights(self.targets, num_outputs, "pos_weight", "labels")
        )
        self.tune = thresholds == "tune"
        given = given_thresholds(thresholds, self.class_names)
        if isinstance(thresholds, str) and not self.tune:  # a file's values travel in checkpoints, not its path
            self.hparams.thresholds = given.tolist()
        # The thresholds in use live outside the module's tensors (`decision_thresholds`), so that weight averaging
        # (EMA, SWA: they swap and average every buffer) never touches them; the buffer carries them in and out of
        # checkpoints (on_save_checkpoint, and a hook after every load_state_dict).
        self.given = None if self.tune else given
        self.decision_thresholds = given.clone()
        self.register_buffer("thresholds", given.clone())
        self.register_load_state_dict_post_hook(thresholds_loaded)
        # HParams compares runs by these, each label's F1 and ROC-AUC among them
        self.headline_metrics = (
            *self.headline_metrics,
            *(f"{m}_{n}" for m in ("f1", "auroc") for n in self.class_names),
        )
        self.val_curve = MultilabelPrecisionRecallCurve(num_outputs, thresholds=GRID, validate_args=False)

    @property
    def class_names(self) -> list[str]:
        return output_names(self.targets, self.num_outputs)

    def compute_loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        return self.loss_fn(outputs.float(), target.float())  # 0 / 1, or soft after MixUp / CutMix

    def make_metrics(self, split: str) -> MetricCollection:
        """Micro and macro F1 and exact match at the thresholds, macro ROC-AUC (binned for training), and each
        label's F1 and ROC-AUC (validation and test: the per-label record in the logs and the model card)."""
        n, checks = self.num_outputs, {"validate_args": False}
        metrics: dict[str, Any] = {
            "f1_micro": MultilabelF1Score(n, average="micro", **checks),
            "f1_macro": MultilabelF1Score(n, average="macro", **checks),
            "exact_match": MultilabelExactMatch(n, **checks),
            "auroc": MultilabelAUROC(n, average="macro", thresholds=100 if split == "train" else None, **checks),
        }
        if split != "train":
            for name, metric in (("f1", MultilabelF1Score), ("auroc", MultilabelAUROC)):
                wrapped = metric(n, average=None, **checks)
                metrics[f"label_{name}"] = ClasswiseWrapper(wrapped, self.class_names, f"{name}_")
        return MetricCollection(metrics, prefix=f"{split}/", compute_groups=False)

    def update_metrics(self, metrics: MetricCollection, outputs: Tensor, target: Tensor) -> dict[str, Tensor]:
        probs, labels = outputs.float().sigmoid(), (target >= 0.5).long()  # soft targets (mixed): the nearer label
        decided = self.decide(probs).long()
        for name, metric in metrics.items(keep_base=True, copy_state=False):
            metric.update(probs if "auroc" in name else decided, labels)
        if metrics is self.val_metrics and self.tune:
            self.val_curve.update(probs, labels)
        return {"probs": probs.detach(), "target": labels, "decided": decided}

    def decide(self, probs: Tensor) -> Tensor:
        """Each label set where its probability reaches its threshold."""
        return probs >= self.decision_thresholds.to(probs.device)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()  # logged at the thresholds the epoch ran with (tuned after the last one)
        if self.tune and self.val_curve.update_called and not self.trainer.sanity_checking:
            self.decision_thresholds = best_f1_thresholds(*self.val_curve.compute()).cpu()
            self.thresholds.copy_(self.decision_thresholds)
        self.val_curve.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """After the callbacks' hooks: an averaging callback's state_dict holds its copy's thresholds."""
        super().on_save_checkpoint(checkpoint)
        for key in ("state_dict", "current_model_state"):
            if key in checkpoint:
                checkpoint[key]["thresholds"] = self.decision_thresholds.clone()

    def on_test_start(self) -> None:
        """The thresholds this test uses, beside the run's checkpoints: a file `thresholds` accepts back."""
        log_dir = self.trainer.log_dir if self._trainer is not None else None
        if log_dir and self.trainer.is_global_zero:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            values = dict(zip(self.class_names, (round(v, 4) for v in self.decision_thresholds.tolist()), strict=True))
            (Path(log_dir) / "thresholds.json").write_text(json.dumps(values, indent=2) + "\n")

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs.float().sigmoid()

    def prediction_columns(self) -> list[str]:
        return ["predicted", *(f"p_{name}" for name in self.class_names)]

    def prediction_rows(self, predictions: Tensor) -> list[list[str]]:
        """The predicted set (labels joined by ";", empty for none) and each label's probability."""
        probabilities = predictions.float().cpu()
        chosen = self.decide(probabilities)
        names = self.class_names
        return [
            [";".join(n for n, on in zip(names, row, strict=True) if on), *(f"{v:.6g}" for v in p.tolist())]
            for p, row in zip(probabilities, chosen.tolist(), strict=True)
        ]


def thresholds_loaded(module: MultiLabelClassifier, incompatible_keys: Any) -> None:
    """After any load_state_dict (resume, test, predict, export, serve): the checkpoint's thresholds are the ones in
    use, unless the config gives its own, which win."""
    if module.given is not None:
        module.thresholds.copy_(module.given)
    module.decision_thresholds = module.thresholds.detach().cpu().clone()


def best_f1_thresholds(precision: Tensor, recall: Tensor, grid: Tensor) -> Tensor:
    """Per label, the threshold of the grid with the highest F1; of tied ones (a label the model separates well
    ties over a whole range), the nearest to 0.5. A threshold no sample reaches has an undefined precision (0 / 0):
    its F1 counts as 0."""
    p, r = precision[:, : len(grid)], recall[:, : len(grid)]
    f1 = (2 * p * r / (p + r).clamp_min(1e-12)).nan_to_num(0.0)
    grid = grid.to(f1.device)
    tied = f1 >= f1.max(1, keepdim=True).values - 1e-6
    distance = torch.where(tied, (grid - 0.5).abs(), torch.inf)
    return grid[distance.argmin(1)]


def given_thresholds(setting: float | list[float] | str, names: list[str]) -> Tensor:
    """The configured thresholds as a tensor with one per label; 0.5 each until tuned. A list of another length,
    a file naming other labels, or a value outside (0, 1) is one line naming the setting."""
    key = "model.init_args.thresholds"
    if setting == "tune":
        values = [0.5] * len(names)
    elif isinstance(setting, str):
        values = thresholds_file(Path(setting), names, key)
    elif isinstance(setting, int | float):
        values = [float(setting)] * len(names)
    else:
        values = [float(v) for v in setting]
        if len(values) != len(names):
            raise ValueError(f"{key} has {len(values)} values for the {len(names)} labels {names}: give one per label")
    if not all(0.0 < v < 1.0 for v in values):
        raise ValueError(f"{key}={values}: each threshold must lie strictly between 0 and 1")
    return torch.tensor(values, dtype=torch.float32)


def thresholds_file(path: Path, names: list[str], key: str) -> list[float]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f'{key}={str(path)!r}: not a readable JSON file ({err}); give "tune" or a number') from None
    if not isinstance(saved, dict) or sorted(saved) != sorted(names):
        found = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(
            f"{key}={str(path)!r} holds thresholds for {found}, but the data's labels are {names}: give the "
            "thresholds.json of a run on these labels, or thresholds: tune"
        )
    return [float(saved[name]) for name in names]
