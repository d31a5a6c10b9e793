"""The template's subcommands that work on a fit config (cv, lr_find, export, ...: the extras): their parser is the
fit config's trainer, model and data, plus the subcommand's own options, read from the signature of its entry
function (typed, documented in --help).

    def lr_find(cli: ConfigCommandCLI, min_lr: float = 1e-6, ...) -> ...   # in the extra
    def command(name, args): return run_config_command(name, lr_find, args)
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.cli import LightningArgumentParser

from proj.cli.parser import UsageError, exit_with_usage_error, summary
from proj.cli.registry import run_command_recorder
from proj.cli.run import ProjCLI, cli_kwargs
from proj.cli.run_dir import log_into, run_of_config


class ConfigCommandCLI(ProjCLI):
    """It builds the model, data and trainer but runs nothing, and writes no config.yaml: the entry function
    decides what is written where (into <run>/<name>/ when it works on a run's checkpoint or config.yaml)."""

    def __init__(self, name: str, entry: Callable[..., Any], args: list[str]) -> None:
        self.entry, self.command_name = entry, name
        self.run_dir: Path | None = None  # the run this subcommand works on, if it was given one
        parser_kwargs = {"prog": f"python -m proj {name}", "description": summary(entry)}
        kwargs = {**cli_kwargs(), "save_config_callback": None, "parser_kwargs": parser_kwargs}
        super().__init__(args=args, run=False, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_function_arguments(self.entry, as_group=True, skip={"cli"})

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        self.run_dir = run_of_config(self.config)
        if self.run_dir is not None:
            log_into(self.config, save_dir=self.run_dir, name=self.command_name, version="")

    def fit_config(self, config: Any = None) -> dict[str, Any]:
        """The resolved fit config (what --print_config shows), or `config` (a changed copy of it), without this
        subcommand's own options: what a fit, a trial or a fold of it runs."""
        fit = yaml.safe_load(self.parser.dump(self.config if config is None else config, skip_none=False))
        for name in self.options():
            fit.pop(name, None)
        return fit

    def write_fit_config(self, path: Path, config: Any = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.fit_config(config), sort_keys=False))
        return path

    def options(self) -> dict[str, Any]:
        """The values of the entry function's own options, by parameter name."""
        names = [n for n in inspect.signature(self.entry).parameters if n != "cli"]
        return {n: self.config_init.get(n) for n in names}


def run_config_command(name: str, entry: Callable[..., Any], args: list[str]) -> Any:
    """Parse `args` for subcommand `name` and call its entry function with the built CLI and its options; on a run,
    inside the recorder an extra provides (the run record's entry in run.json), if one is installed."""
    cli = ConfigCommandCLI(name, entry, args)
    recorder = run_command_recorder()
    recording = recorder(cli.run_dir, [name, *args]) if recorder and cli.run_dir else contextlib.nullcontext()
    try:
        with recording:
            return entry(cli, **cli.options())
    except UsageError as err:
        exit_with_usage_error(f"python -m proj {name}", str(err))
