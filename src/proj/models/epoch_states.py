"""The training epoch's running loss and metrics in every checkpoint, so that a run resumed mid-epoch (after a
preemption) logs that epoch's train/ values as the uninterrupted run would. The weights resumed bitwise before, but
train/acc read 0.0 for the interrupted epoch and train/loss_epoch covered only the batches after the resume.

Each rank's states are kept (they are summed across ranks when computed); they are restored only into the same
epoch (a checkpoint saved at an epoch's end is resumed at the next one, whose metrics start empty) and the same
number of processes.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torchmetrics import Metric

from proj.compat import set_update_count


def epoch_states(metrics: dict[str, Metric], epoch: int) -> dict[str, Any]:
    """The states of `metrics` on every rank (a collective under DDP: every rank saves a checkpoint together)."""
    mine = {name: {"state": copied(m.metric_state), "count": m.update_count} for name, m in metrics.items()}
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return {"epoch": epoch, "ranks": [mine]}
    ranks: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, mine)
    return {"epoch": epoch, "ranks": ranks}


def restore_epoch_states(metrics: dict[str, Metric], saved: dict[str, Any] | None, epoch: int) -> None:
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    if not saved or saved.get("epoch") != epoch or len(saved.get("ranks", [])) != world:
        return
    for name, metric in metrics.items():
        own = saved["ranks"][rank].get(name)
        if own is None:
            continue
        for key, value in own["state"].items():
            setattr(metric, key, moved(value, metric.device))
        set_update_count(metric, own["count"])


def copied(state: dict[str, Any]) -> dict[str, Any]:
    return {
        k: [t.detach().cpu().clone() for t in v] if isinstance(v, list) else v.detach().cpu().clone()
        for k, v in state.items()
    }


def moved(value: Any, device: Any) -> Any:
    return [t.to(device) for t in value] if isinstance(value, list) else value.to(device)
