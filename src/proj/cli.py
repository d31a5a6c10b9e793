"""The command line: LightningCLI with the template's links, run directories and test-after-fit.

    python -m proj fit --config configs/default.yaml [--config more.yaml ...] [--key value ...]

Subcommands: fit, validate, test, predict (Lightning's). Configs stack left to right; `--print_config`
prints the resolved config, which fed back with `--config` reproduces the run.

    python -m proj fit --resume logs/<name>/version_<n>

continues that run: its config.yaml, its last.ckpt (weights, optimizer, scheduler, stage, RNG states) and
the same run directory and TensorBoard version. Checkpoints are read with torch's weights-only unpickler;
`--weights_only false` is the explicit opt-out for files you trust.
"""

from __future__ import annotations

import importlib
import itertools
import pickle
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
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
        # holds its own configure_optimizers (see proj/optim.py).
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


# Our own subcommands, imported only when they run: `python -m proj fit` pays nothing for optuna or ray.
COMMANDS = {
    "tune": "proj.tune.optuna_search",
    "lr_find": "proj.finders",
    "batch_size_find": "proj.finders",
    "cv": "proj.cv",
    "export": "proj.export",
    "schedule": "proj.schedule",
    "new": "proj.scaffold",
}


def run_fit(args: list[str], callbacks: Sequence[Callback] = ()) -> ProjCLI:
    """One fit from config arguments, in this process, with extra callbacks: a trial of tune, a fold of cv."""
    cli = main(args, run=False)
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def take_options(args: list[str], defaults: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Our subcommands' own options (`--name value` or `--name=value`, values as given), and the other args."""
    values, rest, it = dict(defaults), [], iter(args)
    for arg in it:
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if name in defaults:
            values[name] = arg.split("=", 1)[1] if "=" in arg else next(it)
        else:
            rest.append(arg)
    return values, rest


SUBCOMMAND_KEYS = ("ckpt_path", "weights_only")


def without_subcommand_keys(args: list[str]) -> list[str]:
    """A run's config.yaml also holds the fit subcommand's own keys (ckpt_path, weights_only); the parser of
    `run=False` (export, tune, cv) has no subcommand and refuses them: give it copies without them."""
    import tempfile

    import yaml

    out, it = [], iter(args)
    for arg in it:
        if arg == "--config" or arg.startswith("--config="):
            path = arg.split("=", 1)[1] if "=" in arg else next(it)
            content = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
            if isinstance(content, dict) and any(k in content for k in SUBCOMMAND_KEYS):
                for key in SUBCOMMAND_KEYS:
                    content.pop(key, None)
                with tempfile.NamedTemporaryFile("w", suffix=f"-{Path(path).name}", delete=False) as f:
                    yaml.safe_dump(content, f, sort_keys=False)
                path = f.name
            out += ["--config", path]
        else:
            out.append(arg)
    return out


def main(args: list[str] | None = None, run: bool = True) -> Any:
    """Entry point of `python -m proj`; tests call it in-process with `args`."""
    args = list(sys.argv[1:] if args is None else args)
    if args and args[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[args[0]])
        return module.command(args[0], args[1:])
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
