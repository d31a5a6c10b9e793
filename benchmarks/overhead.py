"""What the template costs over a hand-written PyTorch loop, per optimizer step, on the default config.

    python benchmarks/overhead.py [--epochs 5] [--repeats 3] [--device-resident]

(a) a plain loop: the same SmallCNN, digits split and standardisation, batch size, AdamW with the same
    parameter groups, warmup + cosine per step, gradient clipping, label smoothing, and an accuracy pass over
    the validation split after every epoch;
(b) the template: configs/default.yaml through the real CLI objects (DataModule, Classifier, Trainer with the
    default callbacks and TensorBoard logger), `trainer.fit` timed alone.
Runs alternate a, b, a, b ...; reported: the median time per optimizer step of each and their ratio.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]


def hand_written(epochs: int, seed: int = 0) -> tuple[float, int]:
    from proj.data import DigitsDataModule
    from proj.nets import SmallCNN

    torch.manual_seed(seed)
    dm = DigitsDataModule(batch_size=64)
    dm.setup()
    x, y = dm.splits["train"].tensors
    vx, vy = dm.splits["val"].tensors
    x, vx = dm.normalize(x * dm.scale), dm.normalize(vx * dm.scale)
    net = SmallCNN((1, 8, 8), 10, widths=(32, 64), dropout=0.2)
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=3e-3, weight_decay=0.05)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    steps = epochs * len(loader)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-5)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, 0.01, 1.0, total_iters=50)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    start = time.perf_counter()
    for _ in range(epochs):
        net.train()
        for xb, yb in loader:
            loss = loss_fn(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            cosine.step()
            warmup.step()
        net.eval()
        with torch.no_grad():
            (net(vx).argmax(1) == vy).float().mean().item()  # what the template's validation does, and a sync
    return time.perf_counter() - start, steps


def template(epochs: int, extra: list[str]) -> tuple[float, int]:
    from proj.cli import main

    cli = main(
        ["--config", str(ROOT / "configs" / "default.yaml"), f"--trainer.max_epochs={epochs}", *extra], run=False
    )
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return time.perf_counter() - start, cli.trainer.global_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="more template flags, e.g. --data.init_args.device_resident=true")
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="overhead_"))
    torch.set_num_threads(torch.get_num_threads())
    template(1, args.extra), hand_written(1)  # warm-up: imports, first-call costs
    a, b = [], []
    for _ in range(args.repeats):
        seconds, steps = hand_written(args.epochs)
        a.append(1000 * seconds / steps)
        seconds, steps = template(args.epochs, args.extra)
        b.append(1000 * seconds / steps)
    ratio = statistics.median(b) / statistics.median(a)
    print(
        f"digits, SmallCNN, batch 64, {args.epochs} epochs x {args.repeats} repeats, {torch.get_num_threads()} threads"
    )
    print(f"{'':<22}{'median ms/step':>16}{'min':>8}{'max':>8}")
    print(f"{'hand-written loop':<22}{statistics.median(a):>16.3f}{min(a):>8.3f}{max(a):>8.3f}")
    print(f"{'template':<22}{statistics.median(b):>16.3f}{min(b):>8.3f}{max(b):>8.3f}")
    print(f"ratio template / loop: {ratio:.3f}x  {' '.join(args.extra)}")


if __name__ == "__main__":
    main()
