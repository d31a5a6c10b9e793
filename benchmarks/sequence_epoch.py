"""What the template costs over a hand-written loop on variable-length sequences and texts: the same padded
batches, the same net and optimisation, per training epoch.

    python benchmarks/sequence_epoch.py [--data vowels] [--copies 20] [--epochs 3] [--repeats 5]
    python benchmarks/sequence_epoch.py --data docstrings --copies 1        # texts: token ids, TextEmbeddingBag
    python benchmarks/sequence_epoch.py --data docstrings_transformer --copies 1

vowels: JapaneseVowels' training split repeated `--copies` times (270 utterances are 8 batches: a per-epoch cost
would swamp the steps), each batch standardised per feature on the real steps and augmented (jitter and scaling)
as configs/experiment/japanese_vowels.yaml does, its proj.nets.SequenceTransformer. docstrings: the text demo
(1,237 training texts, 39 batches of token ids padded per batch, configs/experiment/stdlib_docstrings.yaml) with
its TextEmbeddingBag, or (docstrings_transformer) with configs/experiment/stdlib_docstrings_transformer.yaml's
TextTransformer. Both runs draw batches from the same DataLoader over the same Sequences with the template's
padding collate (values, lengths, mask), and train with AdamW, warmup and cosine per step, clipping at 1.0 and
label smoothing 0.05, validating after every epoch:

- hand-written loop: a plain for-loop over those batches;
- template: configs/default.yaml + the experiment's config through the real CLI objects (every
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
from torch.utils.data import DataLoader, RandomSampler

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {  # --data: the experiment config the template runs
    "vowels": "japanese_vowels.yaml",
    "docstrings": "stdlib_docstrings.yaml",
    "docstrings_transformer": "stdlib_docstrings_transformer.yaml",
}
WEIGHT_DECAY, WARMUP, BATCH = 0.05, 50, 32  # as the experiments run them (default.yaml's optim)


def configs(data: str) -> list[str]:
    experiment = ROOT / "configs" / "experiment" / EXPERIMENTS[data]
    return ["--config", str(ROOT / "configs" / "default.yaml"), "--config", str(experiment)]


def repeated(dm, copies: int):
    """The data module reading its training utterances `copies` times (the test set as it is)."""
    if copies == 1:
        return dm
    read = dm.load_arrays

    def load_arrays():
        x, y = read()
        for _ in range(copies - 1):
            x = x.concat(read()[0])
        return x, torch.as_tensor(y).repeat(copies).numpy()

    dm.load_arrays, dm.splits = load_arrays, {}
    return dm


def template(data: str, epochs: int, copies: int, batch: int) -> float:
    from proj.cli import main

    args = [
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
        f"--data.init_args.batch_size={batch}",
    ]
    cli = main([*configs(data), *args], run=False)
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
    schedules as the experiment's config sets them (read from it, with the net, through the CLI's parser)."""

    def __init__(self, data: str, epochs: int, copies: int, batch: int) -> None:
        from proj.cli import main
        from proj.data.sampling import Keyed
        from proj.data.sequence_augment import SequenceAugment
        from proj.data.sequences import pad_collate

        cli = main([*configs(data), f"--data.init_args.batch_size={batch}", "--trainer.logger=false"], run=False)
        torch.manual_seed(0)
        dm = repeated(cli.datamodule, copies)
        dm.setup()
        self.mean = torch.tensor(dm.stats["mean"]) if "mean" in dm.stats else None
        self.std = torch.tensor(dm.stats["std"]) if "std" in dm.stats else None
        data = dm.splits["train"]
        order = RandomSampler(data)  # a text experiment with augmentations edits each sample as it is read (keyed)
        order = Keyed(order, 0) if getattr(data, "keyed", False) else order
        self.train = DataLoader(data, batch_size=batch, sampler=order, collate_fn=pad_collate)
        self.val = DataLoader(dm.splits["val"], batch_size=batch, collate_fn=pad_collate)
        self.net = cli.model.net  # the experiment's net, freshly initialised
        hp = dm.hparams
        self.augment = SequenceAugment(hp.get("jitter", 0.0), hp.get("scaling", 0.0))
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
        decay = [p for p in self.net.parameters() if p.ndim > 1]
        no_decay = [p for p in self.net.parameters() if p.ndim <= 1]
        stage = cli.model.hparams.optim["stages"][0]
        lr = stage["optimizer"]["init_args"]["lr"]
        self.opt = torch.optim.AdamW(
            [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, weight_decay=WEIGHT_DECAY
        )
        steps = epochs * len(self.train)
        self.schedulers = [
            torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=steps, eta_min=1e-5),
            torch.optim.lr_scheduler.LinearLR(self.opt, 0.01, 1.0, total_iters=stage.get("warmup_steps", WARMUP)),
        ]

    def standardised(self, x):
        from proj.data.sequences import Padded

        if self.mean is None:  # token ids
            return x
        return Padded((x.values - self.mean) / self.std * x.mask[..., None], x.lengths, x.mask)

    def loss(self, batch) -> torch.Tensor:
        x = self.standardised(batch["input"])
        return self.loss_fn(self.net(*(self.augment(x) if self.augment.active else x)), batch["target"])

    def correct(self, batch) -> torch.Tensor:
        return (self.net(*self.standardised(batch["input"])).argmax(1) == batch["target"]).float()


def hand_written(data: str, epochs: int, copies: int, batch: int) -> float:
    run = Setup(data, epochs, copies, batch)
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


def plain_lightning(data: str, epochs: int, copies: int, batch: int) -> float:
    """A minimal LightningModule over the same Setup, with Lightning's bare Trainer: Lightning's own floor."""
    import lightning.pytorch as L

    run = Setup(data, epochs, copies, batch)

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
    parser.add_argument("--data", choices=list(EXPERIMENTS), default="vowels")
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[BATCH, 128], help="the experiment's, and larger")
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="sequence_epoch_"))  # the template's logs and checkpoints land there
    ours, loop = f"template ({args.data} experiment)", "hand-written loop"
    plain = "plain Lightning, bare Trainer"
    found = []
    for batch in args.batches:
        shared = (args.data, args.epochs, args.copies, batch)
        runs = {
            loop: lambda s=shared: hand_written(*s),
            plain: lambda s=shared: plain_lightning(*s),
            ours: lambda s=shared: template(*s),
        }
        for run in runs.values() if args.repeats > 1 else ():  # one repeat: a smoke run, not a measure
            run()  # warm-up: imports, first-call costs
        samples = interleave(runs, args.repeats)
        print(f"\n{args.data} x{args.copies}, batch {batch}, {args.epochs} epochs, {args.repeats} runs")
        print(table(samples, "s/epoch", baseline=loop))
        minima = ratio(samples, ours, loop, min)
        found.append(
            f"batch {batch}: template / loop {ratio(samples, ours, loop):.3f}x (minima {minima:.3f}x), "
            f"Lightning's bare Trainer / loop {ratio(samples, plain, loop):.3f}x"
        )
    result("; ".join(found) + " (goal <= 1.05x)")


if __name__ == "__main__":
    main()
