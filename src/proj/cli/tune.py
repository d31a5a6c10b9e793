"""`python -m proj tune`: hyper-parameter search, each trial a normal fit of the same config.

    python -m proj tune --config configs/default.yaml --config configs/hpo/optuna.yaml [--tune.n_trials=5]

The `tune:` block of a config file (configs/hpo/*.yaml) says what to search (proj.tune.space); its backend is
Optuna (proj.tune.optuna_search, the default) or Ray Tune (proj.tune.ray_search). Each backend is handed
`run_fit` to train its trials, so the search code never imports the command line.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from proj.cli.lightning_cli import lightning_main, run_fit
from proj.tune.space import check_space, parse_search, set_dotted


def command(name: str, args: list[str]) -> Any:
    block, fit_args, _ = split_args(args)
    search = parse_search(block)
    base = resolved_config(fit_args)
    check_space(search.space, base)  # a key that does not exist fails here, before any trial
    if search.backend == "ray":
        from proj.tune.ray_search import run  # ray is optional and heavy (the `ray` extra)

        return run(search, base, run_fit)
    from proj.tune.optuna_search import run_study  # optuna is optional (the `hpo` extra)

    return run_study(search, base, run_fit)


def split_args(args: list[str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Separate the `tune:` block (from any --config file that has one) from the fit arguments.

    Returns (tune block, fit args, tune overrides such as --tune.n_trials=5).
    """
    block: dict[str, Any] = {}
    fit_args: list[str] = []
    overrides: list[str] = []
    it = iter(args)
    for arg in it:
        if arg == "--config" or arg.startswith("--config="):
            path = arg.split("=", 1)[1] if "=" in arg else next(it)
            content = yaml.safe_load(Path(path).read_text()) or {}
            if isinstance(content, dict) and "tune" in content:
                block.update(content.pop("tune") or {})
                if content:  # the rest of the file configures every trial's fit
                    fit_args += ["--config", dump_temp(content, path)]
                continue
            fit_args += ["--config", path]
        elif arg.startswith("--tune."):
            overrides.append(arg if "=" in arg else f"{arg}={next(it)}")
        else:
            fit_args.append(arg)
    for override in overrides:
        key, value = override[len("--tune.") :].split("=", 1)
        set_dotted(block, key, yaml.safe_load(value)) if "." in key else block.__setitem__(key, yaml.safe_load(value))
    if not block:
        raise ValueError("no `tune:` block found: add --config configs/hpo/optuna.yaml (or your own search file)")
    return block, fit_args, overrides


def dump_temp(content: dict[str, Any], source: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=f"-{Path(source).stem}.yaml", delete=False) as f:
        yaml.safe_dump(content, f)
    return f.name


def resolved_config(fit_args: list[str]) -> dict[str, Any]:
    """The complete fit config that these arguments give (models and data are built once to check them)."""
    cli = lightning_main(fit_args, run=False)
    return yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))
