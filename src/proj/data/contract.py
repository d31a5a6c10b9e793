"""The data contract: what a LightningDataModule gives the core. The template's data modules meet it, and so can
a plain LightningDataModule of your own. Its page: docs/data_contract.md.

Required: the model is built from them (the command line links them into `model.init_args`).
    num_outputs: int               the model's outputs: the number of classes, or of regression targets
    input_shape: Sequence[int]     one sample's shape, without the batch axis: (1, 8, 8) for an image, (10,) a row

Optional, with their defaults:
    targets: dict = {}             what the model is told of its targets: "task" ("classification", "regression",
                                   or your own task's name), "classes" (names in output order), "class_weights",
                                   "names" and "mean" / "std" (regression targets)
    sample_ids(split) -> list      each sample's id in a split, for predictions.csv; default: the ids the batches
                                   carry, else the sample's position
    scale: float, stats: dict      the preprocessing that the export and serve extras put inside a deployed model
                                   (stats: "mean" and "std" per channel); default 1.0 and none

Batches: tuples (inputs, target) or (inputs, target, ids), or dicts. The task module reads every batch through one
hook, `TaskModule.unpack_batch`, with the dict keys in `model.init_args.batch_keys` (proj.models.batches).

A missing or wrong attribute is one line naming it and this page, before anything is trained.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

from proj.data.errors import DataError

DOCS = "docs/data_contract.md"


class DataContractError(DataError):
    """A data module that does not meet the contract: the message names the attribute and the docs page."""


def num_outputs(dm: Any) -> int:
    """The data module's `num_outputs`, checked: a positive whole number."""
    value = required(dm, "num_outputs", "the model's outputs: the number of classes, or of regression targets")
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise wrong(dm, "num_outputs", value, "a whole number of at least 1")
    return int(value)


def input_shape(dm: Any) -> list[int]:
    """The data module's `input_shape`, checked: one sample's shape, a sequence of positive whole numbers."""
    value = required(dm, "input_shape", "one sample's shape, without the batch axis, e.g. (1, 8, 8) or (10,)")
    try:
        shape = list(value)
    except TypeError:
        raise wrong(dm, "input_shape", value, "a tuple of sizes, e.g. (1, 8, 8) or (10,)") from None
    if not shape or not all(isinstance(n, Integral) and not isinstance(n, bool) and n >= 1 for n in shape):
        raise wrong(dm, "input_shape", value, "a tuple of sizes, each a whole number of at least 1")
    return [int(n) for n in shape]


def targets(dm: Any) -> dict[str, Any]:
    """The data module's `targets` (optional: {} without it), checked: a dict."""
    value = getattr(dm, "targets", None)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise wrong(dm, "targets", value, 'a dict, e.g. {"task": "classification", "classes": ["cat", "dog"]}')
    return dict(value)


def required(dm: Any, name: str, what: str) -> Any:
    value = getattr(dm, name, None)
    if value is None:
        raise DataContractError(
            f"data {type(dm).__name__} has no {name} ({what}), which the model is built from: add it to the data "
            f"module; the contract is {DOCS}"
        )
    return value


def wrong(dm: Any, name: str, value: Any, wanted: str) -> DataContractError:
    return DataContractError(f"data {type(dm).__name__}.{name} is {value!r}: give {wanted}; the contract is {DOCS}")
