"""The LightningCLI of fit / validate / test / predict, and of the template's subcommands that run on a fit
config: the data -> model links, `--resume`, test-after-fit, run directories, one-line usage errors.

Facts of the data are linked into the model with `link_arguments`, never written twice in YAML.
"""

from __future__ import annotations

import inspect
import pickle
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from proj.cli.parser import ProjArgumentParser, UsageError, exit_with_usage_error, summary
from proj.cli.run_dir import ResumeRun, SaveRunConfig, log_into, run_of_checkpoint, run_of_config
from proj.optim import OptimConfig, parse_stages

# (data module attribute, model argument): what every task module learns from the data. The same three for
# every task, so that one parser serves them all (a link to an argument that a model lacks is written into the
# run's config.yaml and breaks reading it back).
DATA_TO_MODEL = (("num_outputs", "num_outputs"), ("input_shape", "input_shape"), ("target_info", "targets"))
# Lightning warns when `args` is given while sys.argv holds arguments too: `python -m proj` hands it sys.argv
# on purpose (after choosing the subcommand), so the warning would only be noise.
ARGS_WARNING = "LightningCLI's args parameter is intended"


class ProjCLI(LightningCLI):
    def __init__(self, *args: Any, run: bool = True, **kwargs: Any) -> None:
        self.subcommands_mode = run  # add_arguments_to_parser runs inside super().__init__
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=ARGS_WARNING)
            super().__init__(*args, run=run, parser_class=ProjArgumentParser, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for source, target in DATA_TO_MODEL:
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, test the best checkpoint (by the ModelCheckpoint monitor) on the test split.",
        )
        parser.add_argument(
            "--test_ckpt",
            type=Literal["best", "last"],
            default="best",
            help="Which checkpoint test_after_fit tests: best (by the ModelCheckpoint monitor) or last.",
        )
        parser.add_argument(
            "--resume",
            action=ResumeRun,
            help="A run directory logs/<name>/version_<n>: continue that run from its last.ckpt, into that "
            "directory, with its config.yaml (options after --resume still win).",
        )
        if not self.subcommands_mode:  # a fit config without its subcommand: a run's config.yaml still parses
            parser.add_argument("--ckpt_path", type=str | None, default=None, help="A checkpoint to start from.")
            parser.add_argument("--weights_only", type=bool | None, default=None, help="See fit --help.")

    def before_instantiate_classes(self) -> None:
        # Check the optim config as written, so a mistake is reported plainly (not inside jsonargparse's
        # "does not validate against any of the Union subtypes") and before anything is built.
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("weights_only", False) is None:
            config.weights_only = True  # never unpickle arbitrary objects from a checkpoint unless told to
        drop_progress_bar_if_disabled(config)
        run_dir = run_of_checkpoint(config) if self.subcommand in ("validate", "test", "predict") else None
        if run_dir is not None:  # into <run>/<subcommand>/, not a new version
            log_into(config, save_dir=run_dir, name=self.subcommand, version="")
        optim = config.get("model", {}).get("init_args", {}).get("optim")
        if optim is not None:
            try:
                parse_stages(OptimConfig(**optim.as_dict() if hasattr(optim, "as_dict") else optim))
            except ValueError as err:
                self.parser.error(f"model.init_args.{err}")

    def _parse_ckpt_path(self) -> None:
        # Lightning 2.6 reads the checkpoint's hyper-parameters here with weights_only=True whatever
        # --weights_only says; honour the explicit opt-out for trusted files.
        subcommand = self.config.get("subcommand")
        if not subcommand or self.config[subcommand].get("weights_only") is not False:
            try:
                return super()._parse_ckpt_path()
            except pickle.UnpicklingError as err:
                raise SystemExit(refused_checkpoint(err, self.config[subcommand].get("ckpt_path"))) from err
        load = torch.load
        torch.load = lambda *args, **kwargs: load(*args, **{**kwargs, "weights_only": False})
        try:
            super()._parse_ckpt_path()
        finally:
            torch.load = load

    def after_fit(self) -> None:
        if not self.config_init[self.subcommand].get("test_after_fit", True):
            return
        if self.trainer.interrupted:
            return
        which = self.config_init[self.subcommand].get("test_ckpt", "best")
        ckpt = self.trainer.checkpoint_callback
        ckpt_path = which if ckpt is not None and getattr(ckpt, f"{which}_model_path", "") else None
        if ckpt_path is None:
            rank_zero_warn(f"No {which} checkpoint was saved: testing the final weights instead.")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)


