"""What the template costs over plain Lightning and a hand-written PyTorch loop, per optimizer step, on the default
config.

    python benchmarks/overhead.py [--epochs 14] [--repeats 7]

Four ways to run the same training (SmallCNN on the digits split, batch 64, standardised inputs, AdamW with
the same parameter groups, 50 warmup steps then cosine per step, gradient clipping at 1.0, label smoothing,
validation after every epoch), alternated over the repeats in one process:

- hand-written loop: DataLoader(TensorDataset) and a plain for-loop; validation is one accuracy pass;
- the same loop with AdamW's fused kernel (`fused=True`), which the template picks by default: the
  template's ratio to this row is what is left once both use the same kernel;
- plain Lightning: a minimal LightningModule (logging its loss every step, val loss and accuracy) and Lightning's
  Trainer with its defaults (TensorBoard logger, a checkpoint every epoch, the progress bar, the model summary,
  the sanity check): what a user would write instead of the template, the peer it must match;
- plain Lightning, bare Trainer: the same with all of those off, Lightning's own floor;
- template: configs/default.yaml through the real CLI objects (DataModule, Classifier, Trainer with every
  default callback, the TensorBoard logger, checkpoints, the progress bar); `trainer.fit` timed alone;
- template with `device_resident: false`: the same, with training batches from a DataLoader.

Reported: the median time per optimizer step (the epoch's validation and checkpoints included), min / max,
the ratio to the hand-written loop, and training samples / s; then the template / plain Lightning ratio, end to
end and per training step. Then where the time goes, for the loop, plain Lightning and the template: inside the
training steps (forward, backward, optimizer, and every per-step hook), in validation, and the rest (drawing
batches, epoch ends with their checkpoints and logging, the start and end of fit).
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as L
import torch
from common import interleave, ratio, result, table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
LR, WEIGHT_DECAY, WARMUP, BATCH = 3e-3, 0.05, 50, 64  # as in configs/default.yaml


def digits(*splits: str) -> tuple[torch.Tensor, ...]:
    """The template's own split and standardisation, applied once up front as a hand-written loop would:
    x, y of each split named (train and val by default), from one set-up of the data."""
    from proj.data import DigitsDataModule

    dm = DigitsDataModule(batch_size=BATCH)
    dm.setup()
    arrays: tuple[torch.Tensor, ...] = ()
    for split in splits or ("train", "val"):
        x, y = dm.splits[split].tensors
        arrays += (dm.normalize(x * dm.scale), y)
    return arrays


def net_and_optimizer(steps: int, fused: bool | None = None) -> tuple[nn.Module, torch.optim.Optimizer, list]:
    from proj.nets import SmallCNN

    net = SmallCNN((1, 8, 8), 10, widths=(32, 64), dropout=0.2)
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]  # no_decay_1d: biases and BatchNorm weights
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, weight_decay=WEIGHT_DECAY, fused=fused)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-5)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, 0.01, 1.0, total_iters=WARMUP)
    return net, opt, [cosine, warmup]


def hand_written(
    epochs: int, seed: int = 0, after_epoch=None, fused: bool | None = None, phases: dict | None = None
) -> tuple[float, int]:
    """Train; return (seconds, optimizer steps). `after_epoch(net, epoch)`, if given, runs off the clock after
    each epoch and stops training by returning True (time_to_accuracy.py's test-accuracy check). `phases`,
    if given, receives the run's split of time (see `split`)."""
    torch.manual_seed(seed)
    x, y, vx, vy = digits()
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    net, opt, schedulers = net_and_optimizer(epochs * len(loader), fused)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    elapsed, steps, in_steps, in_validation = 0.0, 0, 0.0, 0.0
    for epoch in range(epochs):
        start = time.perf_counter()
        net.train()
        for xb, yb in loader:
            step_start = time.perf_counter()
            loss = loss_fn(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            for scheduler in schedulers:
                scheduler.step()
            steps += 1
            in_steps += time.perf_counter() - step_start
        validation_start = time.perf_counter()
        net.eval()
        with torch.no_grad():
            (net(vx).argmax(1) == vy).float().mean().item()  # what validation does, and a sync
        in_validation += time.perf_counter() - validation_start
        elapsed += time.perf_counter() - start
        if after_epoch is not None and after_epoch(net, epoch):
            break
    if phases is not None:
        split(phases, elapsed, steps, epoch + 1, in_steps, in_validation)
    return elapsed, steps


def split(phases: dict, seconds: float, steps: int, epochs: int, in_steps: float, in_validation: float) -> None:
    """Append one run's split of time to `phases`: per step inside the training steps, per epoch in
    validation and in the rest."""
    for key, value in (
        ("training steps, ms/step", 1000 * in_steps / steps),
        ("validation, ms/epoch", 1000 * in_validation / epochs),
        ("the rest, ms/epoch", 1000 * (seconds - in_steps - in_validation) / epochs),
    ):
        phases.setdefault(key, []).append(value)


class Phases(L.Callback):
    """The template's time inside training steps (batch start to end hooks) and in validation (not the
    sanity check); everything else is the rest."""

    def __init__(self) -> None:
        self.in_steps = self.in_validation = 0.0

    def on_train_batch_start(self, *args) -> None:
        self.step_start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.in_steps += time.perf_counter() - self.step_start

    def on_validation_start(self, *args) -> None:
        self.validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, *args) -> None:
        if not trainer.sanity_checking:
            self.in_validation += time.perf_counter() - self.validation_start


class PlainModule(L.LightningModule):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.net, self.opt, self.schedulers = net_and_optimizer(steps)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_fn(self.net(x), y)
        self.log("train_loss", loss)  # what a user's module logs
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", self.loss_fn(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return [self.opt], [{"scheduler": s, "interval": "step"} for s in self.schedulers]


BARE = dict(
    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    num_sanity_val_steps=0,
)  # fmt: skip


def plain_lightning(
    epochs: int, bare: bool = False, phases: dict | None = None, seed: int = 0, callbacks: tuple = ()
) -> tuple[float, int]:
    """Lightning's Trainer with its defaults (TensorBoard logger, a checkpoint every epoch, the progress bar, the
    model summary, the sanity check), or `bare`: all of those off, Lightning's floor. `callbacks`: more of them
    (time_to_accuracy.py's stop at the target)."""
    torch.manual_seed(seed)
    x, y, vx, vy = digits()
    train = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    val = DataLoader(TensorDataset(vx, vy), batch_size=BATCH)
    model = PlainModule(epochs * len(train))
    clock = Phases()
    trainer = L.Trainer(
        max_epochs=epochs, gradient_clip_val=1.0, callbacks=[clock, *callbacks], **(BARE if bare else {})
    )
    start = time.perf_counter()
    trainer.fit(model, train, val)
    seconds, steps = time.perf_counter() - start, trainer.global_step
    if phases is not None:
        split(phases, seconds, steps, trainer.current_epoch, clock.in_steps, clock.in_validation)
    return seconds, steps


UNMONITORED = "template without HealthMonitor"


def template(
    epochs: int, extra: tuple[str, ...] = (), phases: dict | None = None, without: str | None = None
) -> tuple[float, int]:
    """The default config through the CLI; `without`: a callback class of it left out (to price that callback)."""
    from proj.cli import main

    cli = main(
        ["--config", str(ROOT / "configs" / "default.yaml"), f"--trainer.max_epochs={epochs}", *extra], run=False
    )
    cli.trainer.callbacks[:] = [c for c in cli.trainer.callbacks if type(c).__name__ != without]
    clock = Phases()
    cli.trainer.callbacks.append(clock)  # last: the other callbacks' batch-end hooks count as the step's
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds, steps = time.perf_counter() - start, cli.trainer.global_step
    if phases is not None:
        split(phases, seconds, steps, cli.trainer.current_epoch, clock.in_steps, clock.in_validation)
    return seconds, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="overhead_"))  # the template's logs and checkpoints land there
    ours, loop, plain = "template (default config)", "hand-written loop", "plain Lightning"
    fused, resident, loader = "hand-written loop, fused AdamW", ours, "template, device_resident: false"
    phases = {fused: {}, plain: {}, ours: {}, UNMONITORED: {}}
    runs = {
        "hand-written loop": hand_written,
        "hand-written loop, fused AdamW": lambda e: hand_written(e, fused=True, phases=phases[fused]),
        "plain Lightning": lambda e: plain_lightning(e, phases=phases[plain]),
        "plain Lightning, bare Trainer": lambda e: plain_lightning(e, bare=True),
        "template (default config)": lambda e: template(e, phases=phases[ours]),
        "template, device_resident: false": lambda e: template(e, ("--data.init_args.device_resident=false",)),
        UNMONITORED: lambda e: template(e, phases=phases[UNMONITORED], without="HealthMonitor"),
    }
    for run in runs.values() if args.repeats > 1 else ():  # one repeat: a smoke run, not a measure
        run(1)  # warm-up: imports, first-call costs
    for split_of in phases.values():
        split_of.clear()

    def ms_per_step(run):
        def case() -> float:
            seconds, steps = run(args.epochs)
            return 1000 * seconds / steps

        return case

    samples = interleave({name: ms_per_step(run) for name, run in runs.items()}, args.repeats)
    n_train = len(digits("train")[1])
    print(f"\ndigits, SmallCNN, batch {BATCH}, {args.epochs} epochs x {args.repeats} repeats, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(table(samples, "ms/step", baseline="hand-written loop"))
    steps_per_epoch = -(-n_train // BATCH)
    for name, values in samples.items():
        per_second = n_train / (steps_per_epoch * statistics.median(values) / 1000)
        print(f"{name:<44}{per_second:>20.0f} training samples/s")
    print(f"\nwhere the time goes (median of {args.repeats} runs; the epoch has {steps_per_epoch} steps)")
    print(f"{'':<32}" + "".join(f"{name:>32}" for name in phases))
    for key in phases[ours]:
        row = [statistics.median(split_of[key]) for split_of in phases.values()]
        print(f"{key:<32}" + "".join(f"{v:>32.2f}" for v in row))

    in_steps = {name: phases[name]["training steps, ms/step"] for name in (ours, plain)}
    end_to_end, per_step = both(samples, ours, plain), both(in_steps, ours, plain)
    print(f"\ntemplate / plain Lightning: end to end {end_to_end}, per training step {per_step}")
    result(
        f"end to end {end_to_end} (goal <= 1.00x), per training step {per_step} (goal <= 1.02x)",
        row="Template / plain Lightning with its defaults, the default digits run",
    )
    if phases[UNMONITORED]:  # the diagnose extra's HealthMonitor (deleted with the extra: then nothing to price)
        monitored = {name: phases[name]["training steps, ms/step"] for name in (ours, UNMONITORED)}
        result(
            f"end to end {both(samples, ours, UNMONITORED)}, per training step {both(monitored, ours, UNMONITORED)}"
            " (goal <= 1.03x)",
            row="HealthMonitor's cost: the default run with it / without it",
        )
    result(
        f"template / hand-written loop {both(samples, ours, loop)}, template / fused loop "
        f"{both(samples, ours, fused)}, plain Lightning / loop {both(samples, plain, loop)}; device-resident path at "
        f"{ratio(samples, loader, resident):.3f}x the speed of the DataLoader path"
    )


def both(samples: dict[str, list[float]], a: str, b: str) -> str:
    """Case a over case b: the ratio of the medians, and of the minima."""
    return f"{ratio(samples, a, b):.3f}x (minima {ratio(samples, a, b, min):.3f}x)"


if __name__ == "__main__":
    main()
