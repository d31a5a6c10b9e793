"""`python -m proj schedule --config ...`: the learning rate of the whole run, drawn before training.

    python -m proj schedule --config configs/default.yaml --config configs/optim/adam_then_sgd.yaml [--out lr.png]

It runs the real Trainer loop with the real configure_optimizers (stages, warmup, chains, horizons filled
from the trainer, gradient accumulation), but with the optimizer step replaced by a no-op and without
validation, augmentation or logging: the schedulers step exactly as in training while nothing is computed.
ReduceLROnPlateau depends on validation results that do not exist yet: it is drawn flat.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from proj.cli.config_commands import ConfigCommandCLI, run_config_command
from proj.cli.parser import UsageError

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


class NoTraining(Callback):
    """Keep the schedule, skip the work: no optimizer step, no augmentation, plateau schedulers lenient."""

    def __init__(self) -> None:
        self.lrs: list[dict[str, float]] = []
        self.epochs: list[int] = []

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        def record_only(epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
            if optimizer_closure is not None:
                optimizer_closure()  # Lightning insists; the training step below returns None: no work
            groups = optimizer.param_groups
            self.lrs.append({g.get("name", f"group{i}"): g["lr"] for i, g in enumerate(groups)})
            self.epochs.append(epoch)

        pl_module.optimizer_step = record_only
        pl_module.training_step = lambda batch, batch_idx: None
        dm = trainer.datamodule
        if dm is not None:
            dm.on_after_batch_transfer = lambda batch, dataloader_idx: batch

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.lenient(trainer)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.lenient(trainer)  # a stage switch brings new scheduler configs

    @staticmethod
    def lenient(trainer: Any) -> None:
        for config in trainer.lr_scheduler_configs:
            config.strict = False  # a plateau scheduler finds no val metric here: skip it, do not fail


# Keep the schedule, drop everything that computes or writes: no validation, logger, callbacks or checkpoints.
PREVIEW = [
    "--trainer.limit_val_batches=0",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.logger=false",
    "--trainer.callbacks=[]",
    "--trainer.enable_checkpointing=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--test_after_fit=false",
]


def simulate(cli: ConfigCommandCLI) -> NoTraining:
    recorder = NoTraining()
    cli.trainer.callbacks.append(recorder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(ReduceLROnPlateau|lr_scheduler.step|optimizer.step).*")
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return recorder


def plot(recorder: NoTraining, path: Path, title: str) -> Path:
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend (a notebook's) alone

    figure = Figure(figsize=(8, 3.5))
    ax = figure.subplots()
    names = list(dict.fromkeys(k for lrs in recorder.lrs for k in lrs))
    for name in names:
        ax.plot([lrs.get(name, float("nan")) for lrs in recorder.lrs], label=name, linewidth=1.2)
    switches = [i for i in range(1, len(recorder.epochs)) if recorder.epochs[i] != recorder.epochs[i - 1]]
    for i in switches:
        ax.axvline(i, color="grey", linewidth=0.3)
    ax.set(xlabel="optimizer step (grey: epoch boundaries)", ylabel="learning rate", title=title)
    if len(names) > 1:
        ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def preview(cli: ConfigCommandCLI, out: Path = Path("lr_schedule.png")) -> dict[str, Any]:
    """Draw the learning rate at every optimizer step of the run, before training: the real configure_optimizers
    and Trainer loop with the optimizer step replaced by a no-op. It writes nothing but the figure.

    Args:
        out: where to write the figure (png, pdf or svg).
    """
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise UsageError(f"--out={out}: the figure is written as png, pdf or svg; give a file name ending in one")
    recorder = simulate(cli)
    configs = [Path(str(p)).stem for p in cli.config.get("config") or []]
    plot(recorder, out, "lr schedule: " + " + ".join(configs))
    first = [next(iter(lrs.values())) for lrs in recorder.lrs]
    print(f"{len(first)} optimizer steps, lr from {first[0]:.3g} (peak {max(first):.3g}) to {first[-1]:.3g}: {out}")
    return {"lrs": first, "plot": out, "epochs": recorder.epochs}


def command(name: str, args: list[str]) -> dict[str, Any]:
    return run_config_command(name, preview, [*args, *PREVIEW])
