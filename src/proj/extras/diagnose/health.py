"""HealthMonitor: what a training run's gradients, updates and activations did, written where diagnose reads it.

Every `every_n_steps` optimizer steps (the trainer's log_every_n_steps by default) it records, per block of the
net (`stem`, each part of `body`, `head`: the names every template net uses; a net of your own: its children):
- the gradient norm, before clipping;
- the update-to-weight ratio ||w_after - w_before|| / ||w_before|| of that optimizer step (about 1e-3 is healthy);
- the block output's mean, std, fraction of zeros, and fraction of dead units (a unit, or channel, whose output is
  the same for every sample of the batch: a ReLU that never fires, a saturated sigmoid);
and, over every step since the last record, the mean and largest training loss, the loss spikes (a loss far above
the median of the last `spike_window` losses) and the fraction of optimizer steps that clipping changed.

Rows go to `<run>/health/steps.csv`, each epoch's logged metrics and learning rate to `<run>/health/epochs.csv`,
and how the run ended (epochs, early stopping) to `<run>/health/summary.json`: files of the run directory, so
`python -m proj diagnose RUN` reads them whatever logger the run used. The per-block norms and ratios also go to
every logger as `health/...` scalars. Per step it only keeps two numbers on the device (no host-device wait); the
rest is paid on recorded steps (benchmarks/overhead.py measures it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import Tensor, nn

from proj.compat import logs_this_step
from proj.extras.diagnose.health_files import HEALTH, append_rows, epoch_row, truncate_after

PASSIVE = (nn.Identity, nn.Dropout, nn.Flatten)  # their output says nothing new about the block before


class HealthMonitor(Callback):
    def __init__(self, every_n_steps: int | None = None, spike_window: int = 50, spike_factor: float = 2.0) -> None:
        """every_n_steps: optimizer steps between records (default: trainer.log_every_n_steps). A loss is a spike
        when it is above `spike_factor` x the median of the previous `spike_window` losses and far outside their
        spread (6 median absolute deviations)."""
        self.every_n_steps = every_n_steps
        self.spike_window, self.spike_factor = spike_window, spike_factor
        self.rows: list[dict[str, float]] = []
        self.losses: list[Tensor] = []  # every step's loss since the last record, on the device
        self.recent: list[float] = []  # the last spike_window losses, for the running median
        self.clipped: Tensor | None = None  # how many optimizer steps clipping changed since the last record
        self.stepped = 0
        self.before: dict[str, list[Tensor]] | None = None  # weights before a recorded optimizer step
        self.pending: dict[str, float] | None = None
        self.hooks: list[Any] = []
        self.activations: dict[str, list[float]] = {}
        self.run_dir: Path | None = None
        self.epoch_done: int | None = None
        self.last_epoch = -1

    # --- set-up -----------------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.every = self.every_n_steps or max(1, trainer.log_every_n_steps)
        net = getattr(pl_module, "net", pl_module)
        self.blocks = blocks(net)
        self.params = {name: [p for p in block.parameters() if p.requires_grad] for name, block in self.blocks.items()}
        self.params = {name: ps for name, ps in self.params.items() if ps}
        log_dir = trainer.log_dir
        self.run_dir = Path(log_dir) / HEALTH if log_dir and trainer.is_global_zero else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.run_dir is not None:  # a resumed run: what it recorded after its checkpoint is recorded again
            truncate_after(self.run_dir, trainer.global_step, trainer.current_epoch)

    # --- every step: the loss and whether clipping changed the gradients, kept on the device --------------

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        grads = [p.grad for ps in self.params.values() for p in ps if p.grad is not None]
        if not grads:
            return
        clip = trainer.gradient_clip_val
        if clip:
            by_value = trainer.gradient_clip_algorithm == "value"
            size = (
                torch.stack([g.abs().max() for g in grads]).max() if by_value else torch.nn.utils.get_total_norm(grads)
            )
            changed = (size > clip).float()
            self.clipped = changed if self.clipped is None else self.clipped + changed
        self.stepped += 1
        if self.records_now(trainer):
            self.pending = {"step": trainer.global_step, **self.gradient_norms()}
            self.before = {name: [p.detach().clone() for p in ps] for name, ps in self.params.items()}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int) -> None:
        if self.records_now(trainer) and not self.hooks:  # this batch's forward is a recorded one
            self.activations = {}
            for name, block in self.blocks.items():
                if not isinstance(block, PASSIVE):
                    self.hooks.append(block.register_forward_hook(self.activation_hook(name)))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.losses.append(loss.detach().float())
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        if self.before is not None:  # the optimizer has stepped: the update of the recorded step
            self.record(trainer, self.update_ratios())
            self.before = None

    def records_now(self, trainer: L.Trainer) -> bool:
        """Every `every_n_steps` optimizer steps, else on the steps whose values reach the loggers (those of
        train/grad_norm and train/loss_step too)."""
        return trainer.global_step % self.every_n_steps == 0 if self.every_n_steps else logs_this_step(trainer)

    # --- recorded steps --------------------------------------------------------------------------------

    def gradient_norms(self) -> dict[str, float]:
        norms = {}
        for name, ps in self.params.items():
            grads = [p.grad for p in ps if p.grad is not None]
            norms[f"grad/{name}"] = float(torch.nn.utils.get_total_norm(grads)) if grads else math.nan
        return norms

    def update_ratios(self) -> dict[str, float]:
        ratios = {}
        for name, ps in self.params.items():
            before = self.before[name]
            change = torch.nn.utils.get_total_norm([p.detach() - b for p, b in zip(ps, before, strict=True)])
            size = torch.nn.utils.get_total_norm(before)
            ratios[f"update/{name}"] = float(change / size) if size > 0 else math.nan
        return ratios

    def activation_hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            if isinstance(out, Tensor) and out.is_floating_point() and out.numel() and out.ndim >= 2:
                self.activations[name] = activation_stats(out.detach())

        return hook

    def record(self, trainer: L.Trainer, updates: dict[str, float]) -> None:
        losses = torch.stack(self.losses).cpu().tolist() if self.losses else []
        grads = dict(self.pending or {})
        step = grads.pop("step", trainer.global_step - 1)
        row: dict[str, float] = {"step": step, "epoch": trainer.current_epoch, "lr": current_lr(trainer)}
        row.update(self.loss_summary(losses))
        clipped = float(self.clipped) if self.clipped is not None else 0.0
        row["clipped"] = clipped / self.stepped if self.stepped else math.nan
        row["grad_norm"] = math.sqrt(sum(v * v for v in grads.values() if not math.isnan(v)))
        row.update(grads)
        row.update(updates)
        for name, (mean, std, zeros, dead) in self.activations.items():
            row.update({f"act_mean/{name}": mean, f"act_std/{name}": std, f"zeros/{name}": zeros, f"dead/{name}": dead})
        self.rows.append(row)
        self.losses, self.clipped, self.stepped, self.pending = [], None, 0, None
        shown = {f"health/{k}": v for k, v in row.items() if k.startswith(("grad/", "update/", "dead/"))}
        for logger in trainer.loggers if trainer.is_global_zero else []:
            logger.log_metrics({**shown, "health/clipped": row["clipped"]}, step=step)

    def loss_summary(self, losses: list[float]) -> dict[str, float]:
        spikes = 0
        for loss in losses:
            if len(self.recent) >= 5 and is_spike(loss, self.recent, self.spike_factor):
                spikes += 1
            self.recent = [*self.recent[-(self.spike_window - 1) :], loss]
        finite = [v for v in losses if math.isfinite(v)]
        return {
            "loss": sum(finite) / len(finite) if finite else math.nan,
            "loss_max": max(losses) if losses else math.nan,
            "spikes": spikes,
            "nonfinite": len(losses) - len(finite),
        }

    # --- per epoch and at the end: written to the run directory ----------------------------------------

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write_epoch(trainer, trainer.current_epoch - 1)  # the last epoch's metrics, validation's included

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.last_epoch = trainer.current_epoch  # (the counter has moved on by on_train_end)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write_epoch(trainer, self.last_epoch)
        self.write_summary(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.global_step == 0:  # refused before training (a bad option): no run directory is left behind
            return
        self.write_epoch(trainer, trainer.current_epoch)  # what the run did before it failed, for diagnose to read
        self.write_summary(trainer, failed=f"{type(exception).__name__}: {exception}")

    def write_epoch(self, trainer: L.Trainer, epoch: int) -> None:
        if self.run_dir is None or epoch < 0 or trainer.sanity_checking:
            return
        append_rows(self.run_dir / "steps.csv", self.rows)
        self.rows = []
        if self.epoch_done != epoch:
            append_rows(self.run_dir / "epochs.csv", [epoch_row(trainer.callback_metrics, epoch, current_lr(trainer))])
            self.epoch_done = epoch

    def write_summary(self, trainer: L.Trainer, failed: str | None = None) -> None:
        if self.run_dir is None:
            return
        stopping = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
        summary = {
            "epochs": trainer.current_epoch,
            "optimizer_steps": trainer.global_step,
            "max_epochs": trainer.max_epochs,
            "gradient_clip_val": trainer.gradient_clip_val,
            "gradient_clip_algorithm": trainer.gradient_clip_algorithm,
            "every_n_steps": self.every,
            "blocks": list(self.params),
            "early_stopping": early_stopping_facts(stopping),
            "failed": failed,
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def blocks(net: nn.Module) -> dict[str, nn.Module]:
    """The net's blocks in order: `stem`, each part of `body` (a sequence of them), `head`; else its children."""
    found: dict[str, nn.Module] = {}
    for name, child in net.named_children():
        if isinstance(child, nn.Sequential | nn.ModuleList) and name == "body":
            found.update({f"body.{i}": part for i, part in enumerate(child)})
        else:
            found[name] = child
    return found or {"net": net}


