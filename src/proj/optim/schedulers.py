"""Learning-rate schedulers for one stage: horizons filled from the run's length, chains, a linear warmup inside.

Fed numbers, not a trainer: `stage_length` turns (stage starts, max_epochs, max_steps, steps per epoch) into
a stage's length in the scheduler's unit; `proj.optim.stages` reads those numbers off the trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CyclicLR, LinearLR, LRScheduler, OneCycleLR, ReduceLROnPlateau, SequentialLR

from proj.compat import chained_schedulers
from proj.optim.classes import ClassSpec, init_parameters
from proj.optim.config import Stage

# Arguments that give a scheduler's length; a 0 there means "the stage's length, in the scheduler's unit".
HORIZON_ARGS = ("T_max", "total_steps", "total_iters")
# Schedulers that set the lr from their own lr arguments rather than from the group's initial lr: these
# arguments are scaled per group (a list, one value per group) so that `lr_scale` rules still apply.
OWN_LR_ARGS = {OneCycleLR: ("max_lr",), CyclicLR: ("base_lr", "max_lr")}


def stage_length(
    starts: list[int],
    index: int,
    interval: str,
    max_epochs: int | None,
    max_steps: int | None,
    steps_per_epoch: Callable[[], int | None],
    where: str,
) -> int:
    """Length of stage `index` in `interval` units (epochs or optimizer steps).

    A stage ends at the next stage's start epoch, at max_epochs, or at max_steps, whichever comes first.
    `steps_per_epoch` is asked only when needed (it sets up the training data); None means unknown.
    """
    next_start = starts[index + 1] if index + 1 < len(starts) else None
    epoch_ends = [e for e in (next_start, max_epochs) if e is not None]
    if not epoch_ends and max_steps is None:
        unknown(where, interval, "trainer.max_epochs is -1 and trainer.max_steps is not set")
    if interval == "epoch" and max_steps is None:  # the data's length does not matter
        return min(epoch_ends) - starts[index]
    per_epoch = steps_per_epoch()
    if per_epoch is None:
        unknown(where, interval, "the training data has no length (an iterable dataset)")
    if interval == "epoch":
        return min([*epoch_ends, math.ceil(max_steps / per_epoch)]) - starts[index]
    ends = [e * per_epoch for e in epoch_ends] + ([max_steps] if max_steps is not None else [])
    return min(ends) - starts[index] * per_epoch


def unknown(where: str, unit: str, reason: str) -> None:
    raise ValueError(
        f"{where}=0 asks for the stage's length in {unit}s, but it is unknown: {reason}. "
        "Give the horizon explicitly or set trainer.max_epochs."
    )


def build_scheduler(optimizer: Optimizer, spec: ClassSpec, length: Callable[[str], int]) -> Any:
    """Instantiate one scheduler, filling a horizon left at 0 with `length(where)`."""
    init_args = dict(spec.init_args)
    for arg in HORIZON_ARGS:
        if arg in init_parameters(spec.cls) and init_args.get(arg) == 0:
            init_args[arg] = length(f"{spec.where}.init_args.{arg}")
    if issubclass(spec.cls, OneCycleLR) and init_args.get("total_steps") is None and not init_args.get("epochs"):
        init_args["total_steps"] = length(f"{spec.where}.init_args.total_steps")
    scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]
    for cls, args in OWN_LR_ARGS.items():
        for arg in args if issubclass(spec.cls, cls) and any(x != 1.0 for x in scales) else ():
            value = init_args.get(arg, init_parameters(spec.cls)[arg].default)
            values = value if isinstance(value, (list, tuple)) else [value] * len(scales)
            init_args[arg] = [v * x for v, x in zip(values, scales, strict=True)]
    try:
        return spec.cls(optimizer, **init_args)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{spec.where}: {spec.cls.__name__}({init_args}) failed: {err}") from err


def build_schedulers(
    optimizer: Optimizer, stage: Stage, length: Callable[[str], int], steps_per_epoch: Callable[[], int | None]
) -> list[dict[str, Any]]:
    """Lightning scheduler configs for one stage: one scheduler, the warmup composed inside it (`WithWarmup`).

    The warmup is created last: SequentialLR resets the lr when it is built, which would undo a warmup factor
    applied before it. Two cases keep the warmup as a second, per-step scheduler, because one scheduler cannot
    step them at the right moments: ReduceLROnPlateau (Lightning steps it after validation, with the metric), and
    an epoch schedule over data of unknown length (no step count marks the end of an epoch). Lightning's
    StochasticWeightAveraging refuses those two (proj.extras.averaging.SWA names the key).
    """
    main = build_main(optimizer, stage, length) if stage.schedulers else None
    warmup = None  # built only if asked for: a LinearLR multiplies the lr by its start factor when it is built
    if stage.warmup_steps:
        warmup = LinearLR(optimizer, stage.warmup_start_factor, 1.0, total_iters=stage.warmup_steps)
    interval = stage.interval
    if main is None and warmup is not None:
        main, warmup, interval = warmup, None, "step"
    elif warmup is not None and not isinstance(main, ReduceLROnPlateau):
        per_epoch = steps_per_epoch() if interval == "epoch" else None
        if interval == "step" or per_epoch is not None:
            main, warmup, interval = WithWarmup(optimizer, main, warmup, per_epoch), None, "step"
    configs = []
    if main is not None:
        configs.append({"scheduler": main, "interval": interval, "frequency": 1, "name": "lr"})
        if isinstance(main, ReduceLROnPlateau):
            configs[0]["monitor"] = main.monitor
    if warmup is not None:
        configs.append({"scheduler": warmup, "interval": "step", "frequency": 1, "name": "lr"})
    return configs


def build_main(optimizer: Optimizer, stage: Stage, length: Callable[[str], int]) -> Any:
    """The stage's schedule: one scheduler, or a chain whose phases last until the next milestone."""
    specs = stage.schedulers
    if len(specs) == 1:
        return build_scheduler(optimizer, specs[0], length)
    bounds = [0, *stage.milestones]
    phases = []
    for i, spec in enumerate(specs):
        phase_end = bounds[i + 1] if i + 1 < len(bounds) else None

        def phase_length(where: str, start: int = bounds[i], end: int | None = phase_end) -> int:
            # A last phase that starts at the run's end never runs (WSD's decay in a run cut at its milestone):
            # a horizon of 1, not 0, which torch's LinearLR and others divide by when the chain is built.
            return max((end if end is not None else length(where)) - start, 1)

        phases.append(build_scheduler(optimizer, spec, phase_length))
    return SequentialLR(optimizer, phases, milestones=stage.milestones)


