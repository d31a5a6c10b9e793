"""The template's fixes, as override files: each function takes the run's resolved config (config.yaml, a dict) and
returns the few keys to change, to be stacked on it:

    python -m proj fit --config <run>/config.yaml --config <run>/diagnose/fix_<rule>.yaml

Lists (optim stages, callbacks) are written whole, changed where needed: a stacked config replaces a list, it does
not merge it item by item. A setting the run's net or data does not take is left out, never guessed.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from proj.optim import import_class

AUGMENT = [  # what configs/experiment/digits_augmented.yaml uses (no MixUp): small shifts, turns and zooms
    {"class_path": "kornia.augmentation.RandomAffine",
     "init_args": {"degrees": 10.0, "translate": [0.1, 0.1], "scale": [0.9, 1.1], "p": 0.8}},
]  # fmt: skip


def nested(path: str, value: Any) -> dict[str, Any]:
    """{"a": {"b": value}} from "a.b"."""
    for key in reversed(path.split(".")):
        value = {key: value}
    return value


def merge(*overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Several overrides as one (dicts merged key by key, anything else replaced)."""
    out: dict[str, Any] = {}
    for override in overrides:
        for key, value in (override or {}).items():
            both = isinstance(value, dict) and isinstance(out.get(key), dict)
            out[key] = merge(out[key], value) if both else copy.deepcopy(value)
    return out


def stages(config: dict[str, Any]) -> list[dict[str, Any]]:
    return copy.deepcopy(((config.get("model") or {}).get("init_args") or {}).get("optim", {}).get("stages") or [])


def with_stages(changed: list[dict[str, Any]]) -> dict[str, Any]:
    return nested("model.init_args.optim.stages", changed)


def scale_lr(config: dict[str, Any], factor: float) -> dict[str, Any] | None:
    """Every stage's learning rate (and a cyclic or one-cycle schedule's own lr bounds) times `factor`."""
    changed = stages(config)
    for stage in changed:
        for part, keys in (("optimizer", ("lr",)), ("lr_scheduler", ("max_lr", "base_lr"))):
            args = (stage.get(part) or {}).get("init_args") or {}
            for key in keys:
                if isinstance(args.get(key), int | float):
                    args[key] = float(f"{args[key] * factor:.3g}")
    return with_stages(changed) if changed else None


def whole_run_cosine(config: dict[str, Any]) -> dict[str, Any] | None:
    """Each stage's schedule replaced by a cosine decay over the stage (T_max 0: its length, per optimizer step)."""
    changed = stages(config)
    for stage in changed:
        lr = ((stage.get("optimizer") or {}).get("init_args") or {}).get("lr", 1e-3)
        cosine = {"T_max": 0, "eta_min": float(f"{lr * 0.01:.3g}")}
        stage["lr_scheduler"] = {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR", "init_args": cosine}
        stage["interval"] = "step"
    return with_stages(changed) if changed else None


def net_options(config: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The net's init_args as configured, and the names its class takes."""
    net = ((config.get("model") or {}).get("init_args") or {}).get("net") or {}
    try:
        accepted = set(inspect.signature(import_class(net["class_path"], "model.init_args.net")).parameters)
    except (KeyError, ValueError, TypeError):
        accepted = set()
    return dict(net.get("init_args") or {}), accepted


def with_net(changes: dict[str, Any]) -> dict[str, Any] | None:
    return nested("model.init_args.net.init_args", changes) if changes else None


def normalised_net(config: dict[str, Any], activation: str, lr_factor: float | None = None) -> dict[str, Any] | None:
    """BatchNorm and the given activation, where the net takes them; the lr scaled too if asked."""
    _, accepted = net_options(config)
    changes = {"batch_norm": True} if "batch_norm" in accepted else {}
    if "activation" in accepted:
        changes["activation"] = activation
    lr = scale_lr(config, lr_factor) if lr_factor else None
    return merge(with_net(changes), lr) or None


def clipped_and_normalised(config: dict[str, Any]) -> dict[str, Any]:
    clip = {"trainer": {"gradient_clip_val": 1.0, "gradient_clip_algorithm": "norm"}}
    _, accepted = net_options(config)
    return merge(clip, with_net({"batch_norm": True} if "batch_norm" in accepted else {}))


def bigger_net(config: dict[str, Any]) -> dict[str, Any] | None:
    """Each width 4x (widths, hidden, d_model, ... as the net names them), dropout halved."""
    args, accepted = net_options(config)
    changes: dict[str, Any] = {}
    for key in ("widths", "hidden", "d_model", "embedding_dim", "hidden_size", "channels"):
        value = args.get(key)
        if key in accepted and isinstance(value, list):
            changes[key] = [int(v) * 4 for v in value]
        elif key in accepted and isinstance(value, int) and not isinstance(value, bool):
            changes[key] = value * 4
    if isinstance(args.get("dropout"), float) and args["dropout"] > 0:
        changes["dropout"] = round(args["dropout"] / 2, 3)
    return with_net(changes)


def regularise(config: dict[str, Any], images: bool) -> dict[str, Any] | None:
    """Dropout 0.5, weight decay 5x (at least 0.05) in every stage, and small affine augmentation for images."""
    _, accepted = net_options(config)
    net = with_net({"dropout": 0.5} if "dropout" in accepted else {})
    changed = stages(config)
    for stage in changed:
        args = (stage.get("optimizer") or {}).setdefault("init_args", {})
        args["weight_decay"] = max(0.05, float(f"{5 * float(args.get('weight_decay') or 0):.3g}"))
    data = (config.get("data") or {}).get("init_args") or {}
    augment = (
        nested("data.init_args.augment", AUGMENT) if images and "augment" in data and not data["augment"] else None
    )
    return merge(net, with_stages(changed) if changed else None, augment) or None


def patience(config: dict[str, Any], factor: int) -> dict[str, Any] | None:
    """The callback list, with early stopping's patience `factor` times longer (at least 5)."""
    callbacks = copy.deepcopy((config.get("trainer") or {}).get("callbacks") or [])
    found = False
    for callback in callbacks:
        if "EarlyStopping" in str(callback.get("class_path", "")):
            args = callback.setdefault("init_args", {})
            args["patience"] = max(5, factor * int(args.get("patience") or 3))
            found = True
    return nested("trainer.callbacks", callbacks) if found else None


def balanced(config: dict[str, Any]) -> dict[str, Any] | None:
    data = (config.get("data") or {}).get("init_args") or {}
    return nested("data.init_args.sampler", "balanced") if "sampler" in data else None
