"""The LightningCLI of fit / validate / test / predict, and of the template's subcommands that run on a fit
config: the data -> model links, `--resume`, test-after-fit, run directories, one-line usage errors.

Facts of the data are linked into the model with `link_arguments`, never written twice in YAML.
"""

from __future__ import annotations

import inspect
import pickle
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn

import lightning.pytorch as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from proj.callbacks.run_record import recorded, run_record
from proj.cli.callback_list import drop_logger_callbacks_without_logger, one_progress_bar
from proj.cli.checkpoint_model import (
    UNREADABLE,
    check_weights_fit,
    keep_given_model,
    refused_checkpoint,
    unreadable_checkpoint,
)
from proj.cli.init_from import HELP as INIT_FROM_HELP
from proj.cli.init_from import apply_init_from, init_from_refusal
from proj.cli.parser import ProjArgumentParser, UsageError, construction_error, exit_with_usage_error, summary
from proj.cli.run_dir import ResumeRun, SaveRunConfig, log_into, run_of_checkpoint, run_of_config
from proj.cli.trainer_checks import sync_batchnorm_on_gpus_only, trainer_refusal
from proj.optim import OptimConfig, check_stages_start_in_run, parse_stages

# (data module attribute, model argument): what every task module learns from the data. The same three for
# every task, so that one parser serves them all (a link to an argument that a model lacks is written into the
# run's config.yaml and breaks reading it back).
DATA_TO_MODEL = (("num_outputs", "num_outputs"), ("input_shape", "input_shape"), ("target_info", "targets"))
# Lightning warns when `args` is given while sys.argv holds arguments too: `python -m proj` hands it sys.argv
# on purpose (after choosing the subcommand), so the warning would only be noise.
ARGS_WARNING = "LightningCLI's args parameter is intended"
# What a bad value makes a class's __init__, Lightning's Trainer or configure_optimizers raise: before the loop
# starts, such an error is the config's and is reported on one line; once it runs, it keeps its traceback.
CONFIG_ERRORS = (ValueError, TypeError, MisconfigurationException)
LIGHTNING_CKPT_NAMES = ("best", "last", "hpc", "registry")  # ckpt_path values that name no file


class LoopStarted(Callback):
    """Marks the start of the loop: errors before it come from the config (setup, configure_optimizers)."""

    started = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = True

    on_validation_start = on_test_start = on_predict_start = on_fit_start


