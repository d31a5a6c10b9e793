"""What the template costs over a hand-written loop on variable-length sequences: the same padded batches, the
same net and optimisation, per training epoch.

    python benchmarks/sequence_epoch.py [--copies 20] [--epochs 3] [--repeats 5]

The data is JapaneseVowels' training split repeated `--copies` times (270 utterances are 8 batches: a per-epoch
cost would swamp the steps). Both runs draw batches from the same DataLoader over the same Sequences with the
template's padding collate (values, lengths, mask), standardise each batch per feature on the real steps, apply
the experiment's augmentations (jitter and scaling), and train its proj.nets.SequenceTransformer
with AdamW, warmup and cosine per step, clipping at 1.0 and label smoothing 0.05, validating after every epoch:

- hand-written loop: a plain for-loop over those batches;
- template: configs/default.yaml + configs/experiment/japanese_vowels.yaml through the real CLI objects (every
  default callback, the TensorBoard logger, checkpoints); its epochs timed from their start to their end (the
  epoch's validation, checkpoints and logs inside; fit's start and end, once per run, outside).

- plain Lightning, bare Trainer: a minimal LightningModule over the same batches, net and optimizer, with no
  logger, checkpoints, progress bar or summary: Lightning's own cost per step, which the template cannot go below.

Reported: the median seconds per epoch over interleaved repeats, min / max, and the ratios to the loop, at the
experiment's batch of 32 and at 128 (fewer, heavier steps: a fixed cost per step weighs less).
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from common import interleave, ratio, result, table
from torch import nn
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["--config", str(ROOT / "configs" / "default.yaml")]
CONFIGS += ["--config", str(ROOT / "configs" / "experiment" / "japanese_vowels.yaml")]
LR, WEIGHT_DECAY, WARMUP, BATCH = 3e-3, 0.05, 50, 32  # as the experiment runs them (default.yaml's optim)


def repeated(dm, copies: int):
    """The data module reading its training utterances `copies` times (the test set as it is)."""
    read = dm.load_arrays

    def load_arrays():
        x, y = read()
        for _ in range(copies - 1):
            x = x.concat(read()[0])
        return x, torch.as_tensor(y).repeat(copies).numpy()

    dm.load_arrays, dm.splits = load_arrays, {}
    return dm


def template(epochs: int, copies: int, batch: int) -> float:
    from proj.cli import main

    args = [
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
        f"--data.init_args.batch_size={batch}",
    ]
    cli = main([*CONFIGS, *args], run=False)
    dm = repeated(cli.datamodule, copies)
    clock = epoch_clock()
    cli.trainer.callbacks.append(clock)  # last: the other callbacks' epoch-end work (checkpoints) is inside
    cli.trainer.fit(cli.model, datamodule=dm)
    return clock.seconds / epochs


def epoch_clock():
    import lightning.pytorch as L

    class Clock(L.Callback):
        """The time inside epochs (training, validation, the epoch's checkpoints and logs), not the start and end
        of fit (the sanity check, summaries, the run record): what the loop's epochs hold too."""

        seconds = 0.0

        def on_train_epoch_start(self, *args) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, *args) -> None:
            self.seconds += time.perf_counter() - self.start

    return Clock()


