"""The model as it is deployed: raw inputs in, the task's predictions out.

It takes raw inputs as the data module stores them (digits 0..16, images as uint8 0..255, table rows after
imputation, sequences padded, with their lengths; texts as token ids, padded, with their lengths: tokenization stays
outside, with the run's tokenizer) with any batch size. Scaling and standardisation with the
training statistics are inside, and so is the task's output: class probabilities for a classifier (each label's
for a multi-label model), values in the target's units for a regressor (its target standardisation undone).
The export and serve extras, and the weight-averaging tests, all use this one module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from proj.nets.sequence import padding_mask


class Deployable(nn.Module):
    """Raw inputs in, the task's predictions out: the data module's scaling and standardisation, the net, then
    softmax (classification), the target's units (regression) or nothing (other tasks)."""

    def __init__(
        self,
        net: nn.Module,
        scale: float,
        mean: list[float] | None,
        std: list[float] | None,
        ndim: int,
        task: str = "classification",
        target_mean: Tensor | None = None,
        target_std: Tensor | None = None,
        sequence: bool = False,
        tokens: bool = False,
    ):
        super().__init__()
        self.net, self.scale, self.task, self.sequence, self.tokens = net, scale, task, sequence or tokens, tokens
        shape = (1, 1, -1) if sequence else (1, -1) + (1,) * (ndim - 2)  # sequences: features last
        self.register_buffer("mean", torch.tensor(mean or [0.0]).view(shape))
        self.register_buffer("std", torch.tensor(std or [1.0]).view(shape))
        self.register_buffer("target_mean", torch.zeros(1) if target_mean is None else target_mean.detach().clone())
        self.register_buffer("target_std", torch.ones(1) if target_std is None else target_std.detach().clone())

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x: a batch of raw samples; for sequences, (batch, time, features) padded, with each one's length; for
        texts, (batch, tokens) int64 ids padded with 0 ([PAD]), with each one's length."""
        if self.tokens:  # ids index an embedding: neither scaled nor standardised
            return self.output(self.net(x, lengths, padding_mask(lengths, x.shape[1])))
        x = (x.to(torch.float32) * self.scale - self.mean) / self.std
        if lengths is None:
            out = self.net(x)
        else:  # the padding stays zero after standardisation, as in training (proj.data.sequence_data)
            mask = padding_mask(lengths, x.shape[1])
            out = self.net(x * mask[..., None], lengths, mask)
        return self.output(out)

    def output(self, out: Tensor) -> Tensor:
        if self.task == "classification":
            return out.softmax(-1)
        if self.task == "multilabel":  # each label's probability; the thresholds are applied by who reads them
            return out.sigmoid()
        if self.task == "regression":
            return out * self.target_std + self.target_mean
        return out


def deployable(model: Any, dm: Any) -> Deployable:
    """The model's net wrapped with the data module's preprocessing and the task's output."""
    stats = dm.stats
    return Deployable(
        model.net,
        dm.scale,
        stats.get("mean"),
        stats.get("std"),
        len(dm.input_shape) + 1,
        task=model.task,
        target_mean=getattr(model, "target_mean", None),
        target_std=getattr(model, "target_std", None),
        sequence=bool((stats.get("input") or {}).get("sequence")),
        tokens=bool((stats.get("input") or {}).get("text")),
    ).eval()


def model_facts(model: Any) -> dict[str, Any]:
    """What a deployed model's reader needs of the trained model: the task, the class (or label) names and target
    names, and a multi-label model's threshold per label (applied to its probabilities)."""
    thresholds = getattr(model, "decision_thresholds", None)
    return {
        "task": model.task,
        "classes": list(getattr(model, "class_names", [])),
        "target_names": list(getattr(model, "target_names", [])),
        **({"thresholds": [float(v) for v in thresholds]} if thresholds is not None else {}),
    }


def input_facts(facts: dict[str, Any], shape: Sequence[int]) -> dict[str, Any]:
    """How a deployed model's inputs look, from the data's input facts (saved in every checkpoint) and its
    input_shape: an array of a shape, sequences of frames ("time"), or texts: token ids of the run's tokenizer, at
    most max_length of them (the tokenizer goes beside the model)."""
    if facts.get("text"):
        return {"input_shape": ["batch", "time"], "input_dtype": "int64", "max_length": facts["max_length"]}
    sequence = bool(facts.get("sequence"))
    return {"input_shape": ["batch", *(["time"] if sequence else []), *shape], "input_dtype": facts["dtype"]}


def output_name(task: str) -> str:
    return {"classification": "probabilities", "multilabel": "probabilities", "regression": "values"}.get(
        task, "outputs"
    )
