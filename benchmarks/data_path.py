"""Throughput of the template's data path: batched on-device kornia augmentation versus the usual per-sample
augmentation inside DataLoader workers. 32x32 RGB images, the same transforms, measured side by side.

    python benchmarks/data_path.py [--samples 8192] [--repeats 5] [--workers 2]

(a) template: uint8 batches drawn by index from the device-resident training split, scaled, augmented with
    per-sample random parameters and standardised in ArrayDataModule.on_after_batch_transfer, one call per batch;
(b) per-sample: each image augmented by the same kornia transforms inside the Dataset's __getitem__, in
    DataLoader worker processes, then collated.
Runs alternate a, b, a, b ...; reported: samples / s (median, min, max) and the ratios to the per-sample path.
"""

import argparse
import time
from types import SimpleNamespace

import kornia.augmentation as K
import numpy as np
import torch
from common import interleave, ratio, result, table
from torch.utils.data import DataLoader, Dataset

from proj.data.base import ArrayDataModule


def transforms() -> list[torch.nn.Module]:
    return [
        K.RandomCrop((32, 32), padding=4, padding_mode="reflect"),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.2, 0.2, 0.2, p=0.8),
    ]


class RandomImages(ArrayDataModule):
    num_classes = 10
    input_shape = (3, 32, 32)
    scale = 1.0 / 255.0

    def __init__(self, n: int, **kwargs):
        self.n = n
        super().__init__(**kwargs)

    def load_arrays(self):
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (self.n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, self.n)


class PerSample(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: list[float], std: list[float]):
        self.x, self.y = x, y
        self.augment = torch.nn.Sequential(*transforms())
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        image = self.augment(self.x[i : i + 1].float() / 255.0)[0]
        return (image - self.mean) / self.std, self.y[i]


def run_template(dm: RandomImages) -> float:
    start = time.perf_counter()
    n = 0
    for batch in dm.train_dataloader():
        x, _ = dm.on_after_batch_transfer(batch, 0)
        n += len(x)
    return n / (time.perf_counter() - start)


def run_per_sample(loader: DataLoader) -> float:
    start = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    dm = RandomImages(
        args.samples, batch_size=args.batch_size, augment=transforms(), test_fraction=0.05, val_fraction=0.05
    )
    dm.setup()
    # A stand-in for the Trainer: training (so batches are augmented) on the CPU, one process. The training
    # split is device-resident, as the default (device_resident: auto) makes it for data of this size.
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    dm.trainer = SimpleNamespace(training=True, strategy=cpu, global_rank=0, world_size=1)
    x, y = dm.splits["train"].tensors
    loader = DataLoader(
        PerSample(x, y, dm.stats["mean"], dm.stats["std"]),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    run_template(dm), run_per_sample(loader)  # warm-up: worker start, kornia's first calls
    ours, theirs = "template: batched on-device kornia", f"per-sample kornia in {args.workers} DataLoader workers"
    samples = interleave({ours: lambda: run_template(dm), theirs: lambda: run_per_sample(loader)}, args.repeats)
    print(f"32x32 RGB, {len(x)} training images, batch {args.batch_size}, {args.repeats} repeats")
    print(table(samples, "samples/s", baseline=theirs, width=48, best=max))
    result(
        f"batched on-device kornia: {ratio(samples, ours, theirs):.1f}x the samples/s of per-sample kornia "
        f"in {args.workers} workers"
    )


if __name__ == "__main__":
    main()
