"""Optimizers, parameter groups and learning-rate schedules, built from a model's `optim` config.

Every optimizer and scheduler is torch's own class (or Lightning's, or the user's), named by class_path.
This file is only the glue that neither torch nor Lightning has: parameter groups, horizons filled from the
trainer, a linear warmup, chains of schedulers, and multi-stage optimizer switching. Each rule below exists
because the naive version silently trains with the wrong learning rate; DESIGN.md lists them.

Stages are plain dicts, validated here rather than by jsonargparse, on purpose: jsonargparse merges a
stacked config's stage into the previous file's stage field by field (and keeps shared init_args when a
class_path changes), so `--config default.yaml --config optim/sgd_nesterov_step.yaml` would run SGD with
AdamW's weight decay and warmup. As plain dicts, a later file's `stages` list replaces the earlier one whole.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.optim import LBFGS, Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
)

if TYPE_CHECKING:
    import lightning.pytorch as L

# Arguments that give a scheduler's length; a 0 there means "the stage's length, in the scheduler's unit".
HORIZON_ARGS = ("T_max", "total_steps", "total_iters")
# These compute the lr from base_lr at every step, so a separate warmup factor is overwritten or makes the lr
# overshoot; OneCycleLR and CyclicLR carry their own warm-up phase.
NO_WARMUP = (LambdaLR, CosineAnnealingWarmRestarts, OneCycleLR, CyclicLR)
# Where a class_path without a module is looked up, in order: Lightning's ReduceLROnPlateau (which carries
# `monitor`) before torch's.
SHORT_NAME_MODULES = ("lightning.pytorch.cli", "torch.optim", "torch.optim.lr_scheduler")
# Schedulers that set the lr from their own lr arguments rather than from the group's initial lr: these
# arguments are scaled per group (a list, one value per group) so that `lr_scale` rules still apply.
OWN_LR_ARGS = {OneCycleLR: ("max_lr",), CyclicLR: ("base_lr", "max_lr")}
AMP_PRECISIONS = ("16-mixed", "bf16-mixed", "16", "bf16", 16)
# Optimizers with a fused kernel (one kernel updates every parameter) on these devices, since torch 2.5.
FUSED = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)
FUSED_DEVICES = ("cpu", "cuda")


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
    """

    # Bare `dict` on purpose: with dict[str, Any] jsonargparse expands nested class_path dicts itself.
    stages: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    no_decay_1d: bool = True
    l1: float = 0.0
    scale_lr: Literal["none", "linear", "sqrt"] = "none"


@dataclass
class GroupRule:
    pattern: str
    lr_scale: float = 1.0
    weight_decay: float | None = None


@dataclass
class ClassSpec:
    """A `{class_path, init_args}` dict, resolved and checked against the class's signature."""

    cls: type
    init_args: dict[str, Any]
    where: str  # the config key, for error messages


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


# ----------------------------------------------------------------------------------------------------------
# Parsing and validation: everything that can be checked without a trainer is checked when the model is
# built, so a bad config fails in seconds, not after the first epoch.


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
    if config.groups and any(issubclass(s.optimizer.cls, LBFGS) for s in stages):
        raise ValueError(
            "optim.groups is set but a stage uses torch.optim.LBFGS, which accepts one parameter group only: "
            "remove optim.groups"
        )
    parse_groups(config.groups)
    if config.l1 < 0:
        raise ValueError(f"optim.l1={config.l1} must be >= 0")
    if config.scale_lr not in ("none", "linear", "sqrt"):
        raise ValueError(f"optim.scale_lr={config.scale_lr!r}: expected none, linear or sqrt")
    return stages


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
        warmup_steps=typed(d, "warmup_steps", int, 0, where),
        warmup_start_factor=typed(d, "warmup_start_factor", float, 0.01, where),
        start_epoch=typed(d, "start_epoch", int, 0, where),
        where=where,
    )
    check_stage(stage, chain)
    return stage


def check_stage(stage: Stage, chain: bool) -> None:
    where = stage.where
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
        lr_scale = typed(g, "lr_scale", float, 1.0, where)
        weight_decay = None if g.get("weight_decay") is None else typed(g, "weight_decay", float, 0.0, where)
        rules.append(GroupRule(g["pattern"], lr_scale, weight_decay))
    return rules