class WithWarmup(LRScheduler):
    """A stage's schedule and its linear warmup as one scheduler, stepped after every optimizer step.

    One scheduler per stage is what Lightning's StochasticWeightAveraging accepts. The two torch schedulers inside
    are created and stepped as two separate ones were, in the same order, so the lr is the same at every step: a
    per-step schedule steps before the warmup; a per-epoch one after the warmup, at the last of the epoch's
    `steps_per_epoch` optimizer steps (Lightning steps every epoch that many times, the last partial window too).
    """

    def __init__(self, optimizer: Optimizer, schedule: Any, warmup: LinearLR, steps_per_epoch: int | None) -> None:
        # No LRScheduler.__init__: its initial step would move the lr that the two inside have already set.
        self.optimizer, self.schedule, self.warmup = optimizer, schedule, warmup
        self.steps_per_epoch = steps_per_epoch  # None: the schedule counts optimizer steps
        self.steps_in_epoch = 0
        self.last_epoch = 0
        self._last_lr = warmup.get_last_lr()

    def step(self, epoch: int | None = None) -> None:  # torch's signature; the count is our own
        self.last_epoch += 1
        if self.steps_per_epoch is None:
            self.schedule.step()
            self.warmup.step()
        else:
            self.warmup.step()
            self.steps_in_epoch += 1
            if self.steps_in_epoch >= self.steps_per_epoch:
                self.steps_in_epoch = 0
                self.schedule.step()
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule.state_dict(),
            "warmup": self.warmup.state_dict(),
            "steps_in_epoch": self.steps_in_epoch,
            "last_epoch": self.last_epoch,
            "_last_lr": self._last_lr,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state_dict["schedule"])
        self.warmup.load_state_dict(state_dict["warmup"])
        self.steps_in_epoch, self.last_epoch = state_dict["steps_in_epoch"], state_dict["last_epoch"]
        self._last_lr = state_dict["_last_lr"]


def inner(scheduler: Any) -> Any:
    """The stage's own schedule of a scheduler config: inside a WithWarmup, or the scheduler itself."""
    return scheduler.schedule if isinstance(scheduler, WithWarmup) else scheduler


def horizons(schedulers: list[Any]) -> dict[tuple[int, int, str], tuple[str, Any]]:
    """The horizon of every scheduler (and every phase of a chain), keyed by position, to spot a resume."""
    found = {}
    for i, scheduler in enumerate(schedulers):
        for j, sub in enumerate(chained_schedulers(inner(scheduler))):
            for arg in HORIZON_ARGS:
                if hasattr(sub, arg):
                    found[(i, j, arg)] = (type(sub).__name__, getattr(sub, arg))
    return found


def check_resumed_horizons(planned: dict, restored: dict) -> None:
    """A resumed scheduler keeps the horizon saved in its checkpoint, whatever max_epochs is now."""
    for key, (name, wanted) in planned.items():
        kept = restored.get(key, (name, wanted))[1]
        if kept == wanted:
            continue
        message = (
            f"The resumed {name} keeps {key[2]}={kept} from its checkpoint; this run's length would give "
            f"{wanted}. The schedule does not stretch to a new max_epochs on resume."
        )
        if name == "OneCycleLR" and kept < wanted:  # torch raises once it steps past total_steps
            raise ValueError(message + " OneCycleLR would fail at step " + f"{kept + 1}: keep max_epochs as it was.")
        rank_zero_warn(message + " Start a new run from the weights to plan a longer schedule.")
