"""`python -m proj repeat`: one config over several seeds, each seed a complete fit and test, then every test
metric's mean, standard deviation and 95% interval over the seeds.

    python -m proj repeat --config configs/default.yaml --seeds 0 1 2 [--processes 2]

Each seed is a fit of the same config with seed_everything set to it, into <save_dir>/<name>_repeat/seed_<s>/ (the
logger's save_dir and name, as the config gives them), or <run>/repeat/seed_<s>/ on a run's config.yaml. The data
split (data.init_args.split_seed) stays as configured: every seed is tested on the same test set, so the repeats of
two configs are paired seed by seed. The folder also holds config.yaml (the config every seed starts from) and
summary.json / summary.csv. Running it again trains only the seeds without a result (seed_results.py), and resumes
an interrupted one from its last.ckpt (seed_runs.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.fabric.utilities.seed import max_seed_value, min_seed_value

from proj.cli.config_commands import ConfigCommandCLI, run_config_command
from proj.cli.parser import UsageError
from proj.cli.run_dir import logger_init_args
from proj.extras.repeat.seed_results import read_result, result_path
from proj.extras.repeat.seed_runs import run_seeds, without_result_writer
from proj.extras.repeat.summary import summarise, summary_lines, write_summary

# Settings that change how a run looks, not what it computes: a repeat continued with other values of them goes on.
COSMETIC = ("seed_everything", "trainer.enable_progress_bar", "trainer.enable_model_summary")
INTEGER = re.compile(r"-?\d+")


def repeat(cli: ConfigCommandCLI, seeds: list[int] | None = None, processes: int = 1) -> dict[str, Any]:
    """One config over several seeds: each test metric's mean, std and 95% interval over the seeds.

    Each seed is a complete fit and test with seed_everything set to it; the data split stays as configured, so
    every seed is tested on the same test set. Seeds with a result already are not trained again.

    Args:
        seeds: the seeds (seed_everything), one run each, at least 2: --seeds 0 1 2.
        processes: how many seeds run at once, each in its own `python -m proj fit` process with its share of
            the cores (1: one after another, in this process).
    """
    seeds = checked_seeds(seeds, processes)
    out = output_folder(cli)
    base = without_result_writer(cli.config)  # a seed's own config.yaml, repeated, would write into that seed
    refuse_another_config(cli, base, out)
    cli.write_fit_config(out / "config.yaml", base)
    done = [s for s in seeds if result_path(out, s).is_file()]
    if done:
        print(f"seed{'s' * (len(done) > 1)} {' '.join(map(str, done))}: done before, in {out} (not trained again)")
    todo = [s for s in seeds if s not in done]
    run_seeds(cli, base, out, todo, processes)
    return report(out, {s: read_result(out, s) for s in seeds}, todo)


def report(out: Path, results: dict[int, dict[str, float]], trained: list[int]) -> dict[str, Any]:
    for seed, metrics in results.items():
        print(f"seed {seed}: " + ", ".join(f"{key} {v:.4f}" for key, v in sorted(metrics.items())))
    summary = summarise(results)
    write_summary(out, summary)
    print("\n".join(summary_lines(summary)))
    print(f"summary: {out / 'summary.json'}, {out / 'summary.csv'}")
    return {**summary, "trained": trained}


def checked_seeds(seeds: list[int] | None, processes: int) -> list[int]:
    given = " ".join(["--seeds", *map(str, seeds or [])])
    if not seeds or len(seeds) < 2:
        raise UsageError(f"{given}: give at least 2 seeds (one run has no spread), e.g. --seeds 0 1 2")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise UsageError(f"{given}: seed {twice[0]} is given twice; each seed is one run, give distinct ones")
    bad = [s for s in seeds if not min_seed_value <= s <= max_seed_value]
    if bad:
        raise UsageError(f"{given}: seed {bad[0]} is out of range; seeds go from 0 to {max_seed_value}")
    if processes < 1:
        raise UsageError(f"--processes={processes}: give 1 (the seeds one after another) or more (at once)")
    return list(seeds)


def output_folder(cli: ConfigCommandCLI) -> Path:
    """<run>/repeat/ on a run's config.yaml, else <save_dir>/<name>_repeat/ as the config's logger names them (the
    presets of configs/logger/ share TensorBoard's meaning of the two; the save_dir property of MLflow's and W&B's
    loggers is their run directory)."""
    if cli.run_dir is not None:
        return cli.run_dir / cli.command_name
    init_args = next(iter(logger_init_args(cli.config)), {})
    return Path(init_args.get("save_dir") or "logs") / f"{init_args.get('name') or 'default'}_{cli.command_name}"


def refuse_another_config(cli: ConfigCommandCLI, base: Namespace, out: Path) -> None:
    """The seeds done in `out` count as results of this config only if they were trained with it: another config
    logging under the same name would otherwise be reported with the first one's numbers."""
    before = out / "config.yaml"
    if not before.is_file():
        return
    key = first_difference(yaml.safe_load(before.read_text()), cli.fit_config(base))
    if key is not None:
        raise UsageError(
            f"{key} differs from {before}, the config the seeds in {out} were trained with: delete {out} to start "
            "over, or repeat this config under another name (trainer.logger.init_args.name)"
        )


def first_difference(a: Any, b: Any, key: str = "") -> str | None:
    """The first dotted key whose values differ (COSMETIC ones aside), or None."""
    if key in COSMETIC:
        return None
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return None if a == b else key or "the config"
    for name in sorted(set(a) | set(b), key=str):
        found = first_difference(a.get(name), b.get(name), f"{key}.{name}" if key else str(name))
        if found is not None:
            return found
    return None


def seeds_as_one_value(args: list[str]) -> list[str]:
    """`--seeds 0 1 2` as jsonargparse reads a list, `--seeds=[0,1,2]`: an option of the entry function's signature
    takes one value (no nargs), and a space-separated list is how seeds are usually given. A list in one value,
    `--seeds '[0,1,2]'`, is left as it is."""
    args = [part for a in args for part in (a.split("=", 1) if a.startswith("--seeds=") else [a])]
    if "--seeds" not in args:
        return args
    i = args.index("--seeds") + 1
    end = next((j for j in range(i, len(args)) if not INTEGER.fullmatch(args[j])), len(args))
    if end == i and i < len(args) and not args[i].startswith("--"):
        return args
    return [*args[: i - 1], f"--seeds=[{','.join(args[i:end])}]", *seeds_as_one_value(args[end:])]


def command(name: str, args: list[str]) -> dict[str, Any]:
    return run_config_command(name, repeat, seeds_as_one_value(args))
