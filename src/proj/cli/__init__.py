"""The command line: `python -m proj <subcommand>`; `python -m proj --help` lists them all.

fit, validate, test and predict are Lightning's, through the LightningCLI of run.py (the run path, top to bottom).
The other subcommands come from the extras (proj/extras/), found by registry.py; each is imported only when it
runs, so `fit` pays nothing for optuna, ray or onnx.
"""

from __future__ import annotations

import importlib
import signal
import sys
from typing import Any

from lightning.pytorch.utilities.exceptions import SIGTERMException

from proj.callbacks import NonFiniteLossError
from proj.cli.parser import ProjArgumentParser, exit_with_usage_error
from proj.cli.registry import LIGHTNING, commands
from proj.cli.run import lightning_main
from proj.models import BatchError


def top_level_parser() -> ProjArgumentParser:
    parser = ProjArgumentParser(prog="python -m proj", description="A PyTorch Lightning project template.")
    subcommands = parser.add_subcommands(required=True, dest="subcommand")
    for name, help in [*LIGHTNING.items(), *((n, h) for n, (_, h) in commands().items())]:
        subcommands.add_subcommand(name, ProjArgumentParser(prog=f"python -m proj {name}"), help=help)
    return parser


def main(args: list[str] | None = None, run: bool = True) -> Any:
    """Entry point of `python -m proj`; tests call it in-process with `args`.

    A preempted run (SIGTERM, or SIGUSR1 outside SLURM) ends with status 143 = 128 + SIGTERM, as if the signal
    had killed it, so that a scheduler or an `&&` chain does not take it for finished. Lightning re-raises
    its SIGTERMException, a SystemExit without a code, which Python turns into status 0.
    A run that blew up (non-finite loss or weights) ends with status 1 and the guard's message on one line: it
    names the step and the fix, and the traceback through Lightning's loops would only bury it. So does a batch the
    model cannot read (proj.models.batches), at the first step, with status 2: it is the data's or the config's.
    """
    args = list(sys.argv[1:] if args is None else args)
    try:
        result = dispatch(args, run)
    except SIGTERMException as stop:  # every rank stopped at the same batch (proj.callbacks.Preemption)
        end_process_group()
        raise SystemExit(stop.code or 128 + signal.SIGTERM) from None
    except NonFiniteLossError as err:
        raise SystemExit(f"python -m proj {args[0] if args else 'fit'}: error: {err}") from None
    except BatchError as err:
        exit_with_usage_error(f"python -m proj {args[0] if args else 'fit'}", str(err))
    end_process_group()
    return result


def end_process_group() -> None:
    """Destroy the process group of a distributed run (DDP, FSDP, torchrun) while the interpreter is whole: left to
    its exit, gloo's worker threads can abort a finished process ("terminate called without an active exception",
    status -6; seen in the two-node test on a busy machine, pytorch/pytorch#190489). Not after a failure, where
    other ranks may still wait in a collective."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def dispatch(args: list[str], run: bool) -> Any:
    if args and args[0] in LIGHTNING:
        return lightning_main(args, run=run)
    if not run:  # a fit config without its subcommand
        return lightning_main(args, run=False)
    extra = commands().get(args[0]) if args else None
    if extra is None:  # --help, nothing, or an unknown subcommand: the usage, or the error naming the subcommands
        top_level_parser().parse_args(args)
    return importlib.import_module(extra[0]).command(args[0], args[1:])