def drop_progress_bar_if_disabled(config: Any) -> None:
    """The default config names its progress bar (to set its refresh rate); `--trainer.enable_progress_bar
    false` then removes it, where Lightning would refuse a progress bar callback with the bar disabled."""
    trainer = config.get("trainer") or {}
    if trainer.get("enable_progress_bar") is False and trainer.get("callbacks"):
        trainer.callbacks = [c for c in trainer.callbacks if not str(c.get("class_path", "")).endswith("ProgressBar")]


def cli_kwargs() -> dict[str, Any]:
    """The arguments every ProjCLI is built with (the main entry point and in-process runs share them)."""
    return {
        "model_class": L.LightningModule,
        "datamodule_class": L.LightningDataModule,
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        # Parameter groups, step intervals and stages do not fit --optimizer / --lr_scheduler: each model
        # holds its own configure_optimizers (see proj/optim/).
        "auto_configure_optimizers": False,
        # The config is written into the run directory, logs/<name>/version_<n>/config.yaml. A new run gets
        # a new version; overwrite only matters when a run is resumed into its own directory.
        "save_config_kwargs": {"overwrite": True},
        "save_config_callback": SaveRunConfig,
    }


def run_fit(args: list[str], callbacks: Sequence[Callback] = ()) -> ProjCLI:
    """One fit from config arguments, in this process, with extra callbacks: a trial of tune, a fold of cv."""
    cli = lightning_main(args, run=False)
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def lightning_main(args: list[str], run: bool = True) -> ProjCLI:
    """A ProjCLI from these arguments (`run=False`: built, not run; no subcommand in `args` then)."""
    try:
        return ProjCLI(args=args, run=run, parser_kwargs={"prog": "python -m proj"}, **cli_kwargs())
    except pickle.UnpicklingError as err:
        raise SystemExit(refused_checkpoint(err)) from err


def refused_checkpoint(err: Exception, path: str | None = None) -> str:
    found = re.search(r"GLOBAL (\S+)", str(err))
    what = f"a pickled reference to {found.group(1)}" if found else "pickled objects"
    return (
        f"Refused to load a checkpoint {path or '(--ckpt_path)'}: it holds {what}, beyond tensors and plain "
        "values, and unpickling it could run arbitrary code. If you trust the file, pass --weights_only false."
    )


class ToolCLI(ProjCLI):
    """The parser of one of the template's subcommands that work on a fit config (cv, lr_find, export, ...):
    the fit config's trainer, model and data, plus the subcommand's own options, read from the signature of its
    entry function (typed, documented in --help). It builds the model, data and trainer but runs nothing, and
    writes no config.yaml: the entry function decides what is written where."""

    def __init__(self, name: str, entry: Callable[..., Any], args: list[str]) -> None:
        self.entry, self.tool_name = entry, name
        self.run_dir: Path | None = None  # the run this subcommand works on, if it was given one
        parser_kwargs = {"prog": f"python -m proj {name}", "description": summary(entry)}
        kwargs = {**cli_kwargs(), "save_config_callback": None, "parser_kwargs": parser_kwargs}
        super().__init__(args=args, run=False, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_function_arguments(self.entry, as_group=True, skip={"cli"})

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        # On an existing run (its checkpoint or its config.yaml), whatever this writes goes into <run>/<name>/.
        self.run_dir = run_of_config(self.config)
        if self.run_dir is not None:
            log_into(self.config, save_dir=self.run_dir, name=self.tool_name, version="")

    def fit_config(self) -> dict[str, Any]:
        """The resolved fit config (what --print_config shows), without this subcommand's own options: what a
        fit, a trial or a fold of it runs."""
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for name in self.options():
            config.pop(name, None)
        return config

    def write_fit_config(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.fit_config(), sort_keys=False))
        return path

    def options(self) -> dict[str, Any]:
        """The values of the entry function's own options, by parameter name."""
        names = [n for n in inspect.signature(self.entry).parameters if n != "cli"]
        return {n: self.config_init.get(n) for n in names}


def run_tool(name: str, entry: Callable[..., Any], args: list[str]) -> Any:
    """Parse `args` for subcommand `name` and call its entry function with the built CLI and its options."""
    cli = ToolCLI(name, entry, args)
    try:
        return entry(cli, **cli.options())
    except UsageError as err:
        exit_with_usage_error(f"python -m proj {name}", str(err))
