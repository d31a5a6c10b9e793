"""`python -m proj cv --config <fit configs> --folds 5`: stratified k-fold cross-validation.

Each fold is a complete fit (then a test of its best checkpoint) with its own run directory,
logs/<name>_cv/fold_<k>/; the test split of fold k is the k-th of `folds` stratified, disjoint parts of the
data. The summary (each fold's test metrics, their mean and standard deviation) is printed and written to
logs/<name>_cv/summary.json and summary.csv.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

from proj.cli.lightning_cli import lightning_main
from proj.cli.options import take_options


def parse(args: list[str]) -> tuple[int, list[str]]:
    options, rest = take_options(args, {"folds": 5})
    folds = int(options["folds"])
    if folds < 2:
        raise ValueError(f"--folds={folds}: cross-validation needs at least 2 folds")
    return folds, rest


def command(name: str, args: list[str]) -> dict[str, Any]:
    folds, fit_args = parse(args)
    base = lightning_main(fit_args, run=False)  # checks the config once, and names the run
    run_name = f"{base.trainer.logger.name}_cv"
    save_dir = Path(base.trainer.logger.save_dir)
    results = []
    for k in range(folds):
        fold = lightning_main([
            "fit", *fit_args, f"--data.init_args.cv_folds={folds}", f"--data.init_args.cv_fold={k}",
            f"--trainer.logger.init_args.name={run_name}", f"--trainer.logger.init_args.version=fold_{k}",
            "--test_after_fit=true",
        ])  # fmt: skip
        metrics = {key: float(v) for key, v in fold.trainer.callback_metrics.items() if key.startswith("test/")}
        results.append(metrics)
        print(f"fold {k}: " + ", ".join(f"{key} {v:.4f}" for key, v in sorted(metrics.items())))
    summary = summarise(results)
    out = save_dir / run_name
    (out / "summary.json").write_text(json.dumps({"folds": results, **summary}, indent=2))
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        keys = sorted(summary["mean"])
        writer.writerow(["fold", *keys])
        for k, metrics in enumerate(results):
            writer.writerow([k, *(metrics[key] for key in keys)])
        writer.writerow(["mean", *(summary["mean"][key] for key in keys)])
        writer.writerow(["std", *(summary["std"][key] for key in keys)])
    for key in sorted(summary["mean"]):
        print(f"{key}: {summary['mean'][key]:.4f} +- {summary['std'][key]:.4f} over {folds} folds")
    print(f"summary: {out / 'summary.json'}, {out / 'summary.csv'}")
    return {"folds": results, **summary}


def summarise(results: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = sorted(set.intersection(*(set(r) for r in results)))
    return {
        "mean": {k: statistics.mean(r[k] for r in results) for k in keys},
        "std": {k: statistics.stdev(r[k] for r in results) for k in keys},  # sample std over folds
    }
