"""The run-directory rules: one `logs/<name>/version_<n>/` per training run, and everything done later with
that run (resume, validate, test, predict, lr_find, export) lands inside it.

- `--resume RUN_DIR` reads the run's config.yaml (like `--config`, so later options still win), its last.ckpt,
  and logs into the same directory and TensorBoard version.
- validate / test / predict on a checkpoint of a run (and the template's subcommands on its checkpoint or its
  config.yaml) log into `RUN_DIR/<subcommand>/`, not into a new, empty version that TensorBoard would list.
"""

from __future__ import annotations

import contextlib
import shutil
from argparse import Action
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, Namespace
from lightning.pytorch.cli import SaveConfigCallback

from proj.callbacks.checkpointing import run_dir_of_checkpoint
from proj.cli.parser import UsageError

LAST = Path("checkpoints") / "last.ckpt"


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "checkpoints").is_dir()


class ResumeRun(Action):
    """`--resume RUN_DIR`: continue that run from its last.ckpt, into that directory."""

    def __call__(self, parser: Any, cfg: Any, values: Any, option_string: str | None = None) -> None:
        run_dir = Path(values)
        for path in (run_dir / "config.yaml", run_dir / LAST):
            if not path.is_file():
                best = sorted((run_dir / "checkpoints").glob("best*.ckpt"))
                fix = (
                    f"{best[-1].name} exists: continue from it with --resume {values} --ckpt_path {best[-1]}"
                    if best and path.name == "last.ckpt"
                    else "give a run directory logs/<name>/version_<n>"
                )
                parser.error(f"--resume {values}: {path} does not exist; {fix}")
        ActionConfigFile.apply_config(parser, cfg, "config", str(run_dir / "config.yaml"))
        cfg["ckpt_path"] = str(run_dir / LAST)
        log_into(cfg, save_dir=run_dir.parent.parent, name=run_dir.parent.name, version=run_dir.name)
        cfg[self.dest] = str(run_dir)


def best_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint (the newest best-*.ckpt), else its last.ckpt."""
    best = sorted((run_dir / "checkpoints").glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    if (run_dir / LAST).is_file():
        return run_dir / LAST
    raise UsageError(f"{run_dir / 'checkpoints'} holds no checkpoint: train the run first, or give --ckpt_path")


def log_into(cfg: Any, save_dir: Path, name: str, version: str) -> None:
    """Point the config's logger at a place: each logger with a save_dir (the presets of configs/logger/, a list of
    them too, as configs/logger/several.yaml). One without a directory, or no logger, is left as it is."""
    for init_args in logger_init_args(cfg):
        if "save_dir" not in init_args:
            continue
        init_args["save_dir"] = str(save_dir)
        if "name" in init_args:
            init_args["name"] = name
        if "version" in init_args:
            init_args["version"] = version


def logger_init_args(cfg: Any) -> list[Any]:
    """The init_args of the config's logger, or of each logger of a list of them."""
    logger = cfg.get("trainer.logger") if "trainer" in cfg else None
    loggers = logger if isinstance(logger, list) else [logger]
    return [one.init_args for one in loggers if getattr(one, "init_args", None) is not None]


def run_of_checkpoint(cfg: Any) -> Path | None:
    """The run whose checkpoint --ckpt_path names (logs/<name>/version_<n>/checkpoints/x.ckpt), or None."""
    ckpt = cfg.get("ckpt_path")
    if not ckpt or not Path(ckpt).is_file():  # also Lightning's "best" / "last" / "hpc"
        return None
    run_dir = run_dir_of_checkpoint(ckpt)
    return run_dir if is_run_dir(run_dir) else None


def run_of_config(cfg: Any) -> Path | None:
    """The run a subcommand works on: the run of its --ckpt_path, else the run whose config.yaml it was given."""
    run_dir = run_of_checkpoint(cfg)
    if run_dir is not None:
        return run_dir
    for path in reversed(cfg.get("config") or []):
        folder = Path(str(path)).parent
        if Path(str(path)).name == "config.yaml" and is_run_dir(folder):
            return folder
    return None


# weights_only is always a choice for one command's file; the others are kept when set (a fine-tuned run's init_from).
COMMAND_OPTIONS = ("resume", "ckpt_path", "init_from", "weights_only")


class SaveRunConfig(SaveConfigCallback):
    """The run's config.yaml as a new run would write it: what `--resume` added (resume, the checkpoint, the
    logger's version) is left out, so `fit --config RUN/config.yaml` starts a new run from the same settings and
    `test --config RUN/config.yaml` parses it, while `--resume RUN` adds them back."""

    def __init__(self, parser: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        self.command_line: list[str] = []  # the command's arguments (set by ProjCLI), for the callbacks that record it
        self.resumed = bool(config.get("resume"))
        config = config.clone()
        if self.resumed:
            config["resume"], config["ckpt_path"] = None, None
            for init_args in logger_init_args(config):
                if "version" in init_args:
                    init_args["version"] = None
        # Options of one command, not settings of the run: written as null they would reset what the command line
        # gave before `--config RUN/config.yaml` (`test --ckpt_path X --config RUN/config.yaml` tested fresh weights).
        for key in COMMAND_OPTIONS:
            if key in config and (config[key] is None or key == "weights_only"):
                del config[key]
        super().__init__(SavesWithoutValidating(parser), config, *args, **kwargs)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.record_what_the_data_found(trainer.datamodule)
        super().setup(trainer, pl_module, stage)

    def record_what_the_data_found(self, datamodule: Any) -> None:
        """A data module's `found_init_args()` (what it read from its files: a CSV's columns and classes) replace
        the config's nulls, so that the run directory alone rebuilds it (see proj.data.CSVDataModule)."""
        found = getattr(datamodule, "found_init_args", None)
        if not callable(found) or not isinstance(self.config.get("data"), Namespace):
            return
        for key, value in found().items():
            if f"data.init_args.{key}" in self.config and self.config[f"data.init_args.{key}"] is None:
                self.config[f"data.init_args.{key}"] = value

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """A run that fails before its first step leaves no run directory behind (config.yaml was written at setup):
        an empty version_<n> would be listed by TensorBoard and taken for a run. Only a logger's own version
        directory holding nothing but what setup wrote is removed: without a logger, trainer.log_dir is the
        working directory (the user's project), and a directory with any other file is never touched."""
        if trainer.global_step > 0 or not trainer.is_global_zero or self.resumed or trainer.logger is None:
            return
        run_dir = Path(trainer.log_dir or "")
        if trainer.log_dir is None or run_dir.resolve() != Path(trainer.logger.log_dir).resolve():
            return
        if run_dir.is_dir() and run_dir.resolve() != Path.cwd().resolve() and holds_only_setup_files(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
            with contextlib.suppress(OSError):  # and logs/<name>/ if that run was all it held
                run_dir.parent.rmdir()


class SavesWithoutValidating:
    """The CLI's parser, whose `save` skips validating the config again: LightningCLI validated it when it parsed
    it, and the second validation checks every class signature anew, a fixed cost of every fit."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.parser.save(*args, skip_validation=True, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)


# What a run writes before its first step: its config, the logger's hyper-parameters, metrics and event files, and
# the record of the failed command (the run_record extra's run.json and model card).
SETUP_FILES = ("config.yaml", "hparams.yaml", "metrics.csv", "events.out.tfevents.*", "run.json", "model_card.md")


def holds_only_setup_files(run_dir: Path) -> bool:
    files = [p for p in run_dir.rglob("*") if not p.is_dir()]
    return all(any(fnmatch(p.name, pattern) for pattern in SETUP_FILES) for p in files)
