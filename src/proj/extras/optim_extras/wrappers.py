"""SAM and Lookahead, pytorch-optimizer's, built like every other optimizer of an optim stage.

Both wrap a base optimizer. pytorch-optimizer takes the base as a class (SAM) or an instance (Lookahead); a stage
builds its optimizer as `class_path(param_groups, **init_args)` from YAML, so here the base is a class path and
its own arguments (lr, weight_decay, momentum...) sit beside the wrapper's:

    optimizer:
      class_path: proj.extras.optim_extras.SAM
      init_args: {base_optimizer: torch.optim.SGD, rho: 0.05, lr: 0.05, momentum: 0.9}

Both share the base optimizer's param groups, so the template's groups (no weight decay on 1-D parameters,
lr_scale rules, layer_decay), warmup and schedulers act on the base's lr as they would on the base alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pytorch_optimizer import SAM as PytorchOptimizerSAM
from pytorch_optimizer import Lookahead as PytorchOptimizerLookahead
from torch.optim import Optimizer

from proj.optim.classes import import_class


def base_class(path: str, wrapper: str) -> type[Optimizer]:
    cls = import_class(path, f"{wrapper}.base_optimizer")
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise ValueError(f"{wrapper}.base_optimizer={path!r} is not an optimizer class (e.g. torch.optim.SGD)")
    return cls


class SAM(PytorchOptimizerSAM):
    """Sharpness-aware minimisation (Foret et al. 2021): each step takes the gradient at the weights moved by
    `rho` up the gradient (the worst point of a small ball), then applies it to the original weights with the
    base optimizer. Two forward and backward passes per step: about twice the step time.

    pytorch-optimizer's step expects the first gradient to exist already; in Lightning the first gradient is
    computed inside `optimizer.step(closure)`, so this step calls the closure first. Each closure call is a full
    training step: the training loss and metrics of the epoch count both passes (the second at the perturbed
    weights), and BatchNorm's running statistics move twice per step.

    adaptive: ASAM (Kwon et al. 2021), the ball scaled by each weight's size; rho is then usually 10x larger.
    """

    reevaluates_closure = True  # what proj.optim.stages refuses with mixed precision and gradient accumulation

    def __init__(
        self, params: Any, base_optimizer: str = "torch.optim.SGD", rho: float = 0.05, adaptive: bool = False, **base
    ) -> None:
        super().__init__(params, base_class(base_optimizer, "SAM"), rho=rho, adaptive=adaptive, **base)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if closure is None:
            raise ValueError("SAM needs a closure (Lightning's automatic optimization passes one)")
        with torch.enable_grad():
            loss = closure()  # the gradient at the current weights
        super().step(closure)  # perturb, the closure again at the perturbed weights, restore, base step
        return loss


class Lookahead(PytorchOptimizerLookahead):
    """Lookahead (Zhang et al. 2019): the base optimizer takes `k` fast steps, then the slow weights move `alpha`
    of the way towards the fast ones and the fast weights restart from there. One extra weight copy in memory,
    and a lerp every k steps. The slow weights travel in checkpoints (a resumed run continues them)."""

    def __init__(
        self,
        params: Any,
        base_optimizer: str = "torch.optim.AdamW",
        k: int = 5,
        alpha: float = 0.5,
        pullback_momentum: str = "none",
        **base: Any,
    ) -> None:
        inner = base_class(base_optimizer, "Lookahead")(params, **base)
        super().__init__(inner, k=k, alpha=alpha, pullback_momentum=pullback_momentum)
