"""Cold start: what the template adds to `import lightning.pytorch` before any training begins.

    python benchmarks/startup.py [--repeats 5] [--commands fit cv ...]

Each command runs in a fresh Python process (what a user waits for), alternated over the repeats:
`import torch`, `import lightning.pytorch`, `python -m proj <subcommand> --help` for every subcommand that
`python -m proj --help` lists, and the real parse of the default config (`fit --config configs/default.yaml
--print_config`: data module, model and callbacks imported). Heavy optional packages (optuna, ray, onnx,
matplotlib, scikit-learn) are imported where they are used, so none of them is paid for at start-up.
Goal: every subcommand's `--help` within 0.3 s of `import lightning.pytorch`.
One repeat is a smoke run (the tests): it times `fit --help` only, unless --commands names more.
"""

import argparse
import ast
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
DEFAULT_CONFIG = "python -m proj fit --config default --print_config"


def subcommands() -> list[str]:
    """The names in LIGHTNING and COMMANDS of proj/cli/__init__.py, read from its source: importing it here
    would cost this process a Lightning import for a list of eleven names."""
    tree = ast.parse((ROOT / "src" / "proj" / "cli" / "__init__.py").read_text())
    tables = {
        target.id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id in ("LIGHTNING", "COMMANDS")
    }
    return [*tables["LIGHTNING"], *tables["COMMANDS"]]


def commands(names: list[str]) -> dict[str, list[str]]:
    return {
        TORCH: ["-c", "import torch"],
        LIGHTNING: ["-c", "import lightning.pytorch"],
        **{f"python -m proj {name} --help": ["-m", "proj", name, "--help"] for name in names},
        DEFAULT_CONFIG: ["-m", "proj", "fit", "--config", str(ROOT / "configs" / "default.yaml"), "--print_config"],
    }


def seconds(args: list[str], cwd: str):
    def case() -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True, cwd=cwd)
        return time.perf_counter() - start

    return case


def added(samples: dict[str, list[float]]) -> str:
    """Each proj command against `import lightning.pytorch`: median - median, and min - min (noise on a shared
    machine only slows a run down, so the minima are the steadier estimate)."""
    base = samples[LIGHTNING]
    lines = [f"{'added to import lightning.pytorch':<52}{'median s':>10}{'min s':>10}  within {GOAL} s"]
    for name, values in samples.items():
        if "proj" in name:
            median, best = statistics.median(values) - statistics.median(base), min(values) - min(base)
            verdict = "-" if name == DEFAULT_CONFIG else "yes" if median <= GOAL else "NO"  # the goal is --help's
            lines.append(f"{name:<52}{median:>+10.3f}{best:>+10.3f}  {verdict}")
    return "\n".join(lines)


def main() -> None:
    every = subcommands()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--commands", nargs="+", choices=every, help="subcommands whose --help to time (all)")
    args = parser.parse_args()
    names = args.commands or (every if args.repeats > 1 else ["fit"])
    with tempfile.TemporaryDirectory() as cwd:  # a CLI run leaves nothing in the repository
        cases = {name: seconds(command, cwd) for name, command in commands(names).items()}
        for case in cases.values() if args.repeats > 1 else ():  # one repeat: a smoke run, not a measure
            case()  # warm-up: the file system cache, .pyc files
        samples = interleave(cases, args.repeats)
    print(f"fresh processes, {args.repeats} repeats")
    print(table(samples, "s", baseline=LIGHTNING, width=52))
    print()
    print(added(samples))
    base = statistics.median(samples[LIGHTNING])
    helps = {name: statistics.median(samples[f"python -m proj {name} --help"]) - base for name in names}
    worst, first = max(helps, key=helps.get), "fit" if "fit" in helps else names[0]
    within = sum(value <= GOAL for value in helps.values())
    result(
        f"`{first} --help` adds {helps[first]:+.2f} s to `import lightning.pytorch` ({base:.2f} s), "
        f"parsing the default config {statistics.median(samples[DEFAULT_CONFIG]) - base:+.2f} s; "
        f"{within} of {len(helps)} subcommands' --help within {GOAL} s (slowest: {worst} {helps[worst]:+.2f} s)"
    )


if __name__ == "__main__":
    main()
