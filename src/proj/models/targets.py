"""What a model knows of its targets (linked from the data: proj.data.contract), checked where it could go wrong:
a task module given the other task's data, and a checkpoint trained on other classes, whose outputs would be read
with the wrong labels. Both refusals name both sides and the fix."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class TargetsMismatch(ValueError):
    """The data's classes (or target names, or output count) differ from those of the checkpoint being loaded:
    its outputs would be read with the wrong labels. The command line reports it on one line."""


def check_task(cls: type, task: str, data_task: str | None) -> None:
    """A classifier refuses regression data and a regressor class data, before anything is built (a task of
    your own, with a name of its own, takes any data)."""
    known = {
        "classification": "proj.models.Classifier",
        "regression": "proj.models.Regressor",
        "multilabel": "proj.models.MultiLabelClassifier",
    }
    if task not in known or data_task not in known or task == data_task:
        return
    fix = f"set model.class_path: {known[data_task]}"
    raise ValueError(f"model {cls.__name__} is for {task}, but the data module's task is {data_task}: {fix}")


def output_names(targets: dict[str, Any], num_outputs: int) -> list[str]:
    """The names of a classifier's outputs in order (its classes or labels): the data's, which a loaded checkpoint's
    must equal, else their positions."""
    names = targets.get("classes")
    return [str(n) for n in names] if names else [str(i) for i in range(num_outputs)]


def output_weights(targets: dict[str, Any], num_outputs: int, key: str, what: str) -> Tensor | None:
    """The loss weights the data gives under `key` (class_weights, pos_weight: from data.class_weights), one per
    output, or None; the data's names of `what` (classes, labels) must be as many as the outputs too."""
    weights, names = targets.get(key), targets.get("classes")
    if weights is not None and len(weights) != num_outputs:
        raise ValueError(f"data.class_weights has {len(weights)} values for {num_outputs} {what}")
    if names and len(names) != num_outputs:
        raise ValueError(f"the data names {len(names)} {what} but the model has {num_outputs} outputs")
    return torch.tensor(weights, dtype=torch.float) if weights else None


def check_checkpoint_targets(
    targets: dict[str, Any], num_outputs: int, checkpoint: dict[str, Any], path: str | None = None
) -> None:
    """The checkpoint's class names (or target names) must be the data's, in the same order, and its outputs as
    many. Names the checkpoint has and the data lacks are adopted (into `targets`), so that predictions.csv and
    exports use the names it was trained with."""
    saved = checkpoint.get("hyper_parameters") or {}
    theirs, where = saved.get("targets") or {}, f"the checkpoint {path}" if path else "the checkpoint"
    fix = "Run it on the data it was trained on, or train a new model on this data"
    for key, what in (("classes", "classes"), ("names", "target names")):
        mine, trained = targets.get(key), theirs.get(key)
        if mine and trained and [str(v) for v in mine] != [str(v) for v in trained]:
            found = f"{where} was trained on {what} {list(trained)}, but the data has {list(mine)}"
            raise TargetsMismatch(f"{found}. {fix}")
        if trained and not mine:
            targets[key] = list(trained)
    outputs = saved.get("num_outputs")
    if outputs is not None and outputs != num_outputs:
        raise TargetsMismatch(f"{where} has {outputs} outputs, but the data gives {num_outputs}. {fix}")
