"""`python -m proj tune`: hyper-parameter search, each trial a normal fit of the same config.

    python -m proj tune --config configs/default.yaml --config configs/hpo/optuna.yaml [--tune.n_trials 5]

The `tune:` block of a config file (configs/hpo/*.yaml) says what to search (space.SearchConfig, parsed and
type-checked like the rest of the config: `--tune.n_trials 5` overrides it); its backend is Optuna
(optuna_search.py, the default) or Ray Tune (ray_search.py). Each backend is handed `run_fit` to train its trials,
so the search code never imports the command line.
"""

from __future__ import annotations

from typing import Any

from proj.cli.config_commands import ConfigCommandCLI, run_config_command
from proj.cli.parser import UsageError
from proj.cli.run import run_fit
from proj.extras.tune.space import SearchConfig, check_search, check_space


def search(cli: ConfigCommandCLI, tune: SearchConfig) -> Any:
    """Search hyper-parameters: trials of this fit config with values drawn from tune.space, judged on a
    validation metric (the test split stays untouched), resumable from the study's storage.

    Args:
        tune: the search (usually a `tune:` block in a file of configs/hpo/).
    """
    try:
        check_search(tune)
        base = cli.fit_config()
        check_space(tune.space, base)  # a key that does not exist fails here, before any trial
    except (KeyError, ValueError) as err:
        raise UsageError(str(err.args[0]) if err.args else str(err)) from err
    if tune.backend == "ray":
        from proj.extras.tune.ray_search import run  # ray is optional and heavy (the `ray` extra)

        return run(tune, base, run_fit)
    from proj.extras.tune.optuna_search import run_study  # optuna is optional (the `hpo` extra)

    return run_study(tune, base, run_fit)


def command(name: str, args: list[str]) -> Any:
    return run_config_command(name, search, args)
