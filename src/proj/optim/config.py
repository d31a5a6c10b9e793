"""The model's `optim` config and its validation: stages, parameter-group rules, L1, lr scaling.

Everything that can be checked without a trainer is checked when the model is built, so a bad config fails
in seconds, not after the first epoch. Each rule exists because the naive version silently trains with the
wrong learning rate; DESIGN.md lists them.

Stages are plain dicts, validated here rather than by jsonargparse, on purpose: jsonargparse merges a
stacked config's stage into the previous file's stage field by field (and keeps shared init_args when a
class_path changes), so `--config default.yaml --config optim/sgd_nesterov_step.yaml` would run SGD with
AdamW's weight decay and warmup. As plain dicts, a later file's `stages` list replaces the earlier one whole.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from torch.optim import LBFGS, Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LambdaLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
)

from proj.optim.classes import ClassSpec, check_keys, hasattr_init, parse_class, typed_value

# These compute the lr from base_lr at every step, so a separate warmup factor is overwritten or makes the lr
# overshoot; OneCycleLR and CyclicLR carry their own warm-up phase.
NO_WARMUP = (LambdaLR, CosineAnnealingWarmRestarts, OneCycleLR, CyclicLR)


@dataclass
class OptimConfig:
    """The model's `optim` argument: optimizer stages, parameter-group rules, L1 penalty.

    stages: one dict per training stage (see `Stage` for its keys); several stages switch optimizer at
        their `start_epoch`. Empty means AdamW with torch's defaults and no schedule.
    groups: parameter-group rules `{pattern, lr_scale, weight_decay}`; the first pattern (fnmatch on the
        parameter's name, e.g. "net.head.*") that matches a parameter decides its group.
    no_decay_1d: no weight decay (and no L1) on biases, norm weights and every other 1-D parameter.
    l1: weight of an L1 penalty `l1 * sum|w|` added to the training loss (optimizers only know L2).
    scale_lr: none | linear | sqrt: multiply every lr by the world size (devices x nodes) or its square
        root. The global batch grows with the world size; linear suits SGD (Goyal et al. 2017), sqrt Adam.
    layer_decay: layer-wise lr decay (timm's --layer-decay; Clark et al. 2020): the net's blocks in depth
        order (stem, body.0 .. body.n-1, head: proj.nets.blocks) get lr x layer_decay ** (blocks after it),
        so the head trains at the full lr and each block below at layer_decay times the one above. Combined
        (multiplied) with a group rule's lr_scale. 1 (default) is off; 0.65-0.9 is usual for fine-tuning.
    """

    # Bare `dict` on purpose: with dict[str, Any] jsonargparse expands nested class_path dicts itself.
    stages: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    no_decay_1d: bool = True
    l1: float = 0.0
    scale_lr: Literal["none", "linear", "sqrt"] = "none"
    layer_decay: float = 1.0


@dataclass
class GroupRule:
    pattern: str
    lr_scale: float = 1.0
    weight_decay: float | None = None


@dataclass
class Stage:
    """One stage of training: an optimizer, an optional schedule, from `start_epoch` on.

    lr_scheduler: one scheduler, or a list of them run one after another (a chain, `SequentialLR`), the
        next one starting at each of `milestones` (in `interval` units from the stage's start).
    interval: "step" or "epoch": what the scheduler counts. Required with a scheduler, because the wrong
        one silently does nothing useful (a cosine over 10 "steps" that are really epochs).
    warmup_steps: a linear warmup over this many optimizer steps, composed with the scheduler.
    """

    optimizer: ClassSpec
    schedulers: list[ClassSpec]
    milestones: list[int]
    interval: str | None
    warmup_steps: int
    warmup_start_factor: float
    start_epoch: int
    where: str


STAGE_KEYS = (
    "optimizer",
    "lr_scheduler",
    "milestones",
    "interval",
    "warmup_steps",
    "warmup_start_factor",
    "start_epoch",
)


def parse_stages(config: OptimConfig) -> list[Stage]:
    raw = config.stages or [{"optimizer": {"class_path": "torch.optim.AdamW"}}]
    stages = [parse_stage(d, f"optim.stages[{i}]") for i, d in enumerate(raw)]
    if stages[0].start_epoch != 0:
        raise ValueError(f"optim.stages[0].start_epoch={stages[0].start_epoch}: the first stage must start at 0")
    for prev, cur in itertools.pairwise(stages):
        if cur.start_epoch <= prev.start_epoch:
            raise ValueError(
                f"{cur.where}.start_epoch={cur.start_epoch} must be larger than the previous stage's "
                f"({prev.start_epoch}): stages run in order"
            )
    grouped = "optim.groups" if config.groups else "optim.layer_decay" if config.layer_decay != 1.0 else None
    if grouped and any(issubclass(s.optimizer.cls, LBFGS) for s in stages):
        raise ValueError(
            f"{grouped} is set but a stage uses torch.optim.LBFGS, which accepts one parameter group only: "
            f"remove {grouped}"
        )
    if not 0.0 < config.layer_decay <= 1.0:
        raise ValueError(f"optim.layer_decay={config.layer_decay} must be in (0, 1]; 1 turns it off")
    parse_groups(config.groups)
    if config.l1 < 0:
        raise ValueError(f"optim.l1={config.l1} must be >= 0")
    if config.scale_lr not in ("none", "linear", "sqrt"):
        raise ValueError(f"optim.scale_lr={config.scale_lr!r}: expected none, linear or sqrt")
    return stages


def check_stages_start_in_run(stages: list[Stage], max_epochs: int | None) -> list[str]:
    """A later stage that starts after max_epochs would never train: refused before the run, not found after it.
    One that starts exactly at max_epochs trains only when the run is resumed with more epochs (a run split at
    a stage boundary): returned as a warning."""
    if max_epochs is None or max_epochs < 0:  # Lightning's default (1000) or an endless run
        return []
    warnings = []
    for stage in stages[1:]:
        where = f"{stage.where}.start_epoch={stage.start_epoch}"
        if stage.start_epoch > max_epochs:
            raise ValueError(
                f"{where} lies beyond trainer.max_epochs={max_epochs}: the stage would never train; raise "
                "trainer.max_epochs or lower start_epoch"
            )
        if stage.start_epoch == max_epochs:
            warnings.append(
                f"model.init_args.{where} = trainer.max_epochs: this run ends where the stage begins; it trains "
                "only if the run is resumed with a larger max_epochs"
            )
    return warnings


def parse_stage(d: Any, where: str) -> Stage:
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a mapping with keys {', '.join(STAGE_KEYS)}; got {d!r}")
    check_keys(d, STAGE_KEYS, where)
    if "optimizer" not in d:
        raise ValueError(f"{where}.optimizer is missing: give {{class_path: torch.optim.AdamW, init_args: ...}}")
    optimizer = parse_class(d["optimizer"], f"{where}.optimizer", Optimizer)
    sched = d.get("lr_scheduler")
    chain = isinstance(sched, list)
    sched_list = sched if chain else ([sched] if sched else [])
    schedulers = [
        parse_class(s, f"{where}.lr_scheduler" + (f"[{i}]" if chain else ""), (LRScheduler, ReduceLROnPlateau))
        for i, s in enumerate(sched_list)
    ]
    stage = Stage(
        optimizer=optimizer,
        schedulers=schedulers,
        milestones=int_list(d, "milestones", where),
        interval=d.get("interval"),
        warmup_steps=typed_value(d, "warmup_steps", int, 0, where),
        warmup_start_factor=typed_value(d, "warmup_start_factor", float, 0.01, where),
        start_epoch=typed_value(d, "start_epoch", int, 0, where),
        where=where,
    )
    check_stage(stage, chain)
    return stage


def check_stage(stage: Stage, chain: bool) -> None:
    where = stage.where
    check_schedule_free(stage)
    if stage.schedulers and stage.interval not in ("step", "epoch"):
        raise ValueError(
            f"{where}.interval={stage.interval!r}: set it to 'step' or 'epoch', the unit in which "
            f"{stage.schedulers[0].cls.__name__} counts (its horizon and its milestones)"
        )
    if chain:
        steps = [0, *stage.milestones]
        if len(stage.milestones) != len(stage.schedulers) - 1 or any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(
                f"{where}.milestones={stage.milestones}: a chain of {len(stage.schedulers)} schedulers needs "
                f"{len(stage.schedulers) - 1} positive, strictly increasing milestones (when each next one starts)"
            )
        for spec in stage.schedulers:
            if issubclass(spec.cls, ReduceLROnPlateau):
                raise ValueError(f"{spec.where}: ReduceLROnPlateau cannot be part of a chain (SequentialLR)")
    elif stage.milestones:
        raise ValueError(f"{where}.milestones is only used with a list of schedulers (a chain)")
    for spec in stage.schedulers:
        if issubclass(spec.cls, ReduceLROnPlateau) and not hasattr_init(spec.cls, "monitor"):
            raise ValueError(
                f"{spec.where}: torch's ReduceLROnPlateau does not say which metric to watch; use "
                "lightning.pytorch.cli.ReduceLROnPlateau with init_args.monitor (e.g. val/loss)"
            )
    for spec in stage.schedulers:
        if issubclass(spec.cls, ReduceLROnPlateau) and stage.interval != "epoch":
            raise ValueError(
                f"{where}.interval={stage.interval!r}: ReduceLROnPlateau watches a metric logged once per epoch "
                "(e.g. val/loss); set interval: epoch"
            )
    if stage.warmup_steps < 0:
        raise ValueError(f"{where}.warmup_steps={stage.warmup_steps} must be >= 0")
    if stage.warmup_steps and (chain or any(issubclass(s.cls, NO_WARMUP) for s in stage.schedulers)):
        name = "a chain of schedulers" if chain else stage.schedulers[0].cls.__name__
        fix = (
            "put a LinearLR first in the chain instead"
            if chain
            else "OneCycleLR and CyclicLR warm up by themselves (pct_start / step_size_up); otherwise drop one"
        )
        raise ValueError(
            f"{where}.warmup_steps={stage.warmup_steps} does not compose with {name}: it sets the lr from the "
            f"base lr at every step, so the warmup would be overwritten or overshoot. Set warmup_steps: 0; {fix}"
        )
    if not 0.0 < stage.warmup_start_factor <= 1.0:
        raise ValueError(f"{where}.warmup_start_factor={stage.warmup_start_factor} must be in (0, 1]")


def parse_groups(groups: list[dict[str, Any]]) -> list[GroupRule]:
    names = [f.name for f in fields(GroupRule)]
    rules = []
    for i, g in enumerate(groups):
        where = f"optim.groups[{i}]"
        if not isinstance(g, dict) or not isinstance(g.get("pattern"), str):
            raise ValueError(f"{where} must be a mapping with a 'pattern' string; got {g!r}")
        check_keys(g, names, where)
        lr_scale = typed_value(g, "lr_scale", float, 1.0, where)
        weight_decay = None if g.get("weight_decay") is None else typed_value(g, "weight_decay", float, 0.0, where)
        rules.append(GroupRule(g["pattern"], lr_scale, weight_decay))
    return rules


def int_list(d: dict[str, Any], key: str, where: str) -> list[int]:
    value = d.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{where}.{key}={value!r} must be a list of integers")
    return value


def switches_modes(optimizer: Optimizer | type) -> bool:
    """Whether an optimizer (or its class) has train() / eval() modes, as Schedule-Free ones do: while training the
    parameters hold the point where gradients are taken, after eval() the averaged weights to evaluate and save."""
    return callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))


def check_schedule_free(stage: Stage) -> None:
    """A Schedule-Free optimizer replaces the schedule by averaging: a scheduler or the stage's separate warmup
    would rescale the lr that its averaging weights are computed from. It warms up by itself (`warmup_steps`)."""
    cls = stage.optimizer.cls
    if not switches_modes(cls):
        return
    own = "optimizer.init_args.warmup_steps" if "warmup_steps" in inspect.signature(cls).parameters else None
    if stage.warmup_steps:
        fix = f"set its {own}: {stage.warmup_steps} instead" if own else "remove it"
        raise ValueError(
            f"{stage.where}.warmup_steps={stage.warmup_steps}: {cls.__name__} is schedule-free and warms up by "
            f"itself; {fix}"
        )
    if stage.schedulers:
        raise ValueError(
            f"{stage.where}.lr_scheduler: {cls.__name__} is schedule-free (it averages its iterates instead of "
            f"decaying the lr); remove lr_scheduler and interval" + (f", warm up with {own}" if own else "")
        )
