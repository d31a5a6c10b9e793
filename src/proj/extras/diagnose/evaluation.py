"""Evaluation: what a test (or a `validate` command) measured, in a form a reader can trust, written once at the end
of its epoch into `<trainer.log_dir>/evaluation/` (the run directory for the test after fit; `<run>/test/` for a
later `python -m proj test` of a run's checkpoint):

- `<split>.json`: each metric with its 95% bootstrap interval (bootstrap.py), per-class (per-label, per-target)
  metrics, the most-confused class pairs, the highest-loss samples (with their texts, for text data), the figures;
- `<split>_predictions.npz`: every sample's id, target, prediction and loss, which diagnose compares runs on;
- the figures (evaluation_figures.py): ROC and precision-recall curves, or predicted-vs-true, and a gallery of the
  highest-loss samples (images, sequences).

Not during fit's validation epochs: the bootstrap and the figures cost seconds, once is enough. Classification,
multi-label and regression; silent for other tasks. Rank 0 writes; under DDP it evaluates its own share of the split
(the samples every world_size-th from the first, as Lightning's sampler deals them), and the JSON says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from proj.extras.diagnose import evaluation_figures as figures
from proj.extras.diagnose.bootstrap import interval, metric_functions
from proj.extras.diagnose.evaluation_tables import confused_pairs, finite, highest_loss, per_class
from proj.models.batches import Padded, read_batch

# What each task's test_step returns (proj.models), which Evaluation reads.
OUTPUTS = {
    "classification": ("probs", "target"),
    "multilabel": ("probs", "target", "decided"),
    "regression": ("preds", "target"),
}
LOGGED = {"multilabel": {"f1": "f1_macro", "subset_acc": "exact_match"}}  # the task module's names, where they differ
EPS = 1e-12  # probabilities are clipped here before the log: a confident mistake costs 27.6, not inf


class Evaluation(Callback):
    """resamples, seed, level: the bootstrap (with 1000 resamples an end of the interval moves by about half a
    sample's share with the seed: a standard deviation of 0.0014 in accuracy on 360 test samples). top_k: the
    highest-loss samples listed and drawn; pairs: the most-confused class pairs listed."""

    def __init__(self, resamples: int = 1000, seed: int = 0, level: float = 0.95, top_k: int = 16, pairs: int = 10):
        self.resamples, self.seed, self.level, self.top_k, self.pairs = resamples, seed, level, top_k, pairs
        self.task: str | None = None
        self.collected: Collected | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.task = getattr(pl_module, "task", None)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start(trainer, "test")

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        validating = trainer.state.fn == "validate" and not trainer.sanity_checking  # the validate command only
        self.collected = None
        if validating:
            self.start(trainer, "val")

    def start(self, trainer: L.Trainer, split: str) -> None:
        log_dir = trainer.log_dir  # on every rank: under DDP it is a broadcast
        self.collected = None
        if self.task in OUTPUTS and trainer.is_global_zero:
            ids = split_ids(trainer.datamodule, split)
            self.collected = Collected(split, Path(log_dir or "."), ids, trainer.world_size, self.top_k)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.collected is None:
            return
        keys = OUTPUTS[self.task]
        if not (isinstance(outputs, dict) and all(k in outputs for k in keys)):  # a task module of the user's own
            rank_zero_warn(f"Evaluation: the {self.task} model's step returned no {keys}: nothing evaluated")
            self.collected = None
            return
        self.collected.add(per_sample(self.task, outputs), read_batch(pl_module, batch))

    on_validation_batch_end = on_test_batch_end

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        collected, self.collected = self.collected, None
        if collected is not None and collected.seen:
            try:
                self.write(trainer, pl_module, collected)
            except Exception as err:  # anything: the test's metrics and checkpoints matter more than this report
                rank_zero_warn(f"evaluation not written: {type(err).__name__}: {err}")

    on_validation_epoch_end = on_test_epoch_end

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, collected: Collected) -> None:
        arrays, split, task = collected.arrays(), collected.split, self.task
        folder = collected.log_dir / "evaluation"
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"{split}_predictions.npz", **arrays)
        names = output_names(pl_module, arrays["target"])
        hardest = np.lexsort((np.arange(len(arrays["loss"])), -ranked(arrays["loss"])))[: self.top_k]
        rows = highest_loss(task, arrays, names, hardest, collected.texts(trainer.datamodule))
        metrics = self.intervals(arrays, split)
        report = {
            "split": split,
            "task": task,
            "samples": len(arrays["loss"]),
            "samples_from": collected.share(),
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "level": self.level, "method": "percentile"},
            "metrics": metrics,
            "per_class": per_class(task, arrays, names),
            "confused_pairs": confused_pairs(arrays, names, self.pairs) if task == "classification" else [],
            "highest_loss": rows,
            "figures": {**self.curves(arrays, names, folder, split), **gallery(collected, rows, folder)},
        }
        (folder / f"{split}.json").write_text(json.dumps(report, indent=2, default=finite) + "\n")
        values = {f"{m['logged']}_{end}": m[end] for m in metrics.values() for end in ("low", "high")}
        for logger in trainer.loggers:  # next to the metric in every logger, once
            logger.log_metrics({k: v for k, v in values.items() if v is not None}, step=trainer.global_step)

    def intervals(self, arrays: dict[str, np.ndarray], split: str) -> dict[str, dict[str, Any]]:
        found = {}
        for name, fn in metric_functions(self.task).items():
            bounds = interval(fn, arrays["preds"], arrays["target"], self.resamples, self.seed, self.level)
            logged = f"{split}/{LOGGED.get(self.task, {}).get(name, name)}"  # the value the model logged beside it
            found[name] = {**{k: finite(v) for k, v in bounds.items()}, "logged": logged}
        return found

    def curves(self, arrays: dict[str, np.ndarray], names: list[str], folder: Path, split: str) -> dict[str, str]:
        if self.task == "regression":
            return figures.scatter_figure(arrays["preds"], arrays["target"], names, folder, split)
        probs = arrays.get("probs", arrays["preds"])  # multi-label: the curves sweep the probabilities, not decisions
        return figures.curve_figures(self.task, probs, arrays["target"], names, folder, split)


def gallery(collected: Collected, rows: list[dict[str, Any]], folder: Path) -> dict[str, str]:
    losses = [math.nan if row["loss"] is None else row["loss"] for row in rows]  # None: a NaN loss, in the JSON
    titles = [
        f"true {row['true']}\npredicted {row['predicted']}\nloss {v:.3g}" for row, v in zip(rows, losses, strict=True)
    ]
    return figures.gallery_figure(collected.kind, collected.samples(), titles, folder, collected.split)


class Collected:
    """One epoch's per-sample arrays on rank 0, and the inputs of its `top_k` highest-loss samples so far only: a
    big test set never keeps its inputs."""

    def __init__(self, split: str, log_dir: Path, ids: list[str] | None, world_size: int, top_k: int) -> None:
        self.split, self.log_dir, self.split_ids, self.world_size, self.top_k = split, log_dir, ids, world_size, top_k
        self.parts: dict[str, list[np.ndarray]] = {}
        self.ids: list[str] = []
        self.seen = 0
        self.kind: str | None = None  # image, sequence, text; None for tables and other inputs
        self.hardest: list[tuple[float, int, torch.Tensor]] = []  # (-loss, position, input)

    def add(self, values: dict[str, np.ndarray], batch: Any) -> None:
        n = len(values["loss"])
        for key, value in values.items():
            self.parts.setdefault(key, []).append(value)
        self.ids += batch.ids or [self.sample_id(self.seen + i) for i in range(n)]
        self.keep_hardest(values["loss"], batch.inputs)
        self.seen += n

    def sample_id(self, position: int) -> str:
        index = position * self.world_size  # rank 0's share: every world_size-th sample from the first
        return self.split_ids[index] if self.split_ids and index < len(self.split_ids) else str(index)

    def keep_hardest(self, loss: np.ndarray, inputs: Any) -> None:
        self.kind = self.kind or input_kind(inputs)
        if self.kind is None:
            return
        rank = ranked(loss)
        for i in np.argsort(-rank, kind="stable")[: self.top_k]:
            self.hardest.append((-float(rank[i]), self.seen + int(i), one_input(inputs, int(i))))
        self.hardest = sorted(self.hardest, key=lambda row: row[:2])[: self.top_k]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"ids": np.array(self.ids, dtype=str), **{k: np.concatenate(v) for k, v in self.parts.items()}}

    def samples(self) -> list[torch.Tensor]:
        return [sample for *_, sample in self.hardest]

    def texts(self, dm: Any) -> dict[int, str]:
        """The highest-loss texts as the model read them (the tokenizer's decoding: lower-cased, truncated)."""
        if self.kind != "text" or getattr(dm, "tokenizer", None) is None:
            return {}
        return {position: dm.tokenizer.decode(tokens.tolist()) for _, position, tokens in self.hardest}

    def share(self) -> str:
        return "all" if self.world_size == 1 else f"rank 0's share of {self.world_size} processes (not gathered)"


def per_sample(task: str, outputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A batch's predictions, targets and per-sample losses as numpy: cross-entropy -log p[true] (classification),
    binary cross-entropy averaged over labels (multi-label), squared error averaged over targets, in the target's
    units (regression). Unweighted and unsmoothed: the loss of the sample, not the training objective."""
    if task == "regression":
        preds = outputs["preds"].detach().float().cpu().numpy()
        target = outputs["target"].float().cpu().numpy().reshape(preds.shape)
        return {"preds": preds, "target": target, "loss": ((preds.astype(np.float64) - target) ** 2).mean(1)}
    probs = outputs["probs"].detach().float().cpu().numpy()
    target = outputs["target"].cpu().numpy()
    p = np.clip(probs.astype(np.float64), EPS, 1 - EPS)
    if task == "multilabel":
        t = target.astype(np.float64)
        loss = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(1)
        decided = outputs["decided"].cpu().numpy().astype(np.int8)
        return {"preds": decided, "probs": probs, "target": target.astype(np.int8), "loss": loss}
    target = target.argmax(1) if target.ndim == 2 else target  # soft (mixed) targets: the class of most weight
    return {"preds": probs, "target": target.astype(np.int64), "loss": -np.log(p[np.arange(len(p)), target])}


def input_kind(inputs: Any) -> str | None:
    if isinstance(inputs, Padded):
        return "sequence" if inputs.values.is_floating_point() else "text"
    return "image" if isinstance(inputs, torch.Tensor) and inputs.ndim == 4 else None


def one_input(inputs: Any, i: int) -> torch.Tensor:
    """Sample i of a batch, copied (a view would keep the whole batch alive); a sequence's real steps only."""
    if isinstance(inputs, Padded):
        return inputs.values[i, : int(inputs.lengths[i])].detach().cpu().clone()
    return inputs[i].detach().float().cpu().clone()


def ranked(loss: np.ndarray) -> np.ndarray:
    """Losses to rank by: a NaN (a diverged model) ranks highest."""
    return np.nan_to_num(loss, nan=np.inf)


def split_ids(dm: Any, split: str) -> list[str] | None:
    """The data module's ids of the split (`sample_ids`, optional in the data contract), or None."""
    try:
        return [str(i) for i in dm.sample_ids(split)]
    except Exception:  # any data module: without ids, samples are named by their position
        return None


def output_names(pl_module: L.LightningModule, target: np.ndarray) -> list[str]:
    names = getattr(pl_module, "class_names", None) or getattr(pl_module, "target_names", None)
    width = getattr(pl_module, "num_outputs", 0) or (target.shape[1] if target.ndim == 2 else int(target.max()) + 1)
    return [str(n) for n in names] if names else [str(i) for i in range(width)]
