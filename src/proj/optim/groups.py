"""Parameter groups and the optimizer: pure functions of (model, config, numbers), like timm's param groups.

- no weight decay (and no L1) on biases, norm weights and every other 1-D parameter (`no_decay_1d`);
- per-name rules (`groups`: fnmatch pattern, lr_scale, weight_decay), first match wins;
- layer-wise lr decay (`layer_decay`): one group per block of the net, the lr falling with depth from the head;
- each group's lr multiplied by its lr_scale (and by the world size under `scale_lr`) before any scheduler
  exists, since schedulers record `initial_lr` when they are created;
- torch's fused kernel where it has one for the class, device and dtype (third-party classes such as
  lion-pytorch's Lion have none: they are built as configured);
- Schedule-Free optimizers (schedulefree's AdamWScheduleFree, ...; any with train() / eval()) run without a
  scheduler: their lr is constant after their own `warmup_steps`, and the model switches their mode.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from typing import Any

import torch
from torch import nn
from torch.optim import LBFGS, Optimizer

from proj.nets.blocks import blocks
from proj.optim.classes import ClassSpec
from proj.optim.config import GroupRule, OptimConfig, Stage, parse_groups

# Optimizers with a fused kernel (one kernel updates every parameter) on these devices, since torch 2.5.
FUSED = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)
FUSED_DEVICES = ("cpu", "cuda")


def param_groups(model: nn.Module, config: OptimConfig, optimizer_cls: type) -> list[dict[str, Any]]:
    """Fresh parameter-group dicts (torch mutates them: never reuse them for a second optimizer).

    Each group carries an `lr_scale`, applied by `build_optimizer` once the optimizer has filled in its lr.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if issubclass(optimizer_cls, LBFGS):  # one group only, and it has no weight decay to split by
        return [{"params": [p for _, p in named], "lr_scale": 1.0}]
    rules = parse_groups(config.groups)
    layers = layer_scales(model, config.layer_decay)
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    used = set()
    for name, p in named:
        rule_index = next((i for i, r in enumerate(rules) if fnmatch.fnmatchcase(name, r.pattern)), None)
        rule = rules[rule_index] if rule_index is not None else GroupRule(pattern="*")
        used.add(rule_index)
        weight_decay = rule.weight_decay
        if weight_decay is None and config.no_decay_1d and p.ndim <= 1:
            weight_decay = 0.0
        layer, layer_scale = layers.get(id(p), (None, 1.0))
        key = (rule_index, weight_decay, layer)
        if key not in groups:
            label = (rule.pattern.rstrip("*.") or rule.pattern) if rule_index is not None else "default"
            label += "/no_decay" if weight_decay == 0.0 and rule.weight_decay is None else ""
            label += f"/{layer}" if layer is not None else ""
            groups[key] = {"params": [], "name": label, "lr_scale": rule.lr_scale * layer_scale}
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


def layer_scales(model: nn.Module, decay: float) -> dict[int, tuple[str, float]]:
    """{id(parameter): (its block's name, decay ** blocks after it)} for layer-wise lr decay; {} when it is off.
    A model's net is `model.net` (the template's task modules); parameters outside the net keep the full lr.
    Blocks without parameters (pooling) are not layers here: they would only widen the gaps."""
    if decay == 1.0:
        return {}
    net = getattr(model, "net", model)
    ordered = [(name, block) for name, block in blocks(net).items() if any(True for _ in block.parameters())]
    return {
        id(p): (name, decay ** (len(ordered) - 1 - depth))
        for depth, (name, block) in enumerate(ordered)
        for p in block.parameters()
    }


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
    `takes_fused`): the fastest step torch has (benchmarks/overhead.py's "fused loop" row against the plain loop).
    `init_args.fused: false` opts out."""
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


def l1_penalty(model: nn.Module, config: OptimConfig) -> torch.Tensor:
    """`l1 * sum|w|` over all trainable weights, except 1-D ones (biases, norms) when no_decay_1d is on.

    Group rules do not change it: L1 is a property of the loss, not of an optimizer's parameter groups.
    """
    weights = [p for p in model.parameters() if p.requires_grad and not (config.no_decay_1d and p.ndim <= 1)]
    return config.l1 * sum(p.abs().sum() for p in weights)