def int_list(d: dict[str, Any], key: str, where: str) -> list[int]:
    value = d.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{where}.{key}={value!r} must be a list of integers")
    return value


def check_keys(d: dict[str, Any], known: tuple[str, ...] | list[str], where: str) -> None:
    for key in d:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(f"{where}.{key}: unknown key{did_you_mean}; known keys: {', '.join(known)}")


def typed(d: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = d.get(key, default)
    ok = isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
    if not ok or isinstance(value, bool):
        raise ValueError(f"{where}.{key}={value!r} must be {'a number' if kind is float else 'an integer'}")
    return kind(value)


def parse_class(spec: Any, where: str, base: type | tuple[type, ...]) -> ClassSpec:
    if isinstance(spec, str):
        spec = {"class_path": spec}
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"{where} must be {{class_path: ..., init_args: {{...}}}}; got {spec!r}")
    check_keys(spec, ("class_path", "init_args"), where)
    cls = import_class(spec["class_path"], f"{where}.class_path")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        kinds = base if isinstance(base, tuple) else (base,)
        raise ValueError(
            f"{where}.class_path={spec['class_path']!r} is not a subclass of " + " or ".join(k.__name__ for k in kinds)
        )
    init_args = dict(spec.get("init_args") or {})
    params = init_parameters(cls)
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for key in init_args:
            if key not in params:
                hint = difflib.get_close_matches(key, list(params), n=1)
                did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ValueError(
                    f"{where}.init_args.{key}: {cls.__name__} has no argument {key!r}{did_you_mean}; "
                    f"it takes: {', '.join(params)}"
                )
    return ClassSpec(cls, init_args, where)


def import_class(path: str, where: str) -> Any:
    candidates = [path] if "." in path else [f"{m}.{path}" for m in SHORT_NAME_MODULES]
    for candidate in candidates:
        module_name, _, name = candidate.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue  # that module does not exist: try the next candidate
            raise  # the user's module exists but fails to import: show its own error
        if hasattr(module, name):
            return getattr(module, name)
    raise ValueError(f"{where}={path!r} cannot be imported; write the full path, e.g. torch.optim.AdamW")


def init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments of `cls`, without self and the first positional (params / optimizer)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]
    return {p.name: p for p in params}


def hasattr_init(cls: type, name: str) -> bool:
    return name in init_parameters(cls)


# ----------------------------------------------------------------------------------------------------------
# Building: called from configure_optimizers, once per stage.


def stage_at(stages: list[Stage], epoch: int) -> int:
    """Index of the stage that trains `epoch`."""
    return max(i for i, s in enumerate(stages) if s.start_epoch <= epoch)


