"""The subcommands of `python -m proj`: Lightning's four, and those the extras that are present provide.

Each package under proj/extras/ may declare, in its light __init__.py, COMMANDS = {name: (module, help)} and
RUN_COMMAND_RECORDER = "module:function" (see proj/extras/__init__.py). Deleting an extra's folder removes its
subcommands; nothing here names one.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import Any

LIGHTNING = {
    "fit": "train, then test the best checkpoint (--resume RUN)",
    "validate": "a checkpoint on the validation split: <run>/validate/",
    "test": "a checkpoint on the test split: <run>/test/",
    "predict": "<run>/predict/predictions.csv from a checkpoint",
}


@cache
def extras() -> tuple[ModuleType, ...]:
    """The extras that are present, by folder name."""
    try:
        package = importlib.import_module(f"{__name__.split('.')[0]}.extras")
    except ModuleNotFoundError:  # every extra deleted, the folder too
        return ()
    found = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg)
    return tuple(importlib.import_module(f"{package.__name__}.{name}") for name in found)


def commands() -> dict[str, tuple[str, str]]:
    """{subcommand: (module with its `command(name, args)`, one line of help)} of the extras present."""
    found: dict[str, tuple[str, str]] = {}
    for extra in extras():
        found.update(getattr(extra, "COMMANDS", {}))
    return found


def run_command_recorder() -> Callable[..., Any] | None:
    """The context manager `(run_dir, argv)` an extra wraps every subcommand on a run in, if one declares it."""
    for extra in extras():
        target = getattr(extra, "RUN_COMMAND_RECORDER", None)
        if target:
            module, function = target.split(":")
            return getattr(importlib.import_module(module), function)
    return None
