"""Training throughput of a CIFAR-style ResNet on 32x32 batches: the template versus a hand-written loop,
with bf16-mixed precision, channels_last and torch.compile switched on and off.

    python benchmarks/gpu_throughput.py                      # on a GPU: ResNet-20, batch 256, every toggle
    python benchmarks/gpu_throughput.py --tiny               # anywhere: ResNet-8, batch 32, a few steps, fp32

Random uint8 images (no download) in the template's in-memory data module; the same net, SGD + Nesterov,
cross-entropy and gradient clipping in both. The template runs through the real CLI objects
(configs/default.yaml + configs/model/resnet20.yaml, `model.channels_last`, `model.compile`,
`trainer.precision`) with its default callbacks and logger; the loop uses torch.autocast. The clock runs
from the end of the warm-up steps (compilation included there) to the last step, synchronised with the
device. Reported: images / s per setting and the time ratio template / loop (loop images/s over template's).
"""

import argparse
import itertools
import os
import tempfile
import time

import lightning.pytorch as L
import torch
from common import result
from torch import nn

from proj.nets import ResNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Clock(L.Callback):
    """Start after `warmup` optimizer steps, stop after `warmup + steps`, waiting for the device each time."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step in (self.warmup, self.warmup + self.steps):
            sync()
            now = time.perf_counter()
            self.seconds = now - getattr(self, "start", now)
            self.start = now


def template(args: argparse.Namespace, precision: str, channels_last: bool, compiled: bool) -> float:
    from proj.cli import main

    cli = main([
        "--config", os.path.join(ROOT, "configs", "default.yaml"),
        "--config", os.path.join(ROOT, "configs", "model", "resnet20.yaml"),
        "--data=data_path.RandomImages", f"--data.init_args.n={args.images}",
        f"--data.init_args.batch_size={args.batch_size}",
        f"--model.init_args.net.init_args.depth={args.depth}",
        f"--model.init_args.channels_last={channels_last}", f"--model.init_args.compile={compiled}",
        f"--trainer.precision={precision}", f"--trainer.max_steps={args.warmup + args.steps}",
        "--trainer.enable_progress_bar=false", "--test_after_fit=false",
        "--model.init_args.optim.stages=[{optimizer: {class_path: torch.optim.SGD, init_args: "
        "{lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 5.0e-4}}}]",
    ], run=False)  # fmt: skip
    clock = Clock(args.warmup, args.steps)
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return args.steps * args.batch_size / clock.seconds


def loop(args: argparse.Namespace, precision: str, channels_last: bool, compiled: bool) -> float:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (args.images,), device=device)
    mean, std = x.float().mean((0, 2, 3), keepdim=True) / 255, x.float().std((0, 2, 3), keepdim=True) / 255
    net = ResNet((3, 32, 32), 10, depth=args.depth).to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
    step_net = torch.compile(net) if compiled else net
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    dtype = torch.bfloat16 if precision == "bf16-mixed" else None
    steps = 0
    while steps < args.warmup + args.steps:
        for index in torch.randperm(args.images, device=device).split(args.batch_size):
            if steps == args.warmup:
                sync()
                start = time.perf_counter()
            xb = ((x[index].float() / 255 - mean) / std).contiguous(memory_format=layout)
            with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(step_net(xb), y[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            steps += 1
            if steps == args.warmup + args.steps:
                break
    sync()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU-sized: ResNet-8, batch 32, 8 steps, fp32 only")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--images", type=int, default=10240)
    parser.add_argument("--toggles", default="precision,channels_last,compile", help="which of them to vary")
    args = parser.parse_args()
    if args.tiny:
        args.depth, args.batch_size, args.steps, args.warmup, args.images = 8, 32, 8, 2, 512
        args.toggles = "channels_last"
    os.chdir(tempfile.mkdtemp(prefix="gpu_throughput_"))
    toggles = args.toggles.split(",")
    precisions = ["32-true", "bf16-mixed"] if "precision" in toggles else ["32-true"]
    layouts = [False, True] if "channels_last" in toggles else [False]
    compiles = [False, True] if "compile" in toggles else [False]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{device}, ResNet-{args.depth}, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}")
    header = f"{'precision':<12}{'channels_last':>14}{'compile':>9}{'loop img/s':>12}{'template img/s':>16}"
    print(header + f"{'time ratio':>12}")
    best = None
    for precision, channels_last, compiled in itertools.product(precisions, layouts, compiles):
        theirs = loop(args, precision, channels_last, compiled)
        ours = template(args, precision, channels_last, compiled)
        print(f"{precision:<12}{channels_last!s:>14}{compiled!s:>9}{theirs:>12.0f}{ours:>16.0f}{theirs / ours:>11.3f}x")
        if best is None or ours > best[0]:
            best = (ours, precision, channels_last, compiled, theirs / ours)
    ours, precision, channels_last, compiled, slower = best
    result(
        f"{device}: best template setting {precision}, channels_last={channels_last}, compile={compiled}: "
        f"{ours:.0f} images/s; the template takes {slower:.3f}x the loop's time"
    )


if __name__ == "__main__":
    main()
