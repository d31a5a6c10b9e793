"""The Optuna backend of `python -m proj tune`: a study whose trials are normal fits, resumable from its SQLite storage.

    python -m proj tune --config configs/default.yaml --config configs/hpo/optuna.yaml [--tune.n_trials=5]

Writes into logs/<study_name>/: study.db (the storage: re-running the same command continues the study, and
several processes or hosts can share it), trial_<n>/ (each trial's run directory and TensorBoard curves),
trials.csv, best_config.yaml (give it to `python -m proj fit --config`), history.png, importance.png.
Trials are judged on the validation metric; the test split stays untouched until you fit the best config.
"""

from __future__ import annotations

import csv
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
from lightning.pytorch.callbacks import Callback
from optuna.trial import FrozenTrial
from optuna_integration import PyTorchLightningPruningCallback

try:  # optuna >= 4.9 renamed it
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryStale
except ImportError:
    from optuna.storages import RetryFailedTrialCallback as RetryStale

from proj.extras.tune.space import Param, SearchConfig, apply, write_config
from proj.extras.tune.trials import FitFn, trial_config


class MetricHistory(Callback):
    """The objective metric after every validation epoch (sanity checks excluded)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.values: list[float] = []
        self.logged: list[str] = []

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        self.logged = sorted(trainer.callback_metrics)
        if self.metric in trainer.callback_metrics:
            self.values.append(float(trainer.callback_metrics[self.metric]))


def best(values: list[float], direction: str) -> float:
    return max(values) if direction == "maximize" else min(values)


def plain(values: list[Any]) -> bool:
    """Optuna stores plain values only: other choices (dicts, lists) are suggested by their index."""
    return all(isinstance(v, (str, int, float, bool, type(None))) for v in values)


def optuna_choices(values: list[Any]) -> list[Any]:
    return values if plain(values) else list(range(len(values)))


def suggest(trial: optuna.Trial, p: Param) -> Any:
    if p.type == "categorical":
        index_or_value = trial.suggest_categorical(p.key, optuna_choices(p.choices))
        return index_or_value if plain(p.choices) else p.choices[index_or_value]
    if p.type == "int":
        return trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)


def decode(search: SearchConfig, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's stored params back to config values (categorical indices to their choices)."""
    out = {}
    for key, value in params.items():
        p = search.space[key]
        out[key] = value if p.type != "categorical" or plain(p.choices) else p.choices[value]
    return out


class Objective:
    """One trial: a normal fit of the base config with the trial's parameters, through `fit`."""

    def __init__(self, search: SearchConfig, base: dict[str, Any], fit: FitFn) -> None:
        self.search, self.base, self.fit = search, base, fit

    def __call__(self, trial: optuna.Trial) -> float:
        search = self.search
        params = {p.key: suggest(trial, p) for p in search.space.values()}
        name = f"trial_{trial.number:04d}"
        path = write_config(
            trial_config(search, self.base, params, name), search.study_dir / "configs" / f"{name}.yaml"
        )
        history = MetricHistory(search.metric)
        callbacks: list[Callback] = [history]
        if search.pruner != "none":
            callbacks.append(PyTorchLightningPruningCallback(trial, monitor=search.metric))
        trial.set_user_attr("run_dir", str(search.study_dir / name))
        trial.set_user_attr("pid", os.getpid())
        try:
            self.fit(["--config", str(path)], callbacks)
        finally:
            trial.set_user_attr("epochs", len(history.values))
        if not history.values:
            raise ValueError(
                f"tune.metric={search.metric!r} was never logged during validation; the model logs: "
                f"{', '.join(history.logged)}"
            )
        return best(history.values, search.direction)


