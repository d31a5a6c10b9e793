"""The search: a `tune:` block in a YAML file, the search space over dotted config keys, and trial configs.

    tune:
      metric: val/acc            # a metric the model logs at validation
      direction: maximize
      n_trials: 20
      space:
        model.init_args.optim.stages.0.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        data.init_args.batch_size: {type: categorical, choices: [32, 64, 128]}

Keys are paths in the fully resolved fit config (what --print_config shows); numbers index lists. Every key
is checked against that config before the first trial, so a typo fails at once, not after the budget.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


@dataclass
class Param:
    """One dimension of the search: a distribution over the values of one dotted config key."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    grid: list[Any] | None = None  # the values a grid search visits (float / int parameters)
    key: str = ""  # the dotted config key: the mapping's key in `space`, filled in by check_search

    def grid_values(self) -> list[Any]:
        return list(self.choices if self.type == "categorical" else self.grid or [])


@dataclass
class RayOptions:
    """Ray Tune's own settings (backend: ray): the cluster, resources per trial, ASHA's early stopping."""

    address: str | None = None  # None: start a local Ray cluster; "auto" or ray://host:port: join one
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    grace_period: int = 1  # ASHA: epochs every trial runs before it may be stopped
    reduction_factor: int = 2


@dataclass
class SearchConfig:
    """The `tune:` block: what to search (space), how (backend, sampler, pruner), for how long, judged by what.

    space: dotted keys of the resolved fit config (see --print_config; list items by index) mapped to
        distributions, e.g. {model.init_args.optim.stages.0.optimizer.init_args.lr: {type: float, low: 1.0e-4,
        high: 1.0e-2, log: true}}.
    """

    space: dict[str, Param]
    metric: str = "val/acc"
    direction: Literal["maximize", "minimize"] = "maximize"
    n_trials: int = 20
    timeout: float | None = None  # seconds for this invocation
    backend: Literal["optuna", "ray"] = "optuna"
    study_name: str = "hpo"
    sampler: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    storage: str | None = None  # None: sqlite:///logs/<study_name>/study.db
    seed: int = 0
    heartbeat_interval: int = 60  # a trial whose process died is retried after 2 intervals without heartbeat
    ray: RayOptions = field(default_factory=RayOptions)

    @property
    def study_dir(self) -> Path:
        return Path("logs") / self.study_name


def check_search(config: SearchConfig) -> SearchConfig:
    """What the types alone do not say: a non-empty space, valid ranges, grid values for a grid search."""
    if not config.space:
        raise ValueError("tune.space is empty: map dotted config keys to distributions")
    for key, p in config.space.items():
        p.key = key
        check_param(p)
    if config.sampler == "grid":
        for p in config.space.values():
            if not p.grid_values():
                raise ValueError(f"tune.space.{p.key}: a grid search needs `choices` or `grid` values for every key")
    return config


def check_param(p: Param) -> None:
    where = f"tune.space.{p.key}"
    if p.type == "categorical":
        if not p.choices:
            raise ValueError(f"{where}: a categorical distribution needs a non-empty `choices` list")
        return
    if p.low is None or p.high is None or not p.low < p.high:
        raise ValueError(f"{where}: needs low < high; got low={p.low}, high={p.high}")
    if p.log and p.low <= 0:
        raise ValueError(f"{where}: a log distribution needs low > 0; got low={p.low}")
    if p.log and p.step is not None:
        raise ValueError(f"{where}: `step` and `log` cannot be combined")


# --- dotted keys in a nested config -----------------------------------------------------------------------


def split_key(key: str) -> list[str | int]:
    return [int(part) if part.isdigit() else part for part in key.split(".")]


def get_dotted(config: Any, key: str) -> Any:
    parts = split_key(key)
    node = config
    for depth, part in enumerate(parts):
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            parent = ".".join(map(str, parts[:depth])) or "the top level"
            raise KeyError(
                f"tune.space key {key!r}: {part!r} does not exist under {parent}; {contents(node, part)}"
            ) from None
    return node


def contents(node: Any, missing: Any) -> str:
    if isinstance(node, dict):
        hint = difflib.get_close_matches(str(missing), [str(k) for k in node], n=1)
        return (f"did you mean {hint[0]!r}? " if hint else "") + f"it has: {', '.join(map(str, node))}"
    if isinstance(node, list):
        return f"it is a list with indices 0..{len(node) - 1}"
    return f"it is the value {node!r}, not a mapping"


def set_dotted(config: Any, key: str, value: Any) -> None:
    *parents, last = split_key(key)
    node = config
    for part in parents:
        node = node[part]
    node[last] = value


def check_space(space: dict[str, Param], config: dict[str, Any]) -> None:
    for key in space:
        get_dotted(config, key)


def apply(config: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    trial = copy.deepcopy(config)
    for key, value in params.items():
        set_dotted(trial, key, value)
    return trial


def write_config(config: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
