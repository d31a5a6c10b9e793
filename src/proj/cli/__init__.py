"""The command line: `python -m proj <subcommand>`; `python -m proj --help` lists them all.

    python -m proj fit --config configs/default.yaml [--config more.yaml ...] [--key value ...]

Lightning's fit, validate, test and predict go through the LightningCLI in lightning_cli.py; configs stack
left to right, `--print_config` prints the resolved config, which fed back with `--config` reproduces the run.

    python -m proj fit --resume logs/<name>/version_<n>

continues that run: its config.yaml, its last.ckpt (weights, optimizer, scheduler, stage, RNG states) and
the same run directory and TensorBoard version. Checkpoints are read with torch's weights-only unpickler;
`--weights_only false` is the explicit opt-out for files you trust.

The template's own subcommands are one module each here, with a typed entry function whose signature is its
options (`python -m proj cv --help`). They are imported only when they run: `fit` pays nothing for optuna,
ray or onnx.
"""

from __future__ import annotations

import importlib
import signal
import sys
from typing import Any

from lightning.pytorch.utilities.exceptions import SIGTERMException

from proj.callbacks import NonFiniteLossError
from proj.cli.lightning_cli import lightning_main
from proj.cli.parser import ProjArgumentParser

LIGHTNING = {
    "fit": "train, then test the best checkpoint (--resume RUN)",
    "validate": "a checkpoint on the validation split: <run>/validate/",
    "test": "a checkpoint on the test split: <run>/test/",
    "predict": "<run>/predict/predictions.csv from a checkpoint",
}
# name: (module, one line of help)
COMMANDS = {
    "tune": ("proj.cli.tune", "hyper-parameter search, Optuna or Ray Tune"),
    "cv": ("proj.cli.cv", "k-fold cross-validation: mean and std of the tests"),
    "lr_find": ("proj.cli.finders", "sweep the lr, write the suggestion as an override"),
    "batch_size_find": ("proj.cli.finders", "the largest batch size that fits, as an override"),
    "schedule": ("proj.cli.schedule", "draw the lr of every step of a run, before training"),
    "export": ("proj.cli.export", "ONNX / TorchScript (int8) of a checkpoint, checked"),
    "serve": ("proj.cli.serve", "an HTTP server for a run's model (LitServe): predict, info, metrics"),
    "new": ("proj.cli.new", "copy the template into a new, renamed project"),
}


def top_level_parser() -> ProjArgumentParser:
    parser = ProjArgumentParser(prog="python -m proj", description="A PyTorch Lightning project template.")
    subcommands = parser.add_subcommands(required=True, dest="subcommand")
    for name, help in [*LIGHTNING.items(), *((n, h) for n, (_, h) in COMMANDS.items())]:
        subcommands.add_subcommand(name, ProjArgumentParser(prog=f"python -m proj {name}"), help=help)
    return parser


def main(args: list[str] | None = None, run: bool = True) -> Any:
    """Entry point of `python -m proj`; tests call it in-process with `args`.

    A preempted run (SIGTERM, or SIGUSR1 outside SLURM) ends with status 143 = 128 + SIGTERM, as if the signal
    had killed it, so that a scheduler or an `&&` chain does not take it for finished. Lightning re-raises
    its SIGTERMException, a SystemExit without a code, which Python turns into status 0.
    A run that blew up (non-finite loss or weights) ends with status 1 and the guard's message on one line: it
    names the step and the fix, and the traceback through Lightning's loops would only bury it.
    """
    args = list(sys.argv[1:] if args is None else args)
    try:
        return dispatch(args, run)
    except SIGTERMException as stop:
        raise SystemExit(stop.code or 128 + signal.SIGTERM) from None
    except NonFiniteLossError as err:
        raise SystemExit(f"python -m proj {args[0] if args else 'fit'}: error: {err}") from None


def dispatch(args: list[str], run: bool) -> Any:
    if args and args[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[args[0]][0])
        return module.command(args[0], args[1:])
    if run and (not args or args[0] not in LIGHTNING):  # --help, nothing, or an unknown subcommand
        top_level_parser().parse_args(args)
    return lightning_main(args, run=run)
