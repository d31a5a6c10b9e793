"""Cold start: what the template adds to `import lightning.pytorch` before any training begins.

    python benchmarks/startup.py [--repeats 5]

Each command runs in a fresh Python process (what a user waits for), alternated over the repeats:
`import torch`, `import lightning.pytorch`, `python -m proj fit --help`, and the real parse of the default
config (`fit --config configs/default.yaml --print_config`: data module, model and callbacks imported).
Heavy optional packages (optuna, ray, onnx, matplotlib, scikit-learn) are imported where they are used, so
none of them is paid for at start-up. Goal: `fit --help` within 0.5 s of `import lightning.pytorch`.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import interleave, result, table

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -c 'import torch'": ["-c", "import torch"],
    "python -c 'import lightning.pytorch'": ["-c", "import lightning.pytorch"],
    "python -m proj fit --help": ["-m", "proj", "fit", "--help"],
    "python -m proj fit --config default --print_config": [
        "-m", "proj", "fit", "--config", str(ROOT / "configs" / "default.yaml"), "--print_config",
    ],
}  # fmt: skip


def seconds(args: list[str]):
    def case() -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True, cwd=ROOT)
        return time.perf_counter() - start

    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for command in COMMANDS.values() if args.repeats > 1 else ():  # one repeat: a smoke run, not a measure
        seconds(command)()  # warm-up: the file system cache, .pyc files
    samples = interleave({name: seconds(command) for name, command in COMMANDS.items()}, args.repeats)
    print(f"fresh processes, {args.repeats} repeats")
    print(table(samples, "s", baseline="python -c 'import lightning.pytorch'", width=52))
    base = statistics.median(samples["python -c 'import lightning.pytorch'"])
    added = {name: statistics.median(v) - base for name, v in samples.items() if "proj" in name}
    result(
        f"`fit --help` adds {added['python -m proj fit --help']:+.2f} s to `import lightning.pytorch` ({base:.2f} s), "
        f"parsing the default config {added['python -m proj fit --config default --print_config']:+.2f} s"
    )


if __name__ == "__main__":
    main()
