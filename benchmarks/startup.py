"""Cold start: what the template adds to `import lightning.pytorch` before any training begins.

    python benchmarks/startup.py [--repeats 5] [--commands fit cv ...]

Two measures, alternated over the repeats, each command in a fresh Python process (what a user waits for):

- whole processes, wall seconds: `import torch`, `import lightning.pytorch`, `python -m proj fit --help` and the
  real parse of the default config (`fit --config configs/default.yaml --print_config`: data module, model and
  callbacks imported);
- what the template adds, for every subcommand that `python -m proj --help` lists: a process imports
  lightning.pytorch off the clock, then runs `python -m proj <subcommand> --help` on it (wall and CPU seconds).
  On this shared machine a whole start varies by +-1 s between repeats, more than the 0.3 s to be judged, so the
  difference of two whole starts cannot judge it; timing the template's part alone can.

Heavy optional packages (optuna, ray, onnx, matplotlib, scikit-learn) are imported where they are used, so
none of them is paid for at start-up. Goal: every subcommand's `--help` within 0.3 s of `import lightning.pytorch`.
One repeat is a smoke run (the tests): it times `fit --help` only, unless --commands names more.
"""

import argparse
import ast
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import interleave, result, table

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.3  # seconds over `import lightning.pytorch`
TORCH, LIGHTNING = "python -c 'import torch'", "python -c 'import lightning.pytorch'"
FIT_HELP = "python -m proj fit --help"
DEFAULT_CONFIG = "python -m proj fit --config default --print_config"
# Run in a fresh process: Lightning imported off the clock, then `python -m proj <name> --help` timed.
ADDED = """
import contextlib, io, json, runpy, sys, time
import lightning.pytorch
sys.argv = ["proj", sys.argv[1], "--help"]
wall, cpu = time.perf_counter(), time.process_time()
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    runpy.run_module("proj", run_name="__main__")
print(json.dumps([time.perf_counter() - wall, time.process_time() - cpu]))
"""


def subcommands() -> list[str]:
    """Lightning's subcommands (proj/cli/registry.py) and the extras' (each proj/extras/<name>/__init__.py), read
    from their source: importing them here would cost this process a Lightning import for a list of names."""
    sources = [
        ROOT / "src" / "proj" / "cli" / "registry.py",
        *sorted((ROOT / "src" / "proj" / "extras").glob("*/__init__.py")),
    ]
    names = []
    for source in sources:
        for node in ast.parse(source.read_text()).body:
            targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if {"LIGHTNING", "COMMANDS"} & set(targets):
                names += list(ast.literal_eval(node.value))
    return names


def whole(args: list[str], cwd: str):
    """A case: the wall seconds of one fresh process."""

    def case() -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True, cwd=cwd)
        return time.perf_counter() - start

    return case


def added(name: str, cwd: str, cpu: list[float]):
    """A case: the wall seconds of `proj <name> --help` after `import lightning.pytorch`; its CPU seconds to `cpu`."""

    def case() -> float:
        done = subprocess.run([sys.executable, "-c", ADDED, name], check=True, capture_output=True, cwd=cwd, text=True)
        wall, seconds = json.loads(done.stdout.splitlines()[-1])
        cpu.append(seconds)
        return wall

    return case


def main() -> None:
    every = subcommands()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--commands", nargs="+", choices=every, help="subcommands whose --help to time (all)")
    args = parser.parse_args()
    names = args.commands or (every if args.repeats > 1 else ["fit"])
    config = str(ROOT / "configs" / "default.yaml")
    starts = {
        TORCH: ["-c", "import torch"],
        LIGHTNING: ["-c", "import lightning.pytorch"],
        FIT_HELP: ["-m", "proj", "fit", "--help"],
        DEFAULT_CONFIG: ["-m", "proj", "fit", "--config", config, "--print_config"],
    }
    cpu: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as cwd:  # a CLI run leaves nothing in the repository
        cases = {name: whole(command, cwd) for name, command in starts.items()}
        cases |= {f"{name} --help": added(name, cwd, cpu[name]) for name in names}
        for case in cases.values() if args.repeats > 1 else ():  # one repeat: a smoke run, not a measure
            case()  # warm-up: the file system cache, .pyc files
        for values in cpu.values():
            values.clear()
        samples = interleave(cases, args.repeats)
    print(f"fresh processes, {args.repeats} repeats; whole starts, wall seconds")
    print(table({name: samples[name] for name in starts}, "s", baseline=LIGHTNING, width=52))
    print(f"\nadded to `import lightning.pytorch` by `python -m proj <subcommand> --help` (goal <= {GOAL} s)")
    print(f"{'':<52}{'median wall s':>14}{'min':>8}{'median CPU s':>14}{'min':>8}  within")
    helps = {}
    for name in names:
        wall, seconds = samples[f"{name} --help"], cpu[name]
        helps[name] = statistics.median(wall)
        verdict = "yes" if helps[name] <= GOAL else "NO"
        print(
            f"{name:<52}{helps[name]:>14.3f}{min(wall):>8.3f}{statistics.median(seconds):>14.3f}{min(seconds):>8.3f}"
            f"  {verdict}"
        )
    base = statistics.median(samples[LIGHTNING])
    worst = max(helps, key=helps.get)
    result(
        f"`python -m proj <subcommand> --help` adds {helps[names[0]]:.2f} s ({names[0]}) to `import "
        f"lightning.pytorch` ({base:.2f} s), at most {helps[worst]:.2f} s ({worst}); "
        f"{sum(value <= GOAL for value in helps.values())} of {len(helps)} within the goal of {GOAL} s; the default "
        f"config's full parse {statistics.median(samples[DEFAULT_CONFIG]) - base:+.2f} s over the import (whole "
        "processes)"
    )


if __name__ == "__main__":
    main()