def create_study(search: SearchConfig) -> optuna.Study:
    search.study_dir.mkdir(parents=True, exist_ok=True)
    url = search.storage or f"sqlite:///{search.study_dir / 'study.db'}"
    storage = rdb_storage(url, search.heartbeat_interval)
    samplers = {
        "tpe": lambda: SeededPerTrial(lambda seed: optuna.samplers.TPESampler(seed=seed), search.seed),
        "random": lambda: SeededPerTrial(lambda seed: optuna.samplers.RandomSampler(seed=seed), search.seed),
        # One seed for the grid: it orders the grid by it, and each trial takes a point no trial has taken yet.
        "grid": lambda: optuna.samplers.GridSampler(
            {p.key: optuna_choices(p.grid_values()) for p in search.space.values()}, seed=search.seed
        ),
        "cmaes": lambda: SeededPerTrial(lambda seed: optuna.samplers.CmaEsSampler(seed=seed), search.seed),
    }
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
        "none": optuna.pruners.NopPruner,
    }
    return optuna.create_study(
        study_name=search.study_name,
        storage=storage,
        sampler=samplers[search.sampler](),
        pruner=pruners[search.pruner](),
        direction=search.direction,
        load_if_exists=True,
    )


class SeededPerTrial(optuna.samplers.BaseSampler):
    """The sampler made afresh for each trial, seeded with tune.seed and the trial's number.

    Seeded once per process, a sampler draws the same points in every process: a study continued by running the
    command again repeated its first trials, and two processes sharing a study sampled alike. A trial's number
    is unique in its study (the storage hands it out), so each trial draws its own points, and a new study with
    the same seed draws the same ones. Optuna's samplers keep their state in the study, besides their random
    generator, so a fresh one per trial loses nothing."""

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self.make, self.seed, self.sampler = make, seed, make(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler = self.make(int(np.random.SeedSequence([self.seed, trial.number]).generate_state(1)[0]))
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict:
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, name: str, distribution: Any) -> Any:
        return self.sampler.sample_independent(study, trial, name, distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: Any, values: Any) -> None:
        self.sampler.after_trial(study, trial, state, values)


def rdb_storage(url: str, heartbeat_interval: int, attempts: int = 5) -> optuna.storages.RDBStorage:
    """The study's storage. A heartbeat marks trials whose process died (killed, preempted): the next run
    fails them and retries each once with the same parameters."""
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=2 * heartbeat_interval,
                heartbeat_stale_trial_callback=RetryStale(max_retry=1),
            )
        except sqlalchemy.exc.SQLAlchemyError:  # two processes creating the same new database at once
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def write_outputs(study: optuna.Study, search: SearchConfig, base: dict[str, Any]) -> dict[str, Path]:
    out = search.study_dir
    trials = study.get_trials(deepcopy=False)
    keys = list(search.space)
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", "value", "epochs", "run_dir", *keys])
        for t in trials:
            params = decode(search, t.params) if set(t.params) == set(keys) else t.params
            row = [t.number, t.state.name, t.value, t.user_attrs.get("epochs"), t.user_attrs.get("run_dir")]
            writer.writerow(row + [params.get(k) for k in keys])
    files = {"trials": out / "trials.csv"}
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if done:
        best_config = apply(base, decode(search, study.best_trial.params))
        files["best_config"] = write_config(best_config, out / "best_config.yaml")
        files.update(plots(study, out))
    return files


def plots(study: optuna.Study, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    files = {}
    for name, draw in (("history", vis.plot_optimization_history), ("importance", vis.plot_param_importances)):
        try:
            ax = draw(study)
        except (ValueError, RuntimeError) as err:  # e.g. importances need two finished trials that differ
            print(f"no {name}.png: {err}")
            continue
        figure = ax.figure if hasattr(ax, "figure") else ax[0].figure
        figure.savefig(out / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        files[name] = out / f"{name}.png"
    return files


def run_study(search: SearchConfig, base: dict[str, Any], fit: FitFn) -> optuna.Study:
    """Run (or continue) the study: `search.n_trials` more trials, each a fit of `base` with its parameters."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = create_study(search)
    study.optimize(Objective(search, base, fit), n_trials=search.n_trials, timeout=search.timeout)
    files = write_outputs(study, search, base)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    print(f"study {search.study_name}: {len(study.trials)} trials ({len(complete)} complete, {len(pruned)} pruned)")
    if complete:
        value = study.best_value
        print(
            f"best {search.metric} = {value:.4f} (trial {study.best_trial.number}); "
            + ", ".join(map(str, files.values()))
        )
    return study
