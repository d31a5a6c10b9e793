"""Hyper-parameter search: `python -m proj tune --config <fit configs> --config configs/hpo/optuna.yaml`.

space.py reads the `tune:` block (search space over dotted config keys, objective, budget) and turns a
sampled point into a complete fit config; optuna_search.py and ray_search.py run the trials, each a
normal fit with its own run directory.
"""
