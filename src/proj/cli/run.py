"""What `python -m proj fit` does, top to bottom: read this file to know the run path. Each step is one hook of
the LightningCLI below, in the order Lightning calls them, and each calls helpers named after what they do.

    python -m proj fit --config configs/default.yaml [--config more.yaml ...] [--key value ...]

1. Parse. YAML files stack left to right, then command-line overrides; an unknown key or a wrong type is a
   one-line error naming the key (parser.py). `--resume RUN` reads the run's config.yaml and its last.ckpt
   (run_dir.py). With a `--ckpt_path`, its hyper-parameters are read, and the config's model values win over them
   (checkpoints.py).
2. Check the config as written, before anything is built: settle it (one progress bar, ...) and refuse what
   cannot run, naming the key (config_checks.py). validate / test / predict of a run's checkpoint log into
   <run>/<subcommand>/ instead of a new run directory.
3. Build the data module, then the model, which gets the facts of the data (`DATA_TO_MODEL`), then the Trainer
   with the callbacks the config names. An error a class raises while it is built is the config's: one line.
4. Check what needs the built objects: the checkpoint's weights fit the model; `--init_from` loads its weights.
5. Fit: Lightning's Trainer.fit. The run directory logs/<name>/version_<n>/ gets config.yaml (SaveRunConfig),
   the checkpoints and the logs.
6. Test the best checkpoint on the test split (`--test_after_fit`, on by default).
7. Record: the callbacks of the config that write records (the run_record extra's run.json and model card) run
   as part of fit and test; every callback a run gets is in its config.yaml, but the one in `ALWAYS`. The last line
   says where the run went.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from proj.cli.checkpoints import check_data_fits, check_weights_fit, model_from_checkpoint, refused_checkpoint
from proj.cli.config_checks import config_refusal, settle_config
from proj.cli.init_from import HELP as INIT_FROM_HELP
from proj.cli.init_from import apply_init_from
from proj.cli.output import quiet_lightning, say_where_the_run_went
from proj.cli.parser import ProjArgumentParser, UsageError, construction_error, exit_with_usage_error
from proj.cli.run_dir import (
    LAST,
    ResumeRun,
    SaveRunConfig,
    best_checkpoint,
    log_into,
    run_of_checkpoint,
    run_of_config,
)
from proj.data import contract as data_contract

# What every task module learns from the data: each read off the data module and checked by the data contract's
# function of that name (proj.data.contract), then given to the model argument of that name. The same three for
# every task, so that one parser serves them all.
DATA_TO_MODEL = ("num_outputs", "input_shape", "targets")
# What a bad value makes a class's __init__, Lightning's Trainer or configure_optimizers raise: before the loop
# starts, such an error is the config's and is reported on one line; once it runs, it keeps its traceback.
CONFIG_ERRORS = (ValueError, TypeError, MisconfigurationException)
EVALUATING = ("validate", "test", "predict")  # the subcommands that run a trained checkpoint
# Lightning warns when `args` is given while sys.argv holds arguments too: `python -m proj` hands it sys.argv
# on purpose (after choosing the subcommand), so the warning would only be noise.
ARGS_WARNING = "LightningCLI's args parameter is intended"


class LoopStartMarker(Callback):
    """Marks that the loop has started: an error raised before it is the config's (one line), after it the run's."""

    started = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = True

    on_validation_start = on_test_start = on_predict_start = on_fit_start


# The callbacks every trainer gets besides those its config names, and why; nothing else is added in code.
ALWAYS = {LoopStartMarker: "tells an error of the config (one line, before the loop) from an error of the run"}


class ProjCLI(LightningCLI):
    def __init__(self, *args: Any, run: bool = True, **kwargs: Any) -> None:
        self.subcommands_mode = run  # add_arguments_to_parser runs inside super().__init__
        self.argv = list(kwargs.get("args") or [])  # the command line, which SaveRunConfig keeps for the records
        self.changed_model_keys: list[str] = []  # model values given over a checkpoint's hyper-parameters
        self.always = {cls: cls() for cls in ALWAYS}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=ARGS_WARNING)
            try:
                super().__init__(*args, run=run, parser_class=ProjArgumentParser, **kwargs)  # steps 1 to 6
            except CONFIG_ERRORS as err:
                if self.always[LoopStartMarker].started:
                    raise
                message = str(err)  # proj.optim names its keys from `optim.` on: the config spells them in full
                self.usage_error(f"model.init_args.{message}" if message.startswith("optim.") else message)

    def subcommands(self) -> dict[str, set[str]]:
        """Only the subcommand asked for: Lightning builds a parser for each of fit, validate, test and predict
        before it reads which one runs; `python -m proj --help` lists them all itself."""
        every = LightningCLI.subcommands()
        return {self.argv[0]: every[self.argv[0]]} if self.argv and self.argv[0] in every else every

    # --- 1. parse ---------------------------------------------------------------------------------------

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """The template's options, and the facts of the data linked into the model (never written twice)."""
        for name in DATA_TO_MODEL:
            read = getattr(data_contract, name)
            parser.link_arguments("data", f"model.init_args.{name}", compute_fn=read, apply_on="instantiate")
        subcommand = self.argv[0] if self.subcommands_mode and self.argv else "fit"
        add_run_options(parser, fit_config_only=not self.subcommands_mode, subcommand=subcommand)

    def _parse_ckpt_path(self) -> None:
        """Lightning's (private) step that reads a --ckpt_path's hyper-parameters: see model_from_checkpoint."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        try:
            self.changed_model_keys = model_from_checkpoint(self, subcommand, set(DATA_TO_MODEL))
        except UsageError as err:
            self.usage_error(str(err))

    # --- 2. check the config as written -----------------------------------------------------------------

    def before_instantiate_classes(self) -> None:
        config = self.active_config()
        settle_config(config)
        if self.subcommand in EVALUATING:
            self.choose_the_runs_checkpoint(config)
        run_dir = run_of_checkpoint(config) if self.subcommand in EVALUATING else None
        if run_dir is not None:  # into <run>/<subcommand>/, not a new version
            log_into(config, save_dir=run_dir, name=self.subcommand, version="")
        refusal = config_refusal(config, self.fitting())
        if refusal:
            self.usage_error(refusal)

    def choose_the_runs_checkpoint(self, config: Any) -> None:
        """validate / test / predict without --ckpt_path would run the config's untrained weights: on a run's
        config.yaml they take that run's best checkpoint (one line says so); on any other config they stop."""
        named = config.get("ckpt_path")
        if named not in (None, "best", "last"):  # a file (Lightning's "best" / "last" mean this new trainer's: none)
            return
        run_dir = run_of_config(config)
        if run_dir is None:
            self.usage_error(
                f"{self.subcommand} needs a checkpoint: give --ckpt_path <run>/checkpoints/<file>.ckpt, or --config "
                f"<run>/config.yaml to use that run's {named or 'best'} checkpoint"
            )
        last = run_dir / LAST
        if named == "last" and not last.is_file():
            self.usage_error(f"--ckpt_path last: {last} does not exist; give a checkpoint file of the run")
        config.ckpt_path = str(last if named == "last" else best_checkpoint(run_dir))
        rank_zero_info(f"{self.subcommand}: the run's checkpoint {config.ckpt_path} (--ckpt_path chooses another)")

    # --- 3. build data, model, trainer ------------------------------------------------------------------

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except CONFIG_ERRORS as err:
            if isinstance(err, UsageError):
                raise
            raise UsageError(construction_error(err)) from err
        self.hand_the_trainer_what_only_the_cli_knows()

    def hand_the_trainer_what_only_the_cli_knows(self) -> None:
        """The callbacks of ALWAYS, and the command line to SaveRunConfig, which keeps it for the records."""
        self.trainer.callbacks.extend(self.always.values())
        for callback in self.trainer.callbacks:
            if isinstance(callback, SaveRunConfig):
                callback.command_line = self.argv

    # --- 4. check what needs the built objects ----------------------------------------------------------

    def after_instantiate_classes(self) -> None:
        """A model changed over its checkpoint must still take the checkpoint's weights: refused here, naming the
        key, rather than with a state_dict size mismatch once the loop loads them. Then --init_from's weights."""
        config = self.config[self.subcommand] if self.subcommand else None
        ckpt = config.get("ckpt_path") if config else None
        try:
            if ckpt and Path(ckpt).is_file():
                check_data_fits(self.datamodule, ckpt, "--ckpt_path", config.get("weights_only") is not False)
                check_weights_fit(self.model, ckpt, self.changed_model_keys, config.get("weights_only") is not False)
            apply_init_from(self, config or self.config, self.fitting())
        except UsageError as err:
            self.usage_error(str(err))

    # --- 5. fit: Lightning's Trainer.fit; 6. test the best checkpoint --------------------------------------

    def after_fit(self) -> None:
        if self.trainer.interrupted:  # preempted: Preemption says where last.ckpt went, and how to resume
            return
        options = self.config_init[self.subcommand]
        if options.get("test_after_fit", True):
            which = options.get("test_ckpt", "best")
            ckpt = self.trainer.checkpoint_callback
            ckpt_path = which if ckpt is not None and getattr(ckpt, f"{which}_model_path", "") else None
            if ckpt_path is None:
                rank_zero_warn(f"No {which} checkpoint was saved: testing the final weights instead.")
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)
        say_where_the_run_went(self.trainer)

    def after_validate(self) -> None:
        say_where_the_run_went(self.trainer, what="The validation")

    def after_test(self) -> None:  # predict says where predictions.csv went itself (PredictionWriter)
        say_where_the_run_went(self.trainer, what="The test")

    # --- helpers ----------------------------------------------------------------------------------------

    def active_config(self) -> Any:
        """The config of the subcommand that runs (or the whole config, built without a subcommand)."""
        return self.config[self.subcommand] if self.subcommand else self.config

    def fitting(self) -> bool:
        """Whether this CLI trains: fit, or a fit config without its subcommand (a trial, a fold), not a command
        working on a config (export, lr_find, ...: proj.cli.config_commands)."""
        return self.subcommand == "fit" or not (self.subcommands_mode or hasattr(self, "command_name"))

    def usage_error(self, message: str) -> NoReturn:
        subcommand = self.config.get("subcommand") if self.subcommands_mode and hasattr(self, "config") else None
        prog = getattr(getattr(self, "parser", None), "prog", "python -m proj")
        exit_with_usage_error(f"{prog} {subcommand or ''}".strip(), message)