class Setup:
    """What the loop and plain Lightning share: the template's splits, padded loaders, net, optimizer and
    schedules as configs/experiment/japanese_vowels.yaml sets them."""

    def __init__(self, epochs: int, copies: int, batch: int) -> None:
        from proj.data import JapaneseVowelsDataModule
        from proj.data.sequence_augment import SequenceAugment
        from proj.data.sequences import pad_collate
        from proj.nets import SequenceTransformer

        torch.manual_seed(0)
        dm = repeated(JapaneseVowelsDataModule(batch_size=batch, val_fraction=0.15), copies)
        dm.setup()
        self.mean, self.std = torch.tensor(dm.stats["mean"]), torch.tensor(dm.stats["std"])
        self.train = DataLoader(dm.splits["train"], batch_size=batch, shuffle=True, collate_fn=pad_collate)
        self.val = DataLoader(dm.splits["val"], batch_size=batch, collate_fn=pad_collate)
        self.net = SequenceTransformer((12,), 9, d_model=64, nhead=4, layers=2, dim_feedforward=128, dropout=0.1)
        self.augment = SequenceAugment(jitter=0.05, scaling=0.1)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
        decay = [p for p in self.net.parameters() if p.ndim > 1]
        no_decay = [p for p in self.net.parameters() if p.ndim <= 1]
        self.opt = torch.optim.AdamW(
            [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=LR, weight_decay=WEIGHT_DECAY
        )
        steps = epochs * len(self.train)
        self.schedulers = [
            torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=steps, eta_min=1e-5),
            torch.optim.lr_scheduler.LinearLR(self.opt, 0.01, 1.0, total_iters=WARMUP),
        ]

    def standardised(self, x):
        from proj.data.sequences import Padded

        return Padded((x.values - self.mean) / self.std * x.mask[..., None], x.lengths, x.mask)

    def loss(self, batch) -> torch.Tensor:
        return self.loss_fn(self.net(*self.augment(self.standardised(batch["input"]))), batch["target"])

    def correct(self, batch) -> torch.Tensor:
        return (self.net(*self.standardised(batch["input"])).argmax(1) == batch["target"]).float()


def hand_written(epochs: int, copies: int, batch: int) -> float:
    run = Setup(epochs, copies, batch)
    start = time.perf_counter()
    for _ in range(epochs):
        run.net.train()
        for b in run.train:
            loss = run.loss(b)
            run.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(run.net.parameters(), 1.0)
            run.opt.step()
            for scheduler in run.schedulers:
                scheduler.step()
        run.net.eval()
        with torch.no_grad():
            torch.cat([run.correct(b) for b in run.val]).mean().item()  # what validation does, and a sync
    return (time.perf_counter() - start) / epochs


def plain_lightning(epochs: int, copies: int, batch: int) -> float:
    """A minimal LightningModule over the same Setup, with Lightning's bare Trainer: Lightning's own floor."""
    import lightning.pytorch as L

    run = Setup(epochs, copies, batch)

    class Plain(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = run.net

        def training_step(self, b, i):
            return run.loss(b)

        def validation_step(self, b, i):
            self.log("val_acc", run.correct(b).mean())

        def configure_optimizers(self):
            return [run.opt], [{"scheduler": s, "interval": "step"} for s in run.schedulers]

    trainer = L.Trainer(
        max_epochs=epochs, gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    clock = epoch_clock()
    trainer.callbacks.append(clock)
    trainer.fit(Plain(), run.train, run.val)
    return clock.seconds / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[BATCH, 128], help="the experiment's, and larger")
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="sequence_epoch_"))  # the template's logs and checkpoints land there
    ours, loop, plain = "template (japanese_vowels experiment)", "hand-written loop", "plain Lightning, bare Trainer"
    found = []
    for batch in args.batches:
        runs = {
            loop: lambda b=batch: hand_written(args.epochs, args.copies, b),
            plain: lambda b=batch: plain_lightning(args.epochs, args.copies, b),
            ours: lambda b=batch: template(args.epochs, args.copies, b),
        }
        for run in runs.values():
            run()  # warm-up: imports, first-call costs
        samples = interleave(runs, args.repeats)
        print(f"\nJapaneseVowels x{args.copies}, Transformer, batch {batch}, {args.epochs} epochs, {args.repeats} runs")
        print(table(samples, "s/epoch", baseline=loop))
        minima = ratio(samples, ours, loop, min)
        found.append(
            f"batch {batch}: template / loop {ratio(samples, ours, loop):.3f}x (minima {minima:.3f}x), "
            f"Lightning's bare Trainer / loop {ratio(samples, plain, loop):.3f}x"
        )
    result("; ".join(found) + " (goal <= 1.05x)")


if __name__ == "__main__":
    main()
