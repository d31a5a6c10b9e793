"""run.json and model_card.md in every run directory, beside config.yaml.

run.json is one JSON object: git {commit, branch, dirty}, packages, device, seed and wall_time_s (the seconds
of its fit commands) of the run's latest fit; "commands", one entry per command run into the run (fit, the test
after it, a later test / validate / predict / export, a `fit --resume`), each with argv, started, wall_s and
status (ok, failed, interrupted); and "card", the model card's facts (proj.extras.run_record.facts), which
model_card.md is rendered from (proj.extras.run_record.model_card): among them the test metrics' 95% intervals
("intervals"), the evaluation's files ("evaluation") and the diagnose report ("diagnosis"), where the diagnose extra
wrote them into the run.

The CLI adds RunRecord to every trainer that writes a config.yaml (proj.cli.run), whatever the
config names, and records the template's own subcommands that work on a run (`run_tool`). Rank 0 writes, once
per command; writing is never fatal: a failure is one warning line, the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from proj.callbacks.checkpointing import run_dir_of_checkpoint
from proj.extras.run_record.facts import (
    card_facts,
    device_facts,
    evaluation_facts,
    final_metrics,
    git_state,
    package_versions,
    thresholds_fact,
)
from proj.extras.run_record.model_card import render_card

RECORD, CARD = "run.json", "model_card.md"
KEY_ORDER = ("git", "packages", "device", "seed", "wall_time_s", "commands", "card")


class RunRecord(Callback):
    """One entry in run.json per trainer call (fit, then the test after it), and the card re-rendered.

    The run is the trainer's log_dir, where config.yaml goes (the working directory with `--trainer.logger
    false`); a validate / test / predict of a run's checkpoint records into that run (it logs into <run>/test/).
    """

    def __init__(self) -> None:
        self.argv: list[str] = []
        self.command: str | None = None  # the first stage of this process: fit, validate, test or predict
        self.seed: int | None = None
        self.active = False
        self.run_dir: Path | None = None
        self.stage = "fit"
        self.entry: dict[str, Any] | None = None
        self.git: dict[str, Any] | None = None
        self.calls = 0
        self.t0 = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        saving = next((c for c in trainer.callbacks if isinstance(c, SaveConfigCallback)), None)
        self.active = saving is not None  # a command that writes the run's config.yaml
        if not self.active:
            return
        if self.command is None:
            seed = saving.config.get("seed_everything")
            self.seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
            self.argv, self.command = list(getattr(saving, "command_line", [])), stage
        log_dir = trainer.log_dir  # on every rank: under DDP it is a broadcast
        if trainer.is_global_zero and log_dir is not None:
            never_fatal(self.begin, Path(log_dir), stage)

    def begin(self, run_dir: Path, stage: str) -> None:
        if self.calls == 0:
            self.git = git_state()  # once per command: the code does not change between fit and its test
            name = self.command
        else:
            name = "test_after_fit" if stage == "test" and self.command == "fit" else stage
        self.calls += 1
        self.run_dir, self.stage = run_dir, stage
        self.entry = {"command": name, "argv": self.argv, "started": now()}
        self.t0 = time.perf_counter()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self.entry is not None:
            never_fatal(self.finish, trainer, pl_module, "ok")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # A new run that failed before its first step was just removed (SaveRunConfig.on_exception): not recreated.
        if not trainer.is_global_zero or self.entry is None or not self.target(trainer).is_dir():
            return
        stopped = isinstance(exception, KeyboardInterrupt | SIGTERMException)
        never_fatal(self.finish, trainer, pl_module, "interrupted" if stopped else "failed")

    def target(self, trainer: L.Trainer) -> Path:
        """The run this command's record goes into (Lightning knows the checkpoint only after setup)."""
        ckpt = trainer.ckpt_path
        if self.stage != "fit" and ckpt and os.path.isfile(ckpt):
            run_dir = run_dir_of_checkpoint(ckpt)
            if (run_dir / "config.yaml").is_file():
                return run_dir
        return Path(self.run_dir or ".")

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule, status: str) -> None:
        entry, self.entry = self.entry or {}, None
        self.run_dir = self.target(trainer)
        entry.update(wall_s=round(time.perf_counter() - self.t0, 3), status=status, git=self.git)
        if trainer.ckpt_path and os.path.isfile(trainer.ckpt_path):
            entry["ckpt_path"] = relative(trainer.ckpt_path, self.run_dir)
        record = read_record(self.run_dir)
        record["commands"].append(entry)
        card = record.get("card") or {}
        if self.stage == "fit" or not card:  # the facts of the training; a later test only adds its metrics
            card.update(card_facts(trainer, pl_module))
            record.update(git=self.git, packages=package_versions(), device=device_facts(trainer), seed=self.seed)
        card["metrics"] = {**card.get("metrics", {}), **final_metrics(trainer)}
        card.update(thresholds_fact(pl_module))
        record["card"] = card
        write_record(self.run_dir, record)


def never_fatal(fn: Callable[..., Any], *args: Any) -> None:
    """A record that cannot be written must not cost the run: one warning line instead."""
    try:
        fn(*args)
    except Exception as err:  # anything: the run matters more than its record
        rank_zero_warn(f"run record not written: {type(err).__name__}: {err}")


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def relative(path: str | Path, folder: Path | None) -> str:
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(folder or "."))
    except ValueError:  # another drive on Windows
        return str(path)


def read_record(run_dir: Path) -> dict[str, Any]:
    """The run's record so far; an unreadable one is moved aside (never deleted) and a new one started."""
    path = run_dir / RECORD
    if not path.is_file():
        return {"commands": []}
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("commands", []), list):
            raise ValueError("not a run record")
    except ValueError as err:
        aside = path.with_name(f"{RECORD}.unreadable-{int(time.time())}")
        path.rename(aside)
        rank_zero_warn(f"{path} was unreadable ({err}): moved to {aside.name}, a new record started")
        return {"commands": []}
    record.setdefault("commands", [])
    return record


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """run.json and model_card.md, each replaced in one rename: a crash never leaves half a file. The evaluation's
    intervals and files, and the diagnose report, are read from the run directory each time: a later command (a
    test, `diagnose`) may have written them."""
    fits = [c.get("wall_s") or 0.0 for c in record["commands"] if c.get("command") == "fit"]
    record["wall_time_s"] = round(sum(fits), 3)
    card = record.get("card")
    if isinstance(card, dict):
        for key in ("intervals", "evaluation", "diagnosis"):
            card.pop(key, None)
        card.update(evaluation_facts(run_dir, card.get("metrics") or {}))
    ordered = {k: record[k] for k in KEY_ORDER if k in record} | record
    replace(run_dir / RECORD, json.dumps(ordered, indent=2, default=str) + "\n")
    path = run_dir / CARD
    previous = path.read_text() if path.is_file() else None
    title = f"{run_dir.resolve().parent.name}/{run_dir.resolve().name}"
    replace(path, render_card(record, title, previous))


def replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def tool_command(run_dir: Path, argv: list[str]) -> Iterator[None]:
    """One of the template's subcommands (export, lr_find, ...) on a run: one entry in its run.json."""
    entry, t0, status = {"command": argv[0], "argv": argv, "started": now()}, time.perf_counter(), "failed"
    try:
        yield
        status = "ok"
    except (KeyboardInterrupt, SIGTERMException):
        status = "interrupted"
        raise
    finally:
        entry.update(wall_s=round(time.perf_counter() - t0, 3), status=status)
        never_fatal(append_command, run_dir, entry)


def append_command(run_dir: Path, entry: dict[str, Any]) -> None:
    record = read_record(run_dir)
    entry["git"] = git_state()
    record["commands"].append(entry)
    write_record(run_dir, record)
