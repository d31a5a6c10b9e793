"""`python -m proj diagnose RUN`: what went wrong in a run, and the template's fix for it.

    python -m proj diagnose logs/default/version_0
    python -m proj diagnose logs/default/version_0 --try --epochs 10     # train each fix, compare on the test split

It reads the run's config.yaml, the health files HealthMonitor wrote (<run>/health/), the test evaluation
(<run>/evaluation/test.json) and the run's data (class shares, duplicates between the training and test splits),
applies the rules of rules.py, and writes <run>/diagnose/: report.md with its figures, and one override file per
fix, `fix_<rule>.yaml`, with the command that runs it. `--try` trains each fix and the original for the same number
of epochs and compares them on the same test samples, with a paired bootstrap interval of the difference.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from proj.cli.config_commands import ConfigCommandCLI, run_config_command
from proj.cli.parser import UsageError, exit_with_usage_error
from proj.cli.run import lightning_main
from proj.cli.run_dir import is_run_dir, log_into
from proj.extras.diagnose.bootstrap import metric_functions, paired_difference
from proj.extras.diagnose.evidence import Evidence, gather
from proj.extras.diagnose.fixes import merge
from proj.extras.diagnose.report import write_report
from proj.extras.diagnose.rules import Finding, find
from proj.extras.diagnose.run_figures import draw_run

COMPARED = {"classification": "acc", "multilabel": "f1", "regression": "r2"}  # --try's metric (higher is better)
BY_RULE = {"class_imbalance": "f1"}  # macro F1: accuracy hides the rare classes


def diagnose(cli: ConfigCommandCLI, try_fixes: bool = False, only: list[str] | None = None, epochs: int = 0) -> dict:
    """What went wrong in a run: findings with their evidence, likely cause and the template's fix (an override
    file in <run>/diagnose/), or why the run looks healthy; report.md there, with figures.
    Usage: python -m proj diagnose RUN [--try] [--epochs N] [--only '[rule, ...]'].

    Args:
        try_fixes: (`--try`) train each fix, and the original, for `epochs` epochs, and compare them on the test split.
        only: the rules whose fixes --try trains (default: every finding that has an override file).
        epochs: the budget of each --try run (default: the run's own max_epochs).
    """
    run = cli.run_dir
    if run is None:
        raise UsageError("give a run directory, e.g. python -m proj diagnose logs/default/version_0")
    ev = gather(run, getattr(cli.model, "task", "custom"), data_of(cli))
    findings = find(ev)
    out = run / "diagnose"
    out.mkdir(parents=True, exist_ok=True)
    for finding in findings:
        write_fix(run, out, finding)
    tried = []
    if try_fixes:
        chosen = [f for f in findings if f.override and (not only or f.rule in only)]
        tried = [try_fix(cli, ev, finding, epochs, out / "try") for finding in chosen]
    report = write_report(ev, findings, draw_run(ev, out), tried, out)
    print_findings(ev, findings, tried, report)
    return {"findings": [f.rule for f in findings], "tried": tried, "report": str(report)}


def data_of(cli: ConfigCommandCLI) -> Any:
    """The run's data module with its splits made (read for class shares and duplicates), or None if it cannot be
    set up here (files moved away): diagnose goes on without those two rules."""
    dm = cli.datamodule
    try:
        dm.prepare_data()
        dm.setup("fit")
    except (OSError, ValueError, RuntimeError) as err:
        print(f"diagnose: the run's data could not be read ({err}); class shares and duplicates are not checked")
        return None
    return dm


def fix_path(out: Path, finding: Finding) -> Path:
    return out / f"fix_{finding.rule}.yaml"


def write_fix(run: Path, out: Path, finding: Finding) -> None:
    if not finding.override:
        return
    command = f"python -m proj fit --config {run / 'config.yaml'} --config {fix_path(out, finding)}"
    header = [f"# {finding.title}: {finding.fix}", f"# {command}"]
    fix_path(out, finding).write_text("\n".join(header) + "\n" + yaml.safe_dump(finding.override, sort_keys=False))
    finding.numbers["command"] = command  # type: ignore[assignment]


def try_fix(cli: ConfigCommandCLI, ev: Evidence, finding: Finding, epochs: int, out: Path) -> dict[str, Any]:
    """Train the fix and the original on the same budget (epochs, seed, data), then compare their test predictions
    sample by sample: the metric of each with its interval, and the paired interval of the difference."""
    base = cli.fit_config()
    budget = epochs or int(base["trainer"].get("max_epochs") or 10)
    runs = {}
    for version, config in (("original", base), ("fixed", merge(base, finding.override))):
        runs[version] = fit_for(cli, config, budget, out / finding.rule, version)
    name = BY_RULE.get(finding.rule, COMPARED.get(ev.task, ""))
    fn = metric_functions(ev.task)[name]
    a, b = (np.load(path / "evaluation" / "test_predictions.npz") for path in runs.values())
    if not np.array_equal(a["ids"], b["ids"]):
        raise UsageError(f"--try: the two runs of {finding.rule} were tested on different samples")
    difference = paired_difference(fn, a["preds"], b["preds"], a["target"])
    return {
        "rule": finding.rule,
        "metric": f"test/{name}",
        "epochs": budget,
        "original": fn(a["preds"], a["target"]),
        "fixed": fn(b["preds"], b["target"]),
        "difference": difference,
        "helped": difference["low"] > 0,
        "runs": {k: str(v) for k, v in runs.items()},
    }


def fit_for(cli: ConfigCommandCLI, config: dict[str, Any], epochs: int, save_dir: Path, version: str) -> Path:
    """One fit of `config` for `epochs` epochs, tested after, logged into save_dir/<version>: its run directory."""
    parsed = cli.parser.parse_object(merge(config, {"trainer": {"max_epochs": epochs}, "test_after_fit": True}))
    log_into(parsed, save_dir=save_dir, name="", version=version)  # every logger of the config, a list of them too
    path = cli.write_fit_config(save_dir / f"{version}.yaml", parsed)
    return Path(lightning_main(["fit", "--config", str(path)]).trainer.log_dir)


def print_findings(ev: Evidence, findings: list[Finding], tried: list[dict[str, Any]], report: Path) -> None:
    if not findings:
        print(f"{ev.run}: healthy. Why, with the numbers: {report}")
    for finding in findings:
        print(f"\n{finding.title} [{finding.rule}]")
        for line in finding.evidence:
            print(f"  - {line}")
        print(f"  cause: {finding.cause}\n  fix: {finding.fix}")
        if "command" in finding.numbers:
            print(f"  run it: {finding.numbers['command']}")
    for t in tried:
        d = t["difference"]
        verdict = "helped" if t["helped"] else "not shown to help"
        print(
            f"\n--try {t['rule']}: {t['metric']} {t['original']:.4f} -> {t['fixed']:.4f} in {t['epochs']} epochs, "
            f"difference {d['value']:+.4f} (95% interval {d['low']:+.4f} .. {d['high']:+.4f}): {verdict}"
        )
    print(f"\nreport: {report}")


def command(name: str, args: list[str]) -> None:
    """`diagnose RUN [options]`: the run directory first; `--try` is the option try_fixes (a Python keyword)."""
    args = list(args)
    if args and not args[0].startswith("-"):
        run = Path(args.pop(0))
        if not is_run_dir(run):
            exit_with_usage_error(f"python -m proj {name}", f"{run} is not a run directory (config.yaml, checkpoints/)")
        args = ["--config", str(run / "config.yaml"), *args]
    args = ["--try_fixes=true" if a == "--try" else a for a in args]
    if not any(a.startswith("--config") for a in args) and not {"-h", "--help"} & set(args):
        exit_with_usage_error(f"python -m proj {name}", "give a run directory: python -m proj diagnose RUN")
    sys.stdout.flush()
    return run_config_command(name, diagnose, args)
