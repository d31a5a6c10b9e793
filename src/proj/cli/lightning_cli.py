"""The LightningCLI of fit / validate / test / predict: the template's links, `--resume`, test-after-fit.

Facts of the data are linked into the model with `link_arguments`, never written twice in YAML.
"""

from __future__ import annotations

import itertools
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from proj.cli.options import without_subcommand_keys
from proj.optim import OptimConfig, parse_stages

# (data module attribute, model argument): what every task module learns from the data. The same three for
# every task, so that one parser serves them all (a link to an argument that a model lacks is written into the
# run's config.yaml and breaks reading it back).
DATA_TO_MODEL = (("num_outputs", "num_outputs"), ("input_shape", "input_shape"), ("target_info", "targets"))


class ProjCLI(LightningCLI):
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
            type=str | None,
            default=None,
            help="A run directory logs/<name>/version_<n>: continue that run from its last.ckpt, into that directory.",
        )

    def before_instantiate_classes(self) -> None:
        # Check the optim config as written, so a mistake is reported plainly (not inside jsonargparse's
        # "does not validate against any of the Union subtypes") and before anything is built.
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("weights_only", False) is None:
            config.weights_only = True  # never unpickle arbitrary objects from a checkpoint unless told to
        drop_progress_bar_if_disabled(config)
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
    }


def resume_args(args: list[str]) -> list[str]:
    """Expand `--resume RUN_DIR` into the run's config, its last checkpoint and its logger version."""
    for i, arg in enumerate(args):
        if arg == "--resume" or arg.startswith("--resume="):
            value = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
            break
    else:
        return args
    run_dir = Path(value)
    config, last = run_dir / "config.yaml", run_dir / "checkpoints" / "last.ckpt"
    for path in (config, last):
        if not path.is_file():
            raise SystemExit(f"--resume {value}: {path} does not exist; give a run directory logs/<name>/version_<n>")
    subcommand, rest = args[:1], args[1:]
    return [
        *subcommand,
        "--config",
        str(config),
        *rest,
        f"--ckpt_path={last}",
        f"--trainer.logger.init_args.save_dir={run_dir.parent.parent}",
        f"--trainer.logger.init_args.name={run_dir.parent.name}",
        f"--trainer.logger.init_args.version={run_dir.name}",
    ]


def run_fit(args: list[str], callbacks: Sequence[Callback] = ()) -> ProjCLI:
    """One fit from config arguments, in this process, with extra callbacks: a trial of tune, a fold of cv."""
    cli = lightning_main(args, run=False)
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def lightning_main(args: list[str], run: bool = True) -> ProjCLI:
    """A ProjCLI from these arguments (`run=False`: built, not run; no subcommand in `args` then)."""
    args = resume_args(args) if run else without_subcommand_keys(args)
    try:
        return ProjCLI(args=args, run=run, **cli_kwargs())
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f"a pickled reference to {found.group(1)}" if found else "pickled objects"
        paths = [a.split("=", 1)[1] for a in args if a.startswith("--ckpt_path=")]
        paths += [b for a, b in itertools.pairwise(args) if a == "--ckpt_path"]
        raise SystemExit(
            f"Refused to load a checkpoint{' ' + paths[-1] if paths else ''}: it holds {what}, beyond tensors "
            "and plain values, and unpickling it could run arbitrary code. If you trust the file, pass "
            "--weights_only false."
        ) from err
