"""How each seed runs: its fit config (the repeat's config with seed_everything set to it), whether it starts or
resumes, and where: one after another in this process, or in several `python -m proj fit` processes at once."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jsonargparse import Namespace

from proj.cli.config_commands import ConfigCommandCLI
from proj.cli.run import lightning_main
from proj.cli.run_dir import LAST, is_run_dir, log_into
from proj.extras.repeat.seed_results import SeedResultWriter, result_path, seed_dir

WRITER = f"{SeedResultWriter.__module__}.{SeedResultWriter.__name__}"
LOG_TAIL = 20  # lines of a failed seed's output shown


def run_seeds(cli: ConfigCommandCLI, base: Namespace, out: Path, seeds: list[int], processes: int) -> None:
    """Run these seeds of the config `base`: in this process, or `processes` at a time in their own."""
    with tempfile.TemporaryDirectory() as scratch:  # the seeds' configs; each run writes its own config.yaml
        arguments = {seed: seed_arguments(cli, base, out, seed, Path(scratch)) for seed in seeds}
        if processes == 1 or len(seeds) < 2:  # one seed left: its own process would only pay for the imports
            run_in_this_process(arguments)
        else:
            run_in_processes(arguments, min(processes, len(seeds)), out)
    missing = [str(seed) for seed in seeds if not result_path(out, seed).is_file()]
    if missing:  # a run stopped before its test (interrupted, preempted) without an error
        raise SystemExit(
            f"python -m proj repeat: error: seed {', '.join(missing)} ended without a test result in {out}; "
            "the same command again resumes it"
        )


def seed_arguments(cli: ConfigCommandCLI, base: Namespace, out: Path, seed: int, scratch: Path) -> list[str]:
    """The `python -m proj` arguments that run a seed: `fit --resume <seed dir>` when it was interrupted (it has a
    last.ckpt but no result), which continues it bitwise from its last epoch; else a fit of its own config."""
    run = seed_dir(out, seed)
    if is_run_dir(run) and (run / LAST).is_file():
        print(f"seed {seed}: resuming from {run / LAST}")
        return ["fit", "--resume", str(run)]
    return ["fit", "--config", str(write_seed_config(cli, base, out, seed, scratch))]


def write_seed_config(cli: ConfigCommandCLI, base: Namespace, out: Path, seed: int, scratch: Path) -> Path:
    """The seed's fit config: seed_everything is the seed, the split stays as configured (data.init_args.split_seed:
    every seed is tested on the same test set), the test after fit writes the result, every logger writes into
    <out>/seed_<s>/ (and, without a logger, the checkpoints go there too: trainer.default_root_dir)."""
    config = base.clone()
    config.seed_everything, config.test_after_fit = seed, True
    config.trainer.default_root_dir = str(seed_dir(out, seed))
    writer = Namespace(class_path=WRITER, init_args=Namespace(path=str(result_path(out, seed))))
    config.trainer.callbacks = [*(config.trainer.callbacks or []), writer]
    log_into(config, save_dir=out.parent, name=out.name, version=seed_dir(out, seed).name)
    return cli.write_fit_config(scratch / f"seed_{seed}.yaml", config)


def without_result_writer(config: Namespace) -> Namespace:
    """The config without the result writer of a seed it was a config of (a seed's config.yaml, repeated)."""
    config = config.clone()
    if config.trainer.callbacks:
        config.trainer.callbacks = [c for c in config.trainer.callbacks if getattr(c, "class_path", None) != WRITER]
    return config


def run_in_this_process(arguments: dict[int, list[str]]) -> None:
    for args in arguments.values():
        lightning_main(args)


def run_in_processes(arguments: dict[int, list[str]], processes: int, out: Path) -> None:
    """Each seed a `python -m proj fit` process, `processes` at a time, each with its share of the cores: torch
    would otherwise start as many threads as there are cores in every process, and they would fight over them.
    Each process's output goes to <out>/seed_<s>.log; a failed seed stops the repeat once the others are done."""
    threads = str(max(1, len(os.sched_getaffinity(0)) // processes))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    logs = {seed: out / f"seed_{seed}.log" for seed in arguments}

    def run_seed(seed: int) -> int:
        print(f"seed {seed}: in its own process ({threads} threads), output in {logs[seed]}", flush=True)
        with open(logs[seed], "w") as log:
            command = [sys.executable, "-m", "proj", *arguments[seed]]
            return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode

    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(processes) as pool:
        codes = dict(zip(arguments, pool.map(run_seed, arguments), strict=True))
    failed = {seed: code for seed, code in codes.items() if code != 0}
    for seed, code in failed.items():
        tail = logs[seed].read_text().splitlines()[-LOG_TAIL:]
        sys.stderr.write("\n".join([f"--- seed {seed}: exit status {code}, the end of {logs[seed]}:", *tail]) + "\n")
    if failed:
        seeds = ", ".join(f"{seed} (exit status {code})" for seed, code in failed.items())
        word = "seeds" if len(failed) > 1 else "seed"
        raise SystemExit(f"python -m proj repeat: error: {word} {seeds} failed; the same command again resumes")
