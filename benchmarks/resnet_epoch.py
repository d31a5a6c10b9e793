"""A realistic step: one epoch of ResNet-20 on CIFAR-shaped batches, the template with every default against a
hand-written loop doing the same work.

    python benchmarks/resnet_epoch.py [--steps 100] [--repeats 3]
    python benchmarks/resnet_epoch.py --tiny                 # ResNet-8, batch 32, 4 steps: that it runs

Random uint8 images, 3x32x32 (no download; the speed of a step does not depend on what the pixels show), batch 128,
`--steps` training steps and a validation split of a tenth of the images. Both sides: ResNet-20, SGD with Nesterov
momentum and weight decay off biases and BatchNorm weights, label smoothing 0.05, gradient clipping at 1.0, inputs
scaled and standardised per batch (the data module's own statistics), then one pass over the validation split
(loss and accuracy) and a checkpoint of the weights and optimizer state.

- template: configs/default.yaml + configs/model/resnet20.yaml through the real CLI objects, every default callback,
  the TensorBoard logger, the progress bar, the sanity check; `trainer.fit` timed whole;
- hand-written loop: the same, written out as a careful user would (a for-loop, torch.no_grad validation,
  torch.save), timed from its first batch to its checkpoint.

Alternated over the repeats in one process; reported: seconds per epoch and the ratio template / loop.
"""

import argparse
import os
import statistics
import tempfile
import time

import torch
from common import interleave, ratio, result, table
from data_path import RandomImages
from torch import nn

from proj.nets import ResNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SGD = {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
TRAIN, VAL = 0.7, 0.1  # ArrayDataModule's default split of the images: 70% training, 10% validation, 20% test


def template(args: argparse.Namespace) -> float:
    from proj.cli import main

    init_args = ", ".join(f"{k}: {v}" for k, v in SGD.items())
    cli = main([
        "--config", os.path.join(ROOT, "configs", "default.yaml"),
        "--config", os.path.join(ROOT, "configs", "model", "resnet20.yaml"),
        "--data=data_path.RandomImages", f"--data.init_args.n={images(args)}",
        f"--data.init_args.batch_size={args.batch_size}", f"--model.init_args.net.init_args.depth={args.depth}",
        "--trainer.max_epochs=1", "--test_after_fit=false",
        f"--model.init_args.optim.stages=[{{optimizer: {{class_path: torch.optim.SGD, init_args: {{{init_args}}}}}}}]",
    ], run=False)  # fmt: skip
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    assert cli.trainer.global_step == args.steps, cli.trainer.global_step
    return seconds


def loop(args: argparse.Namespace) -> float:
    dm = RandomImages(n=images(args), batch_size=args.batch_size)
    dm.setup()  # the template's split of the same images, so both sides see the same batches
    (x, y), (vx, vy) = dm.splits["train"].tensors, dm.splits["val"].tensors
    torch.manual_seed(0)
    net = ResNet((3, 32, 32), 10, depth=args.depth)
    decay = [p for p in net.parameters() if p.ndim > 1]
    groups = [{"params": decay}, {"params": [p for p in net.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, **SGD)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    start = time.perf_counter()
    net.train()
    for index in torch.randperm(len(x)).split(args.batch_size):
        loss = loss_fn(net(dm.normalize(dm.scaled(x[index]))), y[index])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
    net.eval()
    correct = total_loss = 0.0
    with torch.no_grad():
        for xb, yb in zip(vx.split(args.batch_size), vy.split(args.batch_size), strict=True):
            logits = net(dm.normalize(dm.scaled(xb)))
            total_loss += float(loss_fn(logits, yb)) * len(yb)
            correct += float((logits.argmax(1) == yb).sum())
    torch.save({"net": net.state_dict(), "optimizer": opt.state_dict()}, "loop.ckpt")
    return time.perf_counter() - start


def images(args: argparse.Namespace) -> int:
    """Enough images for exactly `steps` full training batches in the data module's 70% training split."""
    return int(args.steps * args.batch_size / TRAIN) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="ResNet-8, batch 32, 4 steps, once: that it runs")
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.batch_size, args.depth, args.repeats = 4, 32, 8, 1
    os.chdir(tempfile.mkdtemp(prefix="resnet_epoch_"))  # the template's logs and checkpoints land there
    ours, theirs = "template (default config)", "hand-written loop"
    runs = {theirs: lambda: loop(args), ours: lambda: template(args)}
    for run in runs.values() if args.repeats > 1 else ():  # one repeat: a smoke run, not a measure
        run()  # warm-up: imports, first-call costs
    samples = interleave(runs, args.repeats)
    print(f"\nResNet-{args.depth}, 3x32x32, batch {args.batch_size}: one epoch of {args.steps} steps with validation "
          f"and a checkpoint, {args.repeats} repeats, {torch.get_num_threads()} threads")  # fmt: skip
    print(table(samples, "s/epoch", baseline=theirs))
    per_step = {name: 1000 * statistics.median(values) / args.steps for name, values in samples.items()}
    print("".join(f"{name:<44}{ms:>20.1f} ms/step, everything included\n" for name, ms in per_step.items()))
    result(
        f"ResNet-{args.depth}, batch {args.batch_size}, one {args.steps}-step epoch with validation: template / "
        f"hand-written loop {ratio(samples, ours, theirs):.3f}x (minima {ratio(samples, ours, theirs, min):.3f}x; goal "
        "<= 1.03x)"
    )


if __name__ == "__main__":
    main()
