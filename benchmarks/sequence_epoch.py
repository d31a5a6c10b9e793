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
  default callback, the TensorBoard logger, checkpoints, the progress bar); `trainer.fit` timed alone.

Reported: the median seconds per epoch over interleaved repeats, min / max, and the ratio template / loop.
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


def template(epochs: int, copies: int) -> float:
    from proj.cli import main

    cli = main([*CONFIGS, f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false"], run=False)
    dm = repeated(cli.datamodule, copies)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=dm)
    return (time.perf_counter() - start) / cli.trainer.current_epoch


def hand_written(epochs: int, copies: int) -> float:
    from proj.data import JapaneseVowelsDataModule
    from proj.data.sequence_augment import SequenceAugment
    from proj.data.sequences import Padded, pad_collate
    from proj.nets import SequenceTransformer

    torch.manual_seed(0)
    dm = repeated(JapaneseVowelsDataModule(batch_size=BATCH, val_fraction=0.15), copies)
    dm.setup()
    mean, std = torch.tensor(dm.stats["mean"]), torch.tensor(dm.stats["std"])
    train = DataLoader(dm.splits["train"], batch_size=BATCH, shuffle=True, collate_fn=pad_collate)
    val = DataLoader(dm.splits["val"], batch_size=BATCH, collate_fn=pad_collate)
    # as configs/experiment/japanese_vowels.yaml sets them
    net = SequenceTransformer((12,), 9, d_model=64, nhead=4, layers=2, dim_feedforward=128, dropout=0.1)
    augment = SequenceAugment(jitter=0.05, scaling=0.1)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    decay = [p for p in net.parameters() if p.ndim > 1]
    groups = [{"params": decay}, {"params": [p for p in net.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, weight_decay=WEIGHT_DECAY)
    steps = epochs * len(train)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-5)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, 0.01, 1.0, total_iters=WARMUP)

    def standardised(x: Padded) -> Padded:
        return Padded((x.values - mean) / std * x.mask[..., None], x.lengths, x.mask)

    start = time.perf_counter()
    for _ in range(epochs):
        net.train()
        for batch in train:
            x = augment(standardised(batch["input"]))
            loss = loss_fn(net(*x), batch["target"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            cosine.step()
            warmup.step()
        net.eval()
        with torch.no_grad():
            correct = sum(int((net(*standardised(b["input"])).argmax(1) == b["target"]).sum()) for b in val)
        correct / len(dm.splits["val"])  # what validation does
    return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="sequence_epoch_"))  # the template's logs and checkpoints land there
    runs = {
        "hand-written loop": lambda: hand_written(args.epochs, args.copies),
        "template (japanese_vowels experiment)": lambda: template(args.epochs, args.copies),
    }
    for run in runs.values():
        run()  # warm-up: imports, first-call costs
    samples = interleave(runs, args.repeats)
    print(f"\nJapaneseVowels x{args.copies}, Transformer, batch {BATCH}, {args.epochs} epochs, {args.repeats} runs")
    print(table(samples, "s/epoch", baseline="hand-written loop"))
    ours, loop = "template (japanese_vowels experiment)", "hand-written loop"
    result(
        f"template / hand-written loop per sequence epoch {ratio(samples, ours, loop):.3f}x (goal <= 1.05x), "
        f"minima {ratio(samples, ours, loop, min):.3f}x"
    )


if __name__ == "__main__":
    main()
