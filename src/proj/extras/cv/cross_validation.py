"""`python -m proj cv`: stratified k-fold cross-validation, each fold a complete fit and test.

    python -m proj cv --config configs/default.yaml --folds 5

Each fold is a complete fit (then a test of its best checkpoint) with its own run directory,
logs/<name>_cv/fold_<k>/; the test split of fold k is the k-th of `folds` disjoint parts of the data
(stratified for classification). logs/<name>_cv/ also holds config.yaml (the config every fold starts from)
and the summary: each fold's test metrics, their mean and standard deviation, in summary.json and summary.csv.
"""

from __future__ import annotations

import csv
import inspect
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from proj.cli.config_commands import ConfigCommandCLI, run_config_command
from proj.cli.parser import UsageError
from proj.cli.run import lightning_main
from proj.cli.run_dir import log_into, logger_init_args


def cross_validate(cli: ConfigCommandCLI, folds: int = 5) -> dict[str, Any]:
    """K-fold cross-validation: one fit and test per fold, then the mean and std of every test metric.

    Args:
        folds: the number of folds (at least 2).
    """
    if folds < 2:
        raise UsageError(f"--folds={folds}: cross-validation needs at least 2 folds")
    refuse_data_without_folds(cli.datamodule)
    if cli.run_dir is not None:  # on a run's config.yaml: into <run>/cv/
        save_dir, run_name = cli.run_dir, "cv"
    else:
        # As the config names them (TensorBoard's meaning, which the presets of configs/logger/ share): the MLflow
        # and W&B loggers' save_dir property is their run directory.
        init_args = next(iter(logger_init_args(cli.config)), {})
        save_dir, run_name = Path(init_args.get("save_dir") or "logs"), f"{init_args.get('name') or 'default'}_cv"
    out = save_dir / run_name
    cli.write_fit_config(out / "config.yaml")
    results = []
    for k in range(folds):
        with tempfile.TemporaryDirectory() as scratch:  # the fold's own config.yaml goes into its run directory
            fold = lightning_main(["fit", "--config", str(fold_config(cli, folds, k, save_dir, run_name, scratch))])
        metrics = {key: float(v) for key, v in fold.trainer.callback_metrics.items() if key.startswith("test/")}
        results.append(metrics)
        print(f"fold {k}: " + ", ".join(f"{key} {v:.4f}" for key, v in sorted(metrics.items())))
    summary = summarise(results)
    write_summary(out, results, summary)
    for key in sorted(summary["mean"]):
        print(f"{key}: {summary['mean'][key]:.4f} +- {summary['std'][key]:.4f} over {folds} folds")
    print(f"summary: {out / 'summary.json'}, {out / 'summary.csv'}")
    return {"folds": results, **summary}


def fold_config(cli: ConfigCommandCLI, folds: int, k: int, save_dir: Path, run_name: str, scratch: str) -> Path:
    """The fit config of fold k: the data's test split is fold k of `folds`, and every logger (each of a list of
    them too) writes into <save_dir>/<run_name>/fold_<k>/."""
    config = cli.config.clone()
    config.data.init_args.cv_folds, config.data.init_args.cv_fold = folds, k
    config.test_after_fit = True
    log_into(config, save_dir=save_dir, name=run_name, version=f"fold_{k}")
    return cli.write_fit_config(Path(scratch) / "config.yaml", config)


def refuse_data_without_folds(dm: Any) -> None:
    """Each fold is a fit of the same config with `data.init_args.cv_folds` and `cv_fold` set: a data module
    without those two arguments cannot make the folds (the template's take them: proj.data.ArrayDataModule)."""
    accepted = init_arguments(type(dm))
    missing = [name for name in ("cv_folds", "cv_fold") if name not in accepted]
    if missing:
        raise UsageError(
            f"data {type(dm).__name__} takes no {' / '.join(missing)} argument, which cv sets to make each fold's "
            "test split: give it `cv_folds: int = 0, cv_fold: int = 0` and make the test split fold cv_fold of "
            "cv_folds (or subclass proj.data.ArrayDataModule, which does)"
        )


def init_arguments(cls: type) -> set[str]:
    """The arguments a class's __init__ takes, those it passes on to its parent's through **kwargs included (as
    the configuration parser follows them: SequenceDataModule(jitter, ..., **kwargs))."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in klass.__dict__:
            continue
        parameters = inspect.signature(klass.__dict__["__init__"]).parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names


def summarise(results: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = sorted(set.intersection(*(set(r) for r in results)))
    return {
        "mean": {k: statistics.mean(r[k] for r in results) for k in keys},
        "std": {k: statistics.stdev(r[k] for r in results) for k in keys},  # sample std over folds
    }


def write_summary(out: Path, results: list[dict[str, float]], summary: dict[str, dict[str, float]]) -> None:
    (out / "summary.json").write_text(json.dumps({"folds": results, **summary}, indent=2))
    keys = sorted(summary["mean"])
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fold", *keys])
        for k, metrics in enumerate(results):
            writer.writerow([k, *(metrics[key] for key in keys)])
        writer.writerow(["mean", *(summary["mean"][key] for key in keys)])
        writer.writerow(["std", *(summary["std"][key] for key in keys)])


def command(name: str, args: list[str]) -> dict[str, Any]:
    return run_config_command(name, cross_validate, args)
