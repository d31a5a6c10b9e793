"""HealthMonitor: what a training run's gradients, updates and activations did, written where diagnose reads it.

Every `every_n_steps` optimizer steps (the trainer's log_every_n_steps by default) it records, per block of the
net (`stem`, each part of `body`, `head`: the names every template net uses; a net of your own: its children):
- the gradient norm, before clipping;
- the update-to-weight ratio ||w_after - w_before|| / ||w_before|| of that optimizer step (about 1e-3 is healthy);
- the block output's mean, std, fraction of zeros, and fraction of dead units (a unit, or channel, whose output is
  the same for every sample of the batch: a ReLU that never fires, a saturated sigmoid);
whether gradient clipping changed that step's gradients; and, over every step since the last record, the mean and
largest training loss and the loss spikes (a loss far above the median of the last `spike_window` losses).

Rows go to `<run>/health/steps.csv`, each epoch's logged metrics and learning rate to `<run>/health/epochs.csv`,
and how the run ended (epochs, early stopping) to `<run>/health/summary.json`: files of the run directory, so
`python -m proj diagnose RUN` reads them whatever logger the run used. The per-block norms and ratios also go to
every logger as `health/...` scalars, once an epoch (the epoch's medians). Per step it only keeps the loss, on the
device (no host-device wait); the rest is paid on recorded steps, with one wait for the device each
(benchmarks/overhead.py measures the cost).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import Tensor, nn

from proj.compat import logs_this_step
from proj.extras.diagnose.health_files import HEALTH, append_rows, epoch_row, truncate_after
from proj.nets.blocks import blocks

PASSIVE = (nn.Identity, nn.Dropout, nn.Flatten)  # their output says nothing new about the block before


class HealthMonitor(Callback):
    def __init__(
        self,
        every_n_steps: int | None = None,
        activations_every: int = 5,
        spike_window: int = 50,
        spike_factor: float = 2.0,
    ) -> None:
        """every_n_steps: optimizer steps between records (default: the steps whose values reach the loggers, every
        trainer.log_every_n_steps). activations_every: activation statistics on every n-th record only (hooks on
        every block cost a forward pass more than the rest of a record). A loss is a spike when it is above
        `spike_factor` x the median of the previous `spike_window` losses and far outside their spread (6 median
        absolute deviations)."""
        self.every_n_steps, self.activations_every = every_n_steps, activations_every
        self.records = 0
        self.spike_window, self.spike_factor = spike_window, spike_factor
        self.rows: list[dict[str, float]] = []
        self.losses: list[Tensor] = []  # every step's loss since the last record, on the device
        self.recent: list[float] = []  # the last spike_window losses, for the running median
        self.before: list[Tensor] | None = None  # weights before a recorded optimizer step
        self.pending: dict[str, Any] | None = None  # the recorded step's gradient norms, on the device
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
        # every parameter in one list, with the index of its block: one pass of norms serves every block
        self.flat = [p for ps in self.params.values() for p in ps]
        index = [i for i, ps in enumerate(self.params.values()) for _ in ps]
        self.index = torch.tensor(index, device=pl_module.device)
        log_dir = trainer.log_dir
        self.run_dir = Path(log_dir) / HEALTH if log_dir and trainer.is_global_zero else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.run_dir is not None:  # a resumed run: what it recorded after its checkpoint is recorded again
            truncate_after(self.run_dir, trainer.global_step, trainer.current_epoch)

    # --- the optimizer step of a recorded batch: gradients before clipping, weights before the update -------

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if not self.records_now(trainer):
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.flat]
        norms = block_norms(grads, self.index, len(self.params))
        self.pending = {"step": trainer.global_step, "grads": norms, "clipped": clipping_changed(trainer, grads, norms)}
        self.before = [p.detach().clone() for p in self.flat]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int) -> None:
        watch = self.records % max(1, self.activations_every) == 0
        if watch and self.records_now(trainer) and not self.hooks:  # this batch's forward is a recorded one
            self.activations = {}
            for name, block in self.blocks.items():
                if not isinstance(block, PASSIVE):
                    self.hooks.append(block.register_forward_hook(self.activation_hook(name)))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.losses.append(loss.detach().float())  # on the device: read at the next record, not now
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        if self.before is not None:  # the optimizer has stepped: the update of the recorded step
            self.record(trainer)
            self.before = None

    def records_now(self, trainer: L.Trainer) -> bool:
        """Every `every_n_steps` optimizer steps, else on the steps whose values reach the loggers (those of
        train/grad_norm and train/loss_step too)."""
        return trainer.global_step % self.every_n_steps == 0 if self.every_n_steps else logs_this_step(trainer)

    # --- recorded steps --------------------------------------------------------------------------------

    def update_ratios(self) -> Tensor:
        """||w_after - w_before|| / ||w_before|| of each block, for the step just taken."""
        change = block_norms(
            [p.detach() - b for p, b in zip(self.flat, self.before, strict=True)], self.index, len(self.params)
        )
        return change / block_norms(self.before, self.index, len(self.params))

    def activation_hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            if isinstance(out, Tensor) and out.is_floating_point() and out.numel() and out.ndim >= 2:
                self.activations[name] = activation_stats(out.detach())

        return hook

    def record(self, trainer: L.Trainer) -> None:
        pending = self.pending or {}
        measured = torch.cat([pending["grads"], self.update_ratios(), pending["clipped"].reshape(1)])
        values = measured.cpu().tolist()  # one wait for the device per record
        n = len(self.params)
        grads, updates, clipped = values[:n], values[n : 2 * n], values[-1]
        losses = torch.stack(self.losses).cpu().tolist() if self.losses else []
        step = pending.get("step", trainer.global_step - 1)
        row: dict[str, float] = {"step": step, "epoch": trainer.current_epoch, "lr": current_lr(trainer)}
        row.update(self.loss_summary(losses))
        row["clipped"] = clipped
        row["grad_norm"] = math.sqrt(sum(v * v for v in grads))
        row.update({f"grad/{name}": v for name, v in zip(self.params, grads, strict=True)})
        row.update({f"update/{name}": v for name, v in zip(self.params, updates, strict=True)})
        for name, (mean, std, zeros, dead) in self.activations.items():
            row.update({f"act_mean/{name}": mean, f"act_std/{name}": std, f"zeros/{name}": zeros, f"dead/{name}": dead})
        self.rows.append(row)
        self.losses, self.pending, self.activations = [], None, {}
        self.records += 1

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
        log_epoch(trainer, self.rows)
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


def log_epoch(trainer: L.Trainer, rows: list[dict[str, float]]) -> None:
    """Each logger gets the epoch's median of every block's gradient norm and update ratio, and the share of its
    recorded steps that clipping changed, as `health/...` at the epoch's last recorded step: a logger call per
    scalar costs about 0.1 ms, too much for every record (steps.csv has them all)."""
    if not rows:
        return
    names = [k for k in rows[0] if k.startswith(("grad/", "update/", "clipped"))]
    shown = {f"health/{k}": statistics.median(r[k] for r in rows if k in r) for k in names}
    for logger in trainer.loggers:
        logger.log_metrics(shown, step=int(rows[-1]["step"]))


def block_norms(tensors: list[Tensor], index: Tensor, blocks: int) -> Tensor:
    """The L2 norm of each block's tensors together: per-tensor norms, their squares summed by block."""
    squares = torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]) ** 2
    return torch.zeros(blocks, device=squares.device).index_add_(0, index.to(squares.device), squares).sqrt()


def clipping_changed(trainer: L.Trainer, grads: list[Tensor], norms: Tensor) -> Tensor:
    """1 if the trainer's gradient clipping changes this step's gradients, else 0 (a tensor: no device wait)."""
    clip = trainer.gradient_clip_val
    if not clip:
        return torch.zeros((), device=norms.device)
    if trainer.gradient_clip_algorithm == "value":
        return (torch.stack([g.abs().max() for g in grads]).max() > clip).float().to(norms.device)
    return (norms.square().sum().sqrt() > clip).float()


def activation_stats(out: Tensor) -> tuple[float, float, float, float]:
    """Mean, std, fraction of exact zeros, and fraction of dead units: channels (dim 1) whose value does not
    change across the samples of the batch (nor their positions)."""
    out = out.float()
    others = [d for d in range(out.ndim) if d != 1]
    spread = out.amax(others) - out.amin(others)
    zeros = 1 - torch.count_nonzero(out) / out.numel()
    stats = torch.stack([out.mean(), out.std(), zeros, (spread <= 1e-6).float().mean()])
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