class ProjCLI(LightningCLI):
    def __init__(self, *args: Any, run: bool = True, **kwargs: Any) -> None:
        self.subcommands_mode = run  # add_arguments_to_parser runs inside super().__init__
        self.changed_model_keys: list[str] = []  # model values given over a checkpoint's hyper-parameters
        self.loop, self.argv = LoopStarted(), list(kwargs.get("args") or [])  # argv: for run.json
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=ARGS_WARNING)
            try:
                super().__init__(*args, run=run, parser_class=ProjArgumentParser, **kwargs)
            except CONFIG_ERRORS as err:
                if self.loop.started:
                    raise
                subcommand = getattr(self, "subcommand", None)
                message = str(err)  # proj.optim names its keys from `optim.` on: the config spells them in full
                message = f"model.init_args.{message}" if message.startswith("optim.") else message
                exit_with_usage_error(f"python -m proj {subcommand or ''}".strip(), message)

    def subcommands(self) -> dict[str, set[str]]:
        """Only the subcommand asked for: Lightning builds a parser for each of fit, validate, test and predict
        (60 ms each here) before it reads which one runs; `python -m proj --help` lists them all itself."""
        every = LightningCLI.subcommands()
        return {self.argv[0]: every[self.argv[0]]} if self.argv and self.argv[0] in every else every

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
        parser.add_argument("--init_from", type=str | None, default=None, help=INIT_FROM_HELP)
        if not self.subcommands_mode:  # a fit config without its subcommand: a run's config.yaml still parses
            parser.add_argument("--ckpt_path", type=str | None, default=None, help="A checkpoint to start from.")
            parser.add_argument("--weights_only", type=bool | None, default=None, help="See fit --help.")

    def before_instantiate_classes(self) -> None:
        # Check what can be checked as written (the checkpoint's path, the machine, the optim config), so a mistake
        # is reported plainly, not inside jsonargparse's Union diagnostics, and before anything is built.
        config = self.config[self.subcommand] if self.subcommand else self.config
        ckpt = config.get("ckpt_path")
        if ckpt and ckpt not in LIGHTNING_CKPT_NAMES and "://" not in ckpt and not Path(ckpt).exists():
            self.usage_error(f"--ckpt_path {ckpt} does not exist: give a checkpoint file (<run>/checkpoints/*.ckpt)")
        if config.get("weights_only", False) is None:
            config.weights_only = True  # never unpickle arbitrary objects from a checkpoint unless told to
        one_progress_bar(config)
        drop_logger_callbacks_without_logger(config)
        run_dir = run_of_checkpoint(config) if self.subcommand in ("validate", "test", "predict") else None
        if run_dir is not None:  # into <run>/<subcommand>/, not a new version
            log_into(config, save_dir=run_dir, name=self.subcommand, version="")
        sync_batchnorm_on_gpus_only(config)
        refusal = init_from_refusal(config, self.fitting()) or trainer_refusal(config.get("trainer") or {})
        if refusal:
            self.usage_error(refusal)
        optim = config.get("model", {}).get("init_args", {}).get("optim")
        if optim is not None:
            try:
                stages = parse_stages(OptimConfig(**optim.as_dict() if hasattr(optim, "as_dict") else optim))
                later = check_stages_start_in_run(stages, (config.get("trainer") or {}).get("max_epochs"))
            except ValueError as err:
                self.usage_error(f"model.init_args.{err}")
            for warning in later:
                rank_zero_warn(warning)

    def usage_error(self, message: str) -> NoReturn:
        subcommand = self.config.get("subcommand") if self.subcommands_mode else None
        exit_with_usage_error(f"{self.parser.prog} {subcommand or ''}".strip(), message)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except CONFIG_ERRORS as err:
            if isinstance(err, UsageError):
                raise
            raise UsageError(construction_error(err)) from err
        self.trainer.callbacks.extend([self.loop, *run_record(self)])  # run.json where config.yaml goes

    def after_instantiate_classes(self) -> None:
        # A model changed over its checkpoint must still take the checkpoint's weights: refuse it here, naming
        # the key, rather than with a state_dict size mismatch once the loop loads them.
        config = self.config[self.subcommand] if self.subcommand else None
        ckpt = config.get("ckpt_path") if config else None
        if ckpt and Path(ckpt).is_file():
            check_weights_fit(self.model, ckpt, self.changed_model_keys, config.get("weights_only") is not False)
        try:  # a new run from another run's weights (fit, and fit's trials and folds; tools working on a config)
            apply_init_from(self, config or self.config, self.fitting())
        except UsageError as err:
            self.usage_error(str(err))

    def fitting(self) -> bool:
        """Whether this CLI trains: fit, or a fit config without its subcommand (a trial, a fold), not a tool."""
        return self.subcommand == "fit" or not (self.subcommands_mode or hasattr(self, "tool_name"))

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        given = self.config[subcommand].get("model")
        given = given.clone() if given is not None and given.get("class_path") else None
        ckpt = self.config[subcommand].get("ckpt_path")
        try:
            self.read_checkpoint_hparams(self.config[subcommand].get("weights_only") is False)
        except UNREADABLE as err:
            if isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err):  # refused, not unreadable
                raise SystemExit(refused_checkpoint(err, ckpt)) from err
            self.usage_error(unreadable_checkpoint(ckpt, err))
        if given is not None and ckpt and Path(ckpt).is_file():
            linked = {target for _, target in DATA_TO_MODEL}
            try:  # the user's model values win over the checkpoint's: Lightning merged them over the config
                self.changed_model_keys = keep_given_model(self.config[subcommand], given, ckpt, linked)
            except UsageError as err:
                self.usage_error(str(err))

    def read_checkpoint_hparams(self, trusted: bool) -> None:
        # Lightning 2.6 reads the checkpoint's hyper-parameters with weights_only=True whatever --weights_only
        # says; honour the explicit opt-out for trusted files.
        if not trusted:
            return super()._parse_ckpt_path()
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
    try:  # recorded in the run's run.json when it works on a run
        return recorded(cli.run_dir, [name, *args], lambda: entry(cli, **cli.options()))
    except UsageError as err:
        exit_with_usage_error(f"python -m proj {name}", str(err))
