"""How a batch becomes the inputs, the target and the sample ids: the one place the core reads a batch.

`TaskModule.unpack_batch` calls `unpack` with the model's `batch_keys`; every step and every callback (the sample
grid, the prediction writer, the throughput, SWA's statistics) reads batches through that hook, so a batch of
another shape needs that one method overridden, nothing else. What `unpack` reads:

- a tuple or list: (inputs,), (inputs, target) or (inputs, target, ids);
- a dict: the values at `batch_keys.input`, `.target` and `.id` (the last two may be missing: a predict batch);
- a tensor: the inputs alone.

Ids may be strings, numbers or a tensor of them; they become strings, as predictions.csv writes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import Tensor

from proj.nets.sequence import Padded

DOCS = "docs/data_contract.md"


@dataclass
class BatchKeys:
    """The keys of a dict batch: `model.init_args.batch_keys: {input: image, target: label, id: name}`."""

    input: str = "input"
    target: str = "target"
    id: str = "id"


class Batch(NamedTuple):
    inputs: Any
    target: Tensor | None
    ids: list[str] | None


class BatchError(ValueError):
    """A batch the model cannot read: the message names what it found and the setting to change."""


def unpack(batch: Any, keys: BatchKeys) -> Batch:
    if isinstance(batch, Tensor):
        return Batch(batch, None, None)
    if isinstance(batch, Mapping):
        if keys.input not in batch:
            raise BatchError(
                f"a batch is a dict with the keys {sorted(batch)}, and model.init_args.batch_keys.input is "
                f"{keys.input!r}: set model.init_args.batch_keys to your data's keys ({DOCS})"
            )
        return Batch(batch[keys.input], batch.get(keys.target), id_strings(batch.get(keys.id)))
    if isinstance(batch, Sequence) and not isinstance(batch, str) and 1 <= len(batch) <= 3:
        inputs, target, ids = (*batch, None, None)[:3]
        return Batch(inputs, target, id_strings(ids))
    raise BatchError(
        f"a batch is a {type(batch).__name__}; the model reads a tuple (inputs, target[, ids]), a dict or a tensor: "
        f"return one of these from the data, or override the task module's unpack_batch ({DOCS})"
    )


def labelled(target: Tensor | None, split: str) -> Tensor:
    """The target of a batch that needs one (training, validation, test), or a BatchError naming the setting."""
    if target is None:
        raise BatchError(
            f"a {split} batch has no target: give the loader (inputs, target) tuples, or set "
            "model.init_args.batch_keys.target to the key of the target in your dict batches"
        )
    return target


def check_input_shape(inputs: Any, input_shape: Sequence[int]) -> None:
    """The first batch's inputs against the data module's input_shape, which the net was built for: a mismatch is
    one line naming both, not a shape error from inside the net's first layer."""
    if isinstance(inputs, Padded) and not inputs.values.is_floating_point():  # token ids of a vocabulary
        if len(input_shape) != 1 or int(inputs.values.max()) >= input_shape[0]:
            raise BatchError(
                f"a batch holds token id {int(inputs.values.max())}, but the data module's input_shape is "
                f"{list(input_shape)}: for token ids it is (vocabulary size,) ({DOCS})"
            )
        return
    if isinstance(inputs, Padded):  # sequences: one step's shape
        found = list(inputs.values.shape[2:])
        if found != list(input_shape):
            raise BatchError(
                f"a batch's sequences have {found} values per step, but the data module's input_shape is "
                f"{list(input_shape)}, which the net was built for: set input_shape to one step's shape ({DOCS})"
            )
    if isinstance(inputs, Tensor) and list(inputs.shape[1:]) != list(input_shape):
        raise BatchError(
            f"a batch's inputs have the shape {list(inputs.shape)}, one sample {list(inputs.shape[1:])}, but the data "
            f"module's input_shape is {list(input_shape)}, which the net was built for: set input_shape to the shape "
            f"of one sample ({DOCS})"
        )


def id_strings(ids: Any) -> list[str] | None:
    if ids is None:
        return None
    values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    return [str(v) for v in values]


def batch_size(batch: Batch) -> int:
    """The number of samples in a batch: the length of its inputs (or, for inputs of several tensors, of its
    target or ids)."""
    for part in (batch.inputs, batch.target, batch.ids):
        if isinstance(part, Tensor) and part.ndim:
            return len(part)
        if isinstance(part, list):
            return len(part)
    raise BatchError("a batch whose size cannot be told: its inputs are not a tensor, and it has no target or ids")


def read_batch(pl_module: Any, batch: Any) -> Batch:
    """A batch as the model reads it: through its `unpack_batch` (a TaskModule, or any module with that hook),
    else as `unpack` reads tuples, dicts and tensors. Raises BatchError where neither can."""
    hook = getattr(pl_module, "unpack_batch", None)
    return hook(batch) if callable(hook) else unpack(batch, BatchKeys())
