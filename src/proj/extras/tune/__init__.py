"""Hyper-parameter search: `python -m proj tune --config <fit configs> --config configs/hpo/optuna.yaml`.

command.py parses the `tune:` block; space.py reads it (search space over dotted config keys, objective, budget)
and turns a sampled point into a complete fit config; optuna_search.py and ray_search.py run the trials, each a
normal fit with its own run directory. Presets: configs/hpo/. Docs: docs/extras/tune.md.
"""

COMMANDS = {"tune": ("proj.extras.tune.command", "hyper-parameter search, Optuna or Ray Tune")}
