"""`{class_path, init_args}` specs: import the class, check its arguments by name, say what was meant.

Every optimizer and scheduler is torch's own class (or Lightning's, or the user's), named by class_path: no
registry of names. A short name (`AdamW`, `ReduceLROnPlateau`) is looked up in SHORT_NAME_MODULES.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import dataclass
from typing import Any

import torch

# Where a class_path without a module is looked up, in order: Lightning's ReduceLROnPlateau (which carries
# `monitor`) before torch's.
SHORT_NAME_MODULES = ("lightning.pytorch.cli", "torch.optim", "torch.optim.lr_scheduler")

# Classes that cannot train a stage's parameters, refused when the config is read rather than at the first step.
# SparseAdam takes sparse gradients only (nn.Embedding(sparse=True)), and one optimizer updates every parameter.
REFUSED = {
    torch.optim.SparseAdam: "it takes only sparse gradients (nn.Embedding(sparse=True)) and fails at the first "
    "step on any dense one (convolutions, linear layers, norms); use torch.optim.Adam or torch.optim.AdamW",
}


@dataclass
class ClassSpec:
    """A `{class_path, init_args}` dict, resolved and checked against the class's signature."""

    cls: type
    init_args: dict[str, Any]
    where: str  # the config key, for error messages


def check_keys(d: dict[str, Any], known: tuple[str, ...] | list[str], where: str) -> None:
    for key in d:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(f"{where}.{key}: unknown key{did_you_mean}; known keys: {', '.join(known)}")


def typed_value(d: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
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
    for refused, why in REFUSED.items():
        if issubclass(cls, refused):
            raise ValueError(f"{where}.class_path={spec['class_path']!r} is not supported: {why}")
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
