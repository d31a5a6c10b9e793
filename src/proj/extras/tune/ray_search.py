"""The Ray Tune backend of `python -m proj tune` (tune.backend: ray), with the same search-space file.

Trials run as Ray tasks, each a normal fit with its own run directory, reporting the objective after every
validation epoch; ASHA stops the trials that fall behind. By default a local Ray cluster is started on this
machine; `tune.ray.address` joins an existing cluster (multi-node search). Results land next to Optuna's:
logs/<study_name>/trials.csv, best_config.yaml, and Ray's own records under logs/<study_name>/ray/.
"""

from __future__ import annotations

import csv
import os
from functools import partial
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from proj.extras.tune.space import Param, SearchConfig, apply, write_config
from proj.extras.tune.trials import FitFn, trial_config


def to_ray(p: Param) -> Any:
    from ray import tune

    if p.type == "categorical":
        return tune.choice(p.choices)
    if p.type == "int":
        low, high = int(p.low), int(p.high)
        if p.log:
            return tune.lograndint(low, high + 1)
        return tune.qrandint(low, high, int(p.step)) if p.step else tune.randint(low, high + 1)
    if p.log:
        return tune.loguniform(p.low, p.high)
    return tune.quniform(p.low, p.high, p.step) if p.step else tune.uniform(p.low, p.high)


class ReportToRay(Callback):
    """Report the objective to Ray after every validation epoch: ASHA decides from these."""

    def __init__(self, metric: str) -> None:
        self.metric = metric

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        from ray import tune

        if trainer.sanity_checking:
            return
        if self.metric not in trainer.callback_metrics:
            raise ValueError(
                f"tune.metric={self.metric!r} was never logged during validation; the model logs: "
                f"{', '.join(sorted(trainer.callback_metrics))}"
            )
        tune.report({self.metric: float(trainer.callback_metrics[self.metric]), "epoch": trainer.current_epoch})


def train_trial(params: dict[str, Any], search: SearchConfig, base: dict[str, Any], root: str, fit: FitFn) -> None:
    from ray import tune

    os.chdir(root)  # relative paths in the config (data, logs) mean what they meant where tune was started
    name = f"trial_{tune.get_context().get_trial_id()}"
    config = trial_config(search, base, params, name)
    path = write_config(config, search.study_dir / "configs" / f"{name}.yaml")
    fit(["--config", str(path)], [ReportToRay(search.metric)])


def run(search: SearchConfig, base: dict[str, Any], fit: FitFn) -> Any:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    opts = search.ray
    ray.init(address=opts.address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    mode = "max" if search.direction == "maximize" else "min"
    trainable = tune.with_resources(
        partial(train_trial, search=search, base=base, root=os.getcwd(), fit=fit),
        {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial},
    )
    max_epochs = int(base["trainer"].get("max_epochs") or 100)
    tuner = tune.Tuner(
        trainable,
        param_space={key: to_ray(p) for key, p in search.space.items()},
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(random_state=search.seed),
            metric=search.metric,
            mode=mode,
            num_samples=search.n_trials,
            time_budget_s=search.timeout,
            scheduler=ASHAScheduler(
                max_t=max_epochs, grace_period=opts.grace_period, reduction_factor=opts.reduction_factor
            ),
        ),
        run_config=tune.RunConfig(name=search.study_name, storage_path=str((search.study_dir / "ray").resolve())),
    )
    try:
        results = tuner.fit()
    finally:
        if opts.address is None:
            ray.shutdown()  # the local cluster was ours: stop its worker processes
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} Ray trial(s) failed; the first: {errors[0]}")
    best = results.get_best_result(metric=search.metric, mode=mode, scope="all")
    write_config(apply(base, {k: best.config[k] for k in search.space}), search.study_dir / "best_config.yaml")
    write_trials(results, search, search.study_dir / "trials.csv")
    value = best.metrics_dataframe[search.metric].agg(mode)
    print(f"ray study {search.study_name}: {len(results)} trials; best {search.metric} = {value:.4f}")
    return results


def write_trials(results: Any, search: SearchConfig, path: Path) -> None:
    mode = "max" if search.direction == "maximize" else "min"
    keys = list(search.space)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial_id", "value", "epochs", *keys])
        for r in results:
            history = r.metrics_dataframe
            value = history[search.metric].agg(mode) if history is not None and len(history) else None
            epochs = len(history) if history is not None else 0
            writer.writerow([r.metrics.get("trial_id"), value, epochs, *(r.config.get(k) for k in keys)])
