"""The command line: `python -m proj <subcommand>`.

    python -m proj fit --config configs/default.yaml [--config more.yaml ...] [--key value ...]

Lightning's fit, validate, test and predict go through the LightningCLI in lightning_cli.py; configs stack
left to right, `--print_config` prints the resolved config, which fed back with `--config` reproduces the run.

    python -m proj fit --resume logs/<name>/version_<n>

continues that run: its config.yaml, its last.ckpt (weights, optimizer, scheduler, stage, RNG states) and
the same run directory and TensorBoard version. Checkpoints are read with torch's weights-only unpickler;
`--weights_only false` is the explicit opt-out for files you trust.

The template's own subcommands are one module each here, imported only when they run: `python -m proj fit`
pays nothing for optuna, ray or onnx.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from proj.cli.lightning_cli import lightning_main

COMMANDS = {
    "tune": "proj.cli.tune",
    "lr_find": "proj.cli.finders",
    "batch_size_find": "proj.cli.finders",
    "cv": "proj.cli.cv",
    "export": "proj.cli.export",
    "schedule": "proj.cli.schedule",
    "new": "proj.cli.new",
}


def main(args: list[str] | None = None, run: bool = True) -> Any:
    """Entry point of `python -m proj`; tests call it in-process with `args`."""
    args = list(sys.argv[1:] if args is None else args)
    if args and args[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[args[0]])
        return module.command(args[0], args[1:])
    return lightning_main(args, run=run)