def add_run_options(parser: LightningArgumentParser, fit_config_only: bool, subcommand: str = "fit") -> None:
    """--test_after_fit, --test_ckpt, --resume and --init_from; and, for a fit config read without its
    subcommand (a trial, a fold, a run's config.yaml), the subcommand's --ckpt_path and --weights_only.
    validate / test / predict accept fit's options (a run's config.yaml names them) and say they ignore them."""
    ignored = f"(fit's option: {subcommand} ignores it) " if subcommand in EVALUATING else ""
    parser.add_argument(
        "--test_after_fit",
        type=bool,
        default=True,
        help=f"{ignored}After fit, test the best checkpoint (by the ModelCheckpoint monitor) on the test split.",
    )
    parser.add_argument(
        "--test_ckpt",
        type=Literal["best", "last"],
        default="best",
        help=f"{ignored}Which checkpoint test_after_fit tests: best (by the ModelCheckpoint monitor) or last.",
    )
    parser.add_argument(
        "--resume",
        action=ResumeRun,
        help=f"{ignored}A run directory logs/<name>/version_<n>: continue that run from its last.ckpt, into that "
        "directory, with its config.yaml (options after --resume still win).",
    )
    parser.add_argument("--init_from", type=str | None, default=None, help=f"{ignored}{INIT_FROM_HELP}")
    if fit_config_only:
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="A checkpoint to start from.")
        parser.add_argument("--weights_only", type=bool | None, default=None, help="See fit --help.")


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


def lightning_main(args: list[str], run: bool = True) -> ProjCLI:
    """A ProjCLI from these arguments (`run=False`: built, not run; no subcommand in `args` then)."""
    quiet_lightning()
    try:
        return ProjCLI(args=args, run=run, parser_kwargs={"prog": "python -m proj"}, **cli_kwargs())
    except pickle.UnpicklingError as err:
        raise SystemExit(refused_checkpoint(err)) from err


def run_fit(args: list[str], callbacks: Sequence[Callback] = ()) -> ProjCLI:
    """One fit from config arguments, in this process, with extra callbacks: a trial of tune, a fold of cv."""
    cli = lightning_main(args, run=False)
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli
