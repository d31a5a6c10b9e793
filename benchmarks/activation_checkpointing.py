"""Activation checkpointing (`model.init_args.activation_checkpointing: true`): peak memory and step time of
ResNet-20 training steps on CIFAR-shaped batches (128 x 3 x 32 x 32, random), with and without.

    python benchmarks/activation_checkpointing.py            # ResNet-20, batch 128 (a minute on 2 quiet cores)
    python benchmarks/activation_checkpointing.py --tiny     # ResNet-8, batch 16: that the script runs

The checkpointed net is made by the function the flag calls (proj.nets.checkpointing.checkpoint_blocks); SGD
with momentum, cross-entropy, the same batch at every step.

- Peak memory: each variant alone in a fresh process (a process's peak never comes down), the variants in
  turn. The figure is the rise of the peak resident set (ru_maxrss) over two training steps, from just before
  the first (net, optimizer and batch already built): what the steps add, that is the activations kept for the
  backward pass, gradients, optimizer state and workspace. glibc's malloc is given a fixed mmap threshold
  (MALLOC_MMAP_THRESHOLD_, its default 128 KiB, which it otherwise raises as large blocks are freed), so that
  freed activations go back to the system and the peak follows the live tensors, not the allocator's free
  lists: without it the two variants measured 363 and 298 MiB instead of 212 and 106. (tracemalloc sees no
  torch allocation, and torch keeps no CPU memory statistics.) On a GPU: torch.cuda.max_memory_allocated.
- Step time: both nets in this process with the default allocator, one step of each in turn, so that a busy
  spell of a shared machine falls on both alike; the median and the best step of each after the warm-up.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

from common import interleave, ratio, result, table

VARIANTS = {"plain": False, "activation checkpointing": True}


def peak_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def training_step(args: argparse.Namespace, checkpointed: bool) -> Callable[[], float]:
    """A ResNet, its optimizer and a batch; returns one training step, which returns its seconds."""
    import torch
    from torch import nn

    from proj.nets import ResNet
    from proj.nets.checkpointing import checkpoint_blocks

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    net = ResNet((3, 32, 32), 10, depth=args.depth).to(device).train()
    if checkpointed:
        checkpoint_blocks(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)

    def step() -> float:
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def memory_child(args: argparse.Namespace) -> None:
    """One variant alone in this process: print the rise of its peak memory over two training steps (the second
    holds what every later one holds) in MiB."""
    step = training_step(args, args.checkpointed)
    before = peak_mib()
    step(), step()
    print(peak_mib() - before)


def peak_rise(args: argparse.Namespace, checkpointed: bool) -> float:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}  # glibc's default, but fixed: see above
    flags = [f"--depth={args.depth}", f"--batch-size={args.batch_size}", "--checkpointed" if checkpointed else ""]
    command = [sys.executable, __file__, "--memory-child", *filter(None, flags)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="ResNet-8, batch 16, 3 steps, 1 process each")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12, help="timed steps of each variant, after the warm-up")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="processes per variant for the peak memory")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args)
    if args.tiny:
        args.depth, args.batch_size, args.steps, args.warmup, args.repeats = 8, 16, 3, 1, 1
    memory = interleave({n: partial(peak_rise, args, c) for n, c in VARIANTS.items()}, args.repeats)
    import torch

    steps = interleave({n: training_step(args, c) for n, c in VARIANTS.items()}, args.warmup + args.steps)
    ms = {name: [1000 * s for s in seconds[args.warmup :]] for name, seconds in steps.items()}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    threads = torch.get_num_threads()
    print(f"ResNet-{args.depth}, batch {args.batch_size} x 3 x 32 x 32, SGD, {device}, {threads} threads")
    print(f"peak memory: {args.repeats} process(es) per variant; step time: {args.steps} steps each, in turn")
    print(table(memory, "peak rise MiB", baseline="plain"))
    print(table(ms, "ms/step", baseline="plain"))
    mib = {name: statistics.median(values) for name, values in memory.items()}
    result(
        f"ResNet-{args.depth}, batch {args.batch_size}, {device}: activation checkpointing takes "
        f"{ratio(memory, 'activation checkpointing', 'plain'):.2f}x the peak memory of the plain steps "
        f"({mib['activation checkpointing']:.0f} vs {mib['plain']:.0f} MiB) and "
        f"{ratio(ms, 'activation checkpointing', 'plain'):.2f}x their time "
        f"(best steps {ratio(ms, 'activation checkpointing', 'plain', min):.2f}x)"
    )


if __name__ == "__main__":
    main()
