"""`make bench`: run the CPU benchmarks one after another and rewrite benchmarks/README.md with their tables,
the machine, the date, the commit and the exact command of each.

    python benchmarks/report.py                              # all of them (make bench)
    python benchmarks/report.py --only resnet_epoch.py      # run these again, keep the others' sections

Each benchmark runs in its own process (its stdout is its report; Lightning's logs go to stderr). A failing
benchmark stops the report and leaves README.md as it was. All of them take about 40 minutes on a 2-core CPU
(data_scale.py writes its 52,000 JPEGs once, into /tmp).
"""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    ("Template overhead against plain Lightning and a hand-written loop", ["overhead.py"]),
    ("A realistic step: one ResNet-20 epoch, template against a hand-written loop", ["resnet_epoch.py"]),
    ("Time to 99% test accuracy", ["time_to_accuracy.py", "--seeds", "7"]),
    (
        "Variable-length sequences: one epoch of recorded speech, template against a hand-written loop",
        ["sequence_epoch.py"],
    ),
    (
        "Text: one epoch of the docstrings experiments, template against a hand-written loop",
        ["sequence_epoch.py", "--data", "docstrings", "--copies", "1"],
    ),
    (
        "Text: one epoch of the docstrings Transformer recipe (word deletion on), template against a loop",
        ["sequence_epoch.py", "--data", "docstrings_transformer", "--copies", "1"],
    ),
    ("Text: the two recipes beside TF-IDF + logistic regression, three seeds", ["text_demo.py"]),
    ("Text augmentations on a fifth of the training split, three seeds", ["text_augment.py"]),
    ("Imbalanced table: no correction, oversampling, class weights, SMOTE, a GAN", ["imbalanced_table.py"]),
    ("Training recipes on the scarce digits: effect over three seeds, step-time cost", ["recipes.py"]),
    ("diagnose: rules on constructed runs, the default run over three seeds and the recipes", ["diagnose_rules.py"]),
    ("Start-up", ["startup.py"]),
    ("Data path: augmentation on the device", ["data_path.py"]),
    ("Data at scale: memory and images / s of a lazy folder and streamed shards", ["data_scale.py"]),
    ("ResNet throughput (tiny on CPU; run it without --tiny on a GPU)", ["gpu_throughput.py", "--tiny"]),
    ("Activation checkpointing: peak memory and step time", ["activation_checkpointing.py"]),
    ("Deployment formats", ["export.py"]),
    ("Serving: dynamic batching, ONNX and PyTorch backends", ["serve.py"]),
    ("Hyper-parameter search: pruning", ["hpo_pruning.py"]),
]
# An extra's benchmark is deleted with the extra (serve.py with the serve extra, ...): run the ones that are here.
BENCHMARKS = [(title, args) for title, args in BENCHMARKS if (HERE / args[0]).is_file()]


def machine() -> str:
    import lightning
    import torch

    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") if os.path.exists("/proc/cpuinfo") else open(os.devnull) as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {gpu}; {platform.system()} {platform.release()}; Python "
        f"{platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}"
    )


def commit() -> str:
    git = ["git", "-C", str(HERE)]
    sha = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return sha + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


# Lines of a benchmark's stdout that are not its report: progress bars, Lightning's test table, ONNX export steps.
# Lightning picks Rich's progress bar and model summary when rich is installed: their box drawing and totals too.
NOISE = re.compile(
    r"it/s|\?it|\[A|^\s*$|^(Epoch|Sanity|Training|Validation|Testing)|^\[torch\.onnx\]|[\u2500-\u257f]|Test metric"
    r"|^\s+test/|^(Trainable|Non-trainable|Total) params|^Total (estimated|FLOPs)|^Modules in"
)


RESULT = re.compile(r"^RESULT(?:\[(.+?)\])?: (.*)$")


def results(out: str) -> dict[str | None, str]:
    """A benchmark's headlines: {None: its own row's text, row title: the text of a row of its own}."""
    return {match[1]: match[2] for match in map(RESULT.match, out.splitlines()) if match}


def report_lines(out: str) -> str:
    return "\n".join(line for line in out.splitlines() if not NOISE.search(line) and not RESULT.match(line))


def run(args: list[str]) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=HERE, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"benchmarks/{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout, time.perf_counter() - start


def previous() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """What the README holds of each command: its summary rows and its section (whose first line names the date
    and commit it was measured at)."""
    path = HERE / "README.md"
    text = path.read_text() if path.exists() else ""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if found := re.match(r"^\|.*\| `(python benchmarks/[^`]*)` \|$", line):
            rows.setdefault(found[1], []).append(line)
    sections = {}
    for block in re.split(r"\n(?=## )", text)[1:]:
        lines = block.splitlines()
        if len(lines) > 2 and (found := re.match(r"^`(python benchmarks/[^`]*)`", lines[2])):
            sections[found[1]] = ["", *lines]
    return rows, sections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    scripts = [args[0] for _, args in BENCHMARKS]
    parser.add_argument("--only", nargs="+", choices=scripts, help="run these again, keep the others' tables")
    only = parser.parse_args().only or scripts
    now, sha = f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}", commit()
    header = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`benchmarks/report.py`): do not edit by hand, run it again. Every figure is a",
        "ratio or a median measured side by side in one run of its script; none of them is a test. Each section",
        "names the date and commit it was measured at (`report.py --only SCRIPT` runs one again).",
        "",
        f"- Machine: {machine()}",
        f"- Date: {now}",
        f"- Commit: {sha}",
        "",
        "| benchmark | result | command |",
        "|-----------|--------|---------|",
    ]
    kept_rows, kept_sections = previous()
    sections = []
    for title, args in BENCHMARKS:
        command = f"python benchmarks/{' '.join(args)}"
        if args[0] not in only and command in kept_sections:
            header += kept_rows.get(command, [])
            sections += kept_sections[command]
            continue
        print(f"running benchmarks/{' '.join(args)} ...", flush=True)
        out, seconds = run(args)
        rows = results(out)
        header.append(f"| {title} | {rows.pop(None, 'the table below')} | `{command}` |")
        header += [f"| {row} | {text} | `{command}` |" for row, text in rows.items()]
        stamp = f"`{command}` ({seconds:.0f} s; {now}, commit {sha})"
        sections += ["", f"## {title}", "", stamp, "", "```text", report_lines(out), "```"]
    (HERE / "README.md").write_text("\n".join(header + sections) + "\n")
    print(f"wrote {HERE / 'README.md'}")


if __name__ == "__main__":
    main()
