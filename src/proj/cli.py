"""The command line: LightningCLI with the template's links, run directories and test-after-fit.

    python -m proj fit --config configs/default.yaml [--config more.yaml ...] [--key value ...]

Subcommands: fit, validate, test, predict (Lightning's). Configs stack left to right; `--print_config`
prints the resolved config, which fed back with `--config` reproduces the run.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from proj.optim import OptimConfig, parse_stages


class ProjCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Facts of the data are linked into the model, never written twice in YAML.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")
        # Loss weights for imbalanced classes are a property of the data (data.class_weights: balanced).
        parser.link_arguments("data.class_weights", "model.init_args.loss_weights", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, test the best checkpoint (by the ModelCheckpoint monitor) on the test split.",
        )

    def before_instantiate_classes(self) -> None:
        # Check the optim config as written, so a mistake is reported plainly (not inside jsonargparse's
        # "does not validate against any of the Union subtypes") and before anything is built.
        config = self.config[self.subcommand] if self.subcommand else self.config
        optim = config.get("model", {}).get("init_args", {}).get("optim")
        if optim is not None:
            try:
                parse_stages(OptimConfig(**optim.as_dict() if hasattr(optim, "as_dict") else optim))
            except ValueError as err:
                self.parser.error(f"model.init_args.{err}")

    def after_fit(self) -> None:
        if not self.config_init[self.subcommand].get("test_after_fit", True):
            return
        if self.trainer.interrupted:
            return
        ckpt = self.trainer.checkpoint_callback
        ckpt_path = "best" if ckpt is not None and getattr(ckpt, "best_model_path", "") else None
        if ckpt_path is None:
            rank_zero_warn("No best checkpoint was saved: testing the final weights instead.")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)


def cli_kwargs() -> dict[str, Any]:
    """The arguments every ProjCLI is built with (the main entry point and in-process runs share them)."""
    return {
        "model_class": L.LightningModule,
        "datamodule_class": L.LightningDataModule,
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        # Parameter groups, step intervals and stages do not fit --optimizer / --lr_scheduler: each model
        # holds its own configure_optimizers (see proj/optim.py).
        "auto_configure_optimizers": False,
        # The config is written into the run directory, logs/<name>/version_<n>/config.yaml. A new run gets
        # a new version; overwrite only matters when a run is resumed into its own directory.
        "save_config_kwargs": {"overwrite": True},
    }


def main(args: list[str] | None = None, run: bool = True) -> ProjCLI:
    """Entry point of `python -m proj`; tests call it in-process with `args`."""
    return ProjCLI(args=args, run=run, **cli_kwargs())
