"""Freeze part of the net for the first epochs of a fine-tuning run, then train all of it; or unfreeze it
gradually, one part after another (fastai's gradual unfreezing, Howard & Ruder 2018; Composer's LayerFreezing).

    trainer:
      callbacks+:
        - class_path: proj.extras.finetuning.Freeze
          init_args: {pattern: "net.body.*", epochs: 2}   # fnmatch on parameter names, like optim.groups
        # gradual: the top of the body first, the stem last (configs/callbacks/gradual_unfreeze.yaml)
        - class_path: proj.extras.finetuning.Freeze
          init_args: {pattern: ["net.body.[34].*", "net.body.[01].*", "net.stem.*"], epochs: [1, 2, 3]}

Why not the mechanism of Lightning's BaseFinetuning (requires_grad=False before configure_optimizers, then
`unfreeze_and_add_param_group` into the live optimizer)? In this template it goes wrong four ways:
- the added group has no `initial_lr`: the stage's scheduler (warmup, cosine, plateau) never planned it;
- it bypasses the template's groups (no_decay_1d, per-pattern lr_scale, world-size lr scaling);
- a stage switch rebuilds the optimizer from the parameters that require grad (frozen ones are left out), and on
  resume BaseFinetuning writes the param groups it stored at the first epoch over the live optimizer's;
- DDP builds its gradient reducer once: parameters frozen after it wraps the model make the next step fail
  ("Expected to have finished reduction"), parameters frozen before it are never synchronised once unfrozen.
So every parameter stays trainable and in its optimizer group from the first step, scheduled like the others;
during the frozen epochs the gradients of the matched parameters are dropped after each backward, and torch's
optimizers (fused ones too) skip a parameter whose grad is None: no update, no weight decay, no moment state
(fused SGD then needs the momentum of those parameters started by hand: `start_momentum`).
The price: the backward still runs through the frozen part (no speed-up, the weights are protected all the same).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer


class Freeze(Callback):
    """Keep the parameters whose names match `pattern` (one fnmatch pattern or a list) unchanged for the first
    `epochs` epochs of fit, then train them with the rest.

    epochs: one number for every pattern, or one per pattern (gradual unfreezing): the parameters of pattern i
        (those it is the first to match) stay frozen for epochs[i] epochs.
    train_bn: BatchNorm layers in the frozen part keep training (Lightning's BaseFinetuning default); false
        freezes them too: their weights, and their running statistics (eval mode during the frozen epochs).
    """

    def __init__(self, pattern: str | Sequence[str], epochs: int | Sequence[int] = 1, train_bn: bool = True) -> None:
        self.patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        if not self.patterns:
            raise ValueError("Freeze.pattern is empty: name the parameters to freeze, e.g. 'net.body.*'")
        self.epochs = [epochs] * len(self.patterns) if isinstance(epochs, int) else list(epochs)
        if len(self.epochs) != len(self.patterns):
            raise ValueError(
                f"Freeze.epochs={list(self.epochs)} has {len(self.epochs)} values for {len(self.patterns)} patterns: "
                "give one number, or one per pattern"
            )
        if min(self.epochs) < 1:
            raise ValueError(f"Freeze.epochs={epochs} must be at least 1 (the epochs that the parameters stay frozen)")
        self.train_bn = train_bn
        # Per pattern: its parameters (those it is the first to match) and its BatchNorm layers (train_bn false).
        self.frozen: list[list[nn.Parameter]] = []
        self.frozen_bn: list[list[_BatchNorm]] = []
        self.started: set[tuple[int, int]] = set()  # (optimizer, parts unfrozen) whose momentum is set up

    def matches(self, name: str) -> bool:
        return self.part_of(name) is not None

    def part_of(self, name: str) -> int | None:
        return next((i for i, p in enumerate(self.patterns) if fnmatch.fnmatchcase(name, p)), None)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # Before the loop: a pattern that matches nothing, or freezes nothing or everything, is the config's mistake.
        names = [n for n, _ in pl_module.named_parameters()]
        for pattern in self.patterns:  # each one: a typo in one of several patterns would leave its part training
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                examples = ", ".join(names[:4])
                raise ValueError(f"Freeze.pattern {pattern!r} matches no parameter (names look like: {examples})")
        self.frozen, self.frozen_bn = [[] for _ in self.patterns], [[] for _ in self.patterns]
        for module_name, module in pl_module.named_modules():
            if isinstance(module, _BatchNorm) and self.train_bn:
                continue
            for n, p in module.named_parameters(recurse=False):
                part = self.part_of(f"{module_name}.{n}")
                if part is not None:
                    self.frozen[part].append(p)
                    if isinstance(module, _BatchNorm) and module not in self.frozen_bn[part]:
                        self.frozen_bn[part].append(module)
        if not any(self.frozen):
            raise ValueError(
                f"Freeze.pattern={self.patterns} matches only BatchNorm parameters, which train_bn: true keeps "
                "training: nothing would be frozen; match other layers too, or set Freeze.train_bn: false"
            )
        if all(self.matches(n) for n in names):
            raise ValueError(
                f"Freeze.pattern={self.patterns} matches every parameter: nothing would train in the "
                f"{min(self.epochs)} frozen epoch(s); freeze a part of the net, e.g. 'net.body.*'"
            )

    def frozen_now(self, trainer: L.Trainer) -> list[int]:
        """The parts frozen in this epoch: from the epoch counter, so a resumed run needs no saved state."""
        return [i for i, epochs in enumerate(self.epochs) if trainer.current_epoch < epochs]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for i, epochs in enumerate(self.epochs):
            if trainer.current_epoch == epochs:
                rank_zero_info(
                    f"Freeze: from epoch {epochs} on, {len(self.frozen[i])} parameters {self.patterns[i]} train."
                )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Lightning puts the whole model back in train mode at each epoch and after each validation.
        for i in self.frozen_now(trainer):
            for module in self.frozen_bn[i]:
                module.eval()

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After DDP has reduced them (every rank drops the same ones), before clipping and the optimizer step.
        for i in self.frozen_now(trainer):
            for param in self.frozen[i]:
                param.grad = None

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        # Once per optimizer (each stage builds its own) and per part unfrozen: their first gradients.
        key = (id(optimizer), len(self.patterns) - len(self.frozen_now(trainer)))
        if key[1] and key not in self.started:
            self.started.add(key)
            start_momentum(optimizer)


def start_momentum(optimizer: Optimizer) -> None:
    """torch's fused SGD (the template's default for SGD) starts the momentum of a whole param group at once and
    fails ("expected Tensor ... but got NoneType") on a group where only some parameters have a momentum buffer:
    give each one that was frozen the buffer that makes its first step torch's own (buf = grad)."""
    for group in optimizer.param_groups:
        momentum, dampening = group.get("momentum") or 0.0, group.get("dampening") or 0.0
        if not (group.get("fused") and momentum):
            continue
        for param in group["params"]:
            state = optimizer.state[param]
            if param.grad is not None and state.get("momentum_buffer") is None:
                # the fused step computes momentum * buf + (1 - dampening) * grad, which is then grad
                state["momentum_buffer"] = param.grad.detach() * (dampening / momentum)