def param_groups(model: nn.Module, config: OptimConfig, optimizer_cls: type) -> list[dict[str, Any]]:
    """Fresh parameter-group dicts (torch mutates them: never reuse them for a second optimizer).

    Each group carries an `lr_scale`, applied by `build_optimizer` once the optimizer has filled in its lr.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if issubclass(optimizer_cls, LBFGS):  # one group only, and it has no weight decay to split by
        return [{"params": [p for _, p in named], "lr_scale": 1.0}]
    rules = parse_groups(config.groups)
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    used = set()
    for name, p in named:
        rule_index = next((i for i, r in enumerate(rules) if fnmatch.fnmatchcase(name, r.pattern)), None)
        rule = rules[rule_index] if rule_index is not None else GroupRule(pattern="*")
        used.add(rule_index)
        weight_decay = rule.weight_decay
        if weight_decay is None and config.no_decay_1d and p.ndim <= 1:
            weight_decay = 0.0
        key = (rule_index, weight_decay)
        if key not in groups:
            label = (rule.pattern.rstrip("*.") or rule.pattern) if rule_index is not None else "default"
            label += "/no_decay" if weight_decay == 0.0 and rule.weight_decay is None else ""
            groups[key] = {"params": [], "name": label, "lr_scale": rule.lr_scale}
            if weight_decay is not None:
                groups[key]["weight_decay"] = weight_decay
        groups[key]["params"].append(p)
    for i, rule in enumerate(rules):
        if i not in used:
            examples = ", ".join(n for n, _ in named[:4])
            raise ValueError(
                f"optim.groups[{i}].pattern={rule.pattern!r} matches no parameter (names look like: {examples})"
            )
    return list(groups.values())


def takes_fused(spec: ClassSpec, model: nn.Module) -> bool:
    """Whether `fused=True` may be added: torch has a fused kernel for the class and every parameter's device
    and dtype (torch checks only at the first step), and the config chose no implementation itself."""
    if {"fused", "foreach"} & spec.init_args.keys() or not issubclass(spec.cls, FUSED):
        return False
    if "fused" not in inspect.signature(spec.cls).parameters:  # a subclass with its own arguments
        return False
    return all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in model.parameters())


def world_size_factor(config: OptimConfig, world_size: int) -> float:
    return {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[config.scale_lr]


def build_optimizer(
    model: nn.Module, config: OptimConfig, stage: Stage, world_size: int = 1, fused: bool = True
) -> Optimizer:
    """fused: use torch's fused kernel (one kernel for every parameter's update) where it has one (see
    `takes_fused`). AdamW's step on the digits CNN: 0.65 ms torch's CPU default, 0.48 ms foreach, 0.16 ms
    fused. `init_args.fused: false` opts out."""
    spec = stage.optimizer
    fused_arg = {"fused": True} if fused and takes_fused(spec, model) else {}
    try:
        optimizer = spec.cls(param_groups(model, config, spec.cls), **spec.init_args, **fused_arg)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{spec.where}: {spec.cls.__name__}({spec.init_args}) failed: {err}") from err
    # Scale each group's lr before any scheduler exists: schedulers record `initial_lr` when created.
    # `lr_scale` stays in the group for the schedulers that take their own lr arguments (OWN_LR_ARGS).
    factor = world_size_factor(config, world_size)
    for group in optimizer.param_groups:
        group["lr_scale"] = group.get("lr_scale", 1.0) * factor
        group["lr"] = group["lr"] * group["lr_scale"]
    return optimizer


@dataclass
class RunLength:
    """How long each stage is, in epochs and optimizer steps, read from the trainer when first needed.

    A stage ends at the next stage's start_epoch, at max_epochs, or at max_steps, whichever comes first.
    """

    trainer: L.Trainer
    stages: list[Stage]

    def of(self, index: int, interval: str, where: str) -> int:
        stage, t = self.stages[index], self.trainer
        next_start = self.stages[index + 1].start_epoch if index + 1 < len(self.stages) else None
        max_epochs = t.max_epochs if t.max_epochs is not None and t.max_epochs >= 0 else None
        max_steps = t.max_steps if t.max_steps is not None and t.max_steps > 0 else None
        if interval == "epoch":  # the data's length matters only when max_steps may end the run first
            ends = [e for e in (next_start, max_epochs) if e is not None]
            if max_steps is not None:
                ends.append(math.ceil(max_steps / self.steps_per_epoch(where, interval)))
            if not ends:
                self.unknown(where, interval, "trainer.max_epochs is -1 and trainer.max_steps is not set")
            return min(ends) - stage.start_epoch
        per_epoch = self.steps_per_epoch(where, interval)
        ends = [e * per_epoch for e in (next_start, max_epochs) if e is not None]
        if max_steps is not None:
            ends.append(max_steps)
        if not ends:
            self.unknown(where, interval, "trainer.max_epochs is -1 and trainer.max_steps is not set")
        return min(ends) - stage.start_epoch * per_epoch

    def steps_per_epoch(self, where: str, interval: str) -> int:
        """Optimizer steps per epoch: batches (after limit_train_batches) over accumulate_grad_batches."""
        t = self.trainer
        if t.train_dataloader is None:
            t.fit_loop.setup_data()  # what trainer.estimated_stepping_batches does too
        if t.num_training_batches in (float("inf"), -1):
            self.unknown(where, interval, "the training data has no length (an iterable dataset)")
        # Lightning steps on the last, partial accumulation window of an epoch too: hence the ceiling.
        return math.ceil(t.num_training_batches / t.accumulate_grad_batches)

    @staticmethod
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


def build_schedulers(optimizer: Optimizer, stage: Stage, length: Callable[[str], int]) -> list[dict[str, Any]]:
    """Lightning scheduler configs for one stage: the schedule (one scheduler or a chain), then the warmup.

    The warmup is created last: SequentialLR resets the lr when it is built, which would undo a warmup
    factor applied before it. Lightning steps the configs in this order.
    """
    configs = []
    specs = stage.schedulers
    if specs:
        if len(specs) == 1:
            main = build_scheduler(optimizer, specs[0], length)
        else:  # a chain: each phase's horizon is the distance to the next milestone
            bounds = [0, *stage.milestones]
            phases = []
            for i, spec in enumerate(specs):
                phase_end = bounds[i + 1] if i + 1 < len(bounds) else None

                def phase_length(where: str, start: int = bounds[i], end: int | None = phase_end) -> int:
                    return (end if end is not None else length(where)) - start

                phases.append(build_scheduler(optimizer, spec, phase_length))
            main = SequentialLR(optimizer, phases, milestones=stage.milestones)
        config = {"scheduler": main, "interval": stage.interval, "frequency": 1, "name": "lr"}
        if isinstance(main, ReduceLROnPlateau):
            config["monitor"] = main.monitor
        configs.append(config)
    if stage.warmup_steps:
        warmup = LinearLR(optimizer, stage.warmup_start_factor, 1.0, total_iters=stage.warmup_steps)
        configs.append({"scheduler": warmup, "interval": "step", "frequency": 1, "name": "lr"})
    return configs


def configure_stage(module: L.LightningModule, config: OptimConfig, stages: list[Stage], index: int) -> Any:
    """What `configure_optimizers` returns for stage `index`: the optimizer and its scheduler configs."""
    stage = stages[index]
    trainer = module.trainer
    if issubclass(stage.optimizer.cls, LBFGS) and trainer.precision in AMP_PRECISIONS:
        raise ValueError(
            f"{stage.optimizer.where}: torch.optim.LBFGS does not work with trainer.precision="
            f"{trainer.precision!r} (mixed precision cannot scale its closure); use precision 32-true"
        )
    for spec in stage.schedulers:
        monitor = spec.init_args.get("monitor", "")
        if (
            issubclass(spec.cls, ReduceLROnPlateau)
            and monitor.startswith("val/")
            and trainer.check_val_every_n_epoch != 1
        ):
            raise ValueError(
                f"{spec.where}.init_args.monitor={monitor!r} exists only after validation, but "
                f"trainer.check_val_every_n_epoch={trainer.check_val_every_n_epoch}: set it to 1"
            )
    # Under mixed precision a fused optimizer unscales the gradients inside its own step: Lightning then refuses
    # to clip them (even under bf16, which has no scaler), and hooks before the step would see them scaled
    # (the logged gradient norm). So the fused kernel is a default only at full or plain half precision.
    mixed = trainer.precision in AMP_PRECISIONS
    if mixed and trainer.gradient_clip_val and stage.optimizer.init_args.get("fused"):
        raise ValueError(
            f"{stage.optimizer.where}.init_args.fused=true cannot be combined with trainer.precision="
            f"{trainer.precision!r} and trainer.gradient_clip_val={trainer.gradient_clip_val}: Lightning does not "
            "clip the gradients of a fused optimizer under mixed precision. Remove fused (or set it to false), "
            "or turn clipping off"
        )
    optimizer = build_optimizer(module, config, stage, trainer.world_size, fused=not mixed)
    run = RunLength(trainer, stages)

    def length(where: str) -> int:
        return run.of(index, stage.interval or "step", where)

    schedulers = build_schedulers(optimizer, stage, length)
    return [optimizer], schedulers


def horizons(schedulers: list[Any]) -> dict[tuple[int, int, str], tuple[str, Any]]:
    """The horizon of every scheduler (and every phase of a chain), keyed by position, to spot a resume."""
    found = {}
    for i, scheduler in enumerate(schedulers):
        for j, sub in enumerate(getattr(scheduler, "_schedulers", [scheduler])):
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


def l1_penalty(model: nn.Module, config: OptimConfig) -> torch.Tensor:
    """`l1 * sum|w|` over all trainable weights, except 1-D ones (biases, norms) when no_decay_1d is on.

    Group rules do not change it: L1 is a property of the loss, not of an optimizer's parameter groups.
    """
    weights = [p for p in model.parameters() if p.requires_grad and not (config.no_decay_1d and p.ndim <= 1)]
    return config.l1 * sum(p.abs().sum() for p in weights)