def activation_stats(out: Tensor) -> tuple[float, float, float, float]:
    """Mean, std, fraction of exact zeros, and fraction of dead units: channels (dim 1) whose value does not
    change across the samples of the batch (nor their positions)."""
    units = out.transpose(0, 1).reshape(out.shape[1], -1).float()
    spread = units.amax(1) - units.amin(1)
    stats = torch.stack([units.mean(), units.std(), (units == 0).float().mean(), (spread <= 1e-6).float().mean()])
    return tuple(stats.tolist())


def is_spike(loss: float, recent: list[float], factor: float) -> bool:
    ordered = sorted(v for v in recent if math.isfinite(v))
    if not ordered:
        return False
    median = ordered[len(ordered) // 2]
    spread = sorted(abs(v - median) for v in ordered)[len(ordered) // 2]
    return not math.isfinite(loss) or (loss > factor * median and loss > median + 6 * spread)


def current_lr(trainer: L.Trainer) -> float:
    optimizers = trainer.optimizers
    return float(optimizers[0].param_groups[0]["lr"]) if optimizers else math.nan


def early_stopping_facts(stopping: EarlyStopping | None) -> dict[str, Any] | None:
    if stopping is None:
        return None
    return {
        "monitor": stopping.monitor,
        "mode": stopping.mode,
        "patience": stopping.patience,
        "min_delta": abs(float(stopping.min_delta)),
        "stopped": stopping.stopped_epoch > 0,
        "stopped_epoch": stopping.stopped_epoch,
        "best": float(stopping.best_score),
    }
