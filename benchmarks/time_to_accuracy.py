"""Time to accuracy: epochs and wall time until the test accuracy first reaches 99% on digits, for the
default config (through the real CLI objects), for the hand-written loop of benchmarks/overhead.py and for its
plain Lightning module with Lightning's default Trainer (the floor of any Lightning code: its per-epoch cost).

    python benchmarks/time_to_accuracy.py [--target 0.99] [--seeds 3]

Both train the default schedule (30 epochs of warmup + cosine); after every epoch the test split is scored
off the clock, and training stops at the first epoch that reaches the target. One run per seed for each,
alternated. Reported: epochs and seconds to the target (median, min, max), the ratio of the medians, and
seconds per epoch (the epochs needed vary with the seed and dominate the time).
Goal: the template within 1.1x of the loop's time.
"""

import argparse
import os
import statistics
import tempfile
import time

import lightning.pytorch as L
import torch
from common import ratio, result, table
from overhead import ROOT, digits, hand_written, plain_lightning

EPOCHS = 30  # configs/default.yaml's max_epochs: the schedule's horizon for all three


class Target:
    """The test split's accuracy after each epoch, and the first epoch and time that reach `target`."""

    def __init__(self, target: float) -> None:
        self.x, self.y = digits("test")
        self.target = target
        self.epoch: int | None = None
        self.best = 0.0

    @torch.no_grad()
    def reached(self, net: torch.nn.Module, epoch: int) -> bool:
        training = net.training
        net.eval()
        accuracy = (net(self.x).argmax(1) == self.y).float().mean().item()
        net.train(training)
        self.best = max(self.best, accuracy)
        if accuracy >= self.target and self.epoch is None:
            self.epoch = epoch + 1
        return self.epoch is not None


class StopAtTarget(L.Callback):
    """The same check inside the template's Trainer, after each validation, its own time taken off the clock."""

    def __init__(self, target: Target) -> None:
        self.target, self.off_clock, self.seconds = target, 0.0, None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        now = time.perf_counter()
        if self.target.reached(pl_module, trainer.current_epoch):
            self.seconds = now - self.start - self.off_clock
            trainer.should_stop = True
        self.off_clock += time.perf_counter() - now


def template(seed: int, target: Target) -> float | None:
    from proj.cli import main

    config = str(ROOT / "configs" / "default.yaml")
    cli = main(["--config", config, f"--seed_everything={seed}", f"--trainer.max_epochs={EPOCHS}"], run=False)
    stop = StopAtTarget(target)
    cli.trainer.callbacks.append(stop)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return stop.seconds


def loop(seed: int, target: Target) -> float | None:
    seconds, _ = hand_written(EPOCHS, seed, after_epoch=target.reached)
    return seconds if target.epoch is not None else None


def plain(seed: int, target: Target) -> float | None:
    stop = StopAtTarget(target)
    plain_lightning(EPOCHS, seed=seed, callbacks=(stop,))
    return stop.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="time_to_accuracy_"))
    runs = {"hand-written loop": loop, "plain Lightning": plain, "template (default config)": template}
    seconds = {name: [] for name in runs}
    epochs = {name: [] for name in runs}
    for seed in range(args.seeds):
        for name, run in runs.items():
            target = Target(args.target)
            took = run(seed, target)
            if took is None:
                print(f"{name}, seed {seed}: no {args.target:.1%} in {EPOCHS} epochs (best {target.best:.2%})")
                continue
            seconds[name].append(took)
            epochs[name].append(target.epoch)
    print(f"\ndigits, first epoch with test accuracy >= {args.target:.1%}, seeds 0..{args.seeds - 1}")
    if not all(seconds.values()):
        result(f"the target {args.target:.1%} was not reached by every run: see the lines above")
        return
    print(table(seconds, "s", baseline="hand-written loop"))
    print(table({name: [float(e) for e in v] for name, v in epochs.items()}, "epochs"))
    # The epochs a seed needs (3 to 8) dominate the time; seconds per epoch is the cost of each side alone.
    per_epoch = {name: [s / e for s, e in zip(seconds[name], epochs[name], strict=True)] for name in runs}
    print(table(per_epoch, "s/epoch", baseline="hand-written loop"))
    ours, theirs, peer = "template (default config)", "hand-written loop", "plain Lightning"
    result(
        f"{args.target:.0%} test accuracy: template {statistics.median(seconds[ours]):.2f} s in "
        f"{statistics.median(epochs[ours]):g} epochs, loop {statistics.median(seconds[theirs]):.2f} s in "
        f"{statistics.median(epochs[theirs]):g} epochs: {ratio(seconds, ours, theirs):.3f}x (goal <= 1.1x; plain "
        f"Lightning {ratio(seconds, peer, theirs):.3f}x); per epoch {ratio(per_epoch, ours, theirs):.3f}x (plain "
        f"Lightning {ratio(per_epoch, peer, theirs):.3f}x)"
    )


if __name__ == "__main__":
    main()
