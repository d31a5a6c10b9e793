"""MisclassifiedTexts: a table of the validation texts the model gets wrong, the most confident mistakes first, in
TensorBoard's TEXT tab: what a text model's image grid and confusion matrix cannot show.

Each row: the sample's id (file:line, or the demo's module:function), its true and predicted labels, the probability
the model gave its prediction, and the text as the model read it (the tokenizer's decoding of the first max_length
tokens: lower-cased, truncated). A data module with a `tokenizer` (proj.data.TextDataModule) turns it on; for any
other data it does nothing, silently, so the default config keeps it for every task. Under DDP, rank 0 shows its
own share of the validation split.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback

from proj.extras.tensorboard_views.logger_output import log_table

HEADER = ["id", "true", "predicted", "probability", "text"]


class MisclassifiedTexts(Callback):
    """Drawn every `every_n_epochs` epochs and once more, for the last epoch, at the end of fit."""

    def __init__(self, every_n_epochs: int = 10, max_rows: int = 20, max_chars: int = 300) -> None:
        self.every_n_epochs, self.max_rows, self.max_chars = every_n_epochs, max_rows, max_chars
        self.active, self.undrawn = False, None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        task = getattr(pl_module, "task", None)
        self.active = hasattr(trainer.datamodule, "tokenizer_path") and task in ("classification", "multilabel")

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.wrong: list[tuple[float, int, Any, Any, torch.Tensor]] = []  # (probability, position, true, pred, ids)
        self.seen = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not (self.active and trainer.is_global_zero and isinstance(outputs, dict) and "probs" in outputs):
            return
        probs, target, x = outputs["probs"].detach().cpu(), outputs["target"].cpu(), batch["input"]
        if "decided" in outputs:  # multi-label: any label wrong; the probability of the least sure label
            predicted = outputs["decided"].cpu().bool()
            wrong, sure = (predicted != target.bool()).any(1), (probs - 0.5).abs().min(1).values + 0.5
        else:
            sure, predicted = probs.max(1)
            wrong = predicted != target
        for i in torch.nonzero(wrong).flatten().tolist():
            ids = x.values[i, : int(x.lengths[i])].cpu()
            self.wrong.append((float(sure[i]), self.seen + i, target[i], predicted[i], ids))
        self.wrong = sorted(self.wrong, key=lambda row: -row[0])[: self.max_rows]  # memory: the worst ones only
        self.seen += len(target)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.active or not trainer.is_global_zero:
            return
        self.undrawn = (self.rows(trainer), trainer.global_step)
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.draw(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw(trainer)

    def rows(self, trainer: L.Trainer) -> list[list[str]]:
        dm, names = trainer.datamodule, list(getattr(trainer.lightning_module, "class_names", []))
        ids = dm.sample_ids("val")
        return [
            [
                ids[position],
                label(true, names),
                label(predicted, names),
                f"{sure:.3f}",
                text(dm, tokens, self.max_chars),
            ]
            for sure, position, true, predicted, tokens in self.wrong
        ]

    def draw(self, trainer: L.Trainer) -> None:
        if self.undrawn is None:
            return
        (rows, step), self.undrawn = self.undrawn, None
        log_table(trainer, "val/misclassified_texts", HEADER, rows, step)


def label(value: torch.Tensor, names: list[str]) -> str:
    """A class index as its name, or a multi-label row as its labels joined by ";"."""
    if value.ndim == 0:
        return names[int(value)] if names else str(int(value))
    return ";".join(names[i] if names else str(i) for i in torch.nonzero(value).flatten().tolist())


def text(dm: Any, tokens: torch.Tensor, max_chars: int) -> str:
    decoded = dm.tokenizer.decode(tokens.tolist())
    return decoded if len(decoded) <= max_chars else decoded[: max_chars - 1] + "…"
