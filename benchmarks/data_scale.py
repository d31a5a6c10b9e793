"""Data at scale: peak memory of a one-epoch fit on a small and a large folder of JPEGs, read lazily and streamed
from shards, and the images / s of each loader against a plain torch Dataset + DataLoader on the same files.

    python benchmarks/data_scale.py [--small 2000] [--large 50000] [--workers 2] [--repeats 3] [--work DIR]

(1) Memory: `python -m proj fit` with configs/data/image_folder.yaml as written (lazy, 2 workers), then with
    configs/data/shards.yaml on the same images written by `python -m proj shard`: one epoch over the training
    split (70% of the images) and the validation split (10%), no sanity check (Lightning keeps its DataLoader
    iterator, and so its workers, alive through the first epoch), no test; --memory_repeats runs of each, the
    largest peak reported. The largest resident memory of one process
    (/usr/bin/time's maximum RSS: the main process or a worker) and the peak PSS of the whole process tree (main +
    workers, shared pages counted once), sampled every 0.2 s. Goal: the large folder within 15% of the small one,
    under 1.5 GB.
(2) Images / s over the large folder's training split, no model: the template's lazy loader (ImageFolderDataModule,
    decode + resize to 32x32 in the workers), a plain Dataset whose __getitem__ does the same PIL decode and
    resize, with the same DataLoader settings (the baseline), and the shard stream. Goal: lazy >= 0.95x plain.
(3) The bundled digits, in memory, are measured by overhead.py (template / plain Lightning).
Without the shards extra (deleted from a project), the streamed cases are left out.

96x96 RGB JPEGs (quality 90, about 4 KB: smooth colour fields with noise, one hue per class) are written once into
--work and reused by later runs.
"""

import argparse
import contextlib
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from common import interleave, ratio, result, table
from PIL import Image
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10
SHARDS = importlib.util.find_spec("proj.extras.shards") is not None  # the shards extra is present


def write_images(root: Path, count: int, size: int = 96) -> Path:
    if (root / ".complete").is_file():
        return root
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    for i in range(count):
        label = i % CLASSES
        (root / f"class_{label}").mkdir(parents=True, exist_ok=True)
        hue = np.array([label / CLASSES, 1 - label / CLASSES, 0.5], dtype=np.float32) * 200
        field = hue[None, None] * (0.5 + 0.5 * ramp[:, None, None] * rng.random()) + rng.normal(0, 12, (size, size, 3))
        Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)).save(
            root / f"class_{label}" / f"{i:06d}.jpg", quality=90
        )
    (root / ".complete").touch()
    return root


def write_shards(images: Path) -> Path:
    """The folder as shards, written once by `python -m proj shard`'s code in this process: the set-up of what is
    measured, not a measure. This process imports the template for (2) anyway; a process of its own would import
    torch and Lightning again (twice a run: 12 s of the test's smoke run)."""
    out = images.with_name(images.name + "_shards")
    if not (out / "index.json").is_file():
        from proj.cli import main as proj

        configs = [
            "--config",
            str(ROOT / "configs/default.yaml"),
            "--config",
            str(ROOT / "configs/data/image_folder.yaml"),
        ]
        with contextlib.redirect_stdout(sys.stderr):  # stdout is this benchmark's report
            proj(["shard", *configs, f"--data.root={images}", f"--out={out}"])
    return out


def peak_memory(args: list[str]) -> tuple[float, float, float]:
    """(the largest RSS of one process, the peak PSS of the process tree, both in MB; seconds) of one fit."""
    with tempfile.TemporaryDirectory() as cwd:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        report = Path(cwd) / "time.txt"
        command = ["/usr/bin/time", "-f", "%M", "-o", str(report), sys.executable, "-m", "proj", *args]
        start, peak = time.perf_counter(), 0
        log = Path(cwd) / "stderr.txt"
        with open(log, "w") as err:
            process = psutil.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
            while process.poll() is None:
                tree = 0
                for p in process.children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        tree += p.memory_full_info().pss
                peak = max(peak, tree)
                time.sleep(0.2)
        seconds = time.perf_counter() - start
        assert process.returncode == 0, log.read_text()[-3000:]
        return int(report.read_text().split()[-1]) / 1024, peak / 2**20, seconds


def fit_args(data: list[str]) -> list[str]:
    return ["fit", "--config", str(ROOT / "configs/default.yaml"), *data, "--trainer.max_epochs=1",
            "--trainer.num_sanity_val_steps=0", "--test_after_fit=false", "--trainer.enable_progress_bar=false",
            "--trainer.logger=false"]  # fmt: skip


class PlainFiles(Dataset):
    """The baseline: what a hand-written Dataset does with the same files."""

    def __init__(self, paths: list[str], labels: torch.Tensor) -> None:
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as im:
            x = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR))
        return torch.from_numpy(x.transpose(2, 0, 1).copy()), self.labels[i]


def rate(loader, count: int) -> float:
    start, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += len(x)
    assert seen == count, (seen, count)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=50000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory_repeats", type=int, default=2)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "proj_data_scale"))
    args = parser.parse_args()
    work = Path(args.work)
    sys.path.insert(0, str(ROOT / "src"))  # the template, as the fits' PYTHONPATH has it
    folders = {n: write_images(work / f"jpeg_{n}", n) for n in (args.small, args.large)}
    shards = {n: write_shards(folder) for n, folder in folders.items()} if SHARDS else {}

    print(f"(1) peak memory of a one-epoch fit, {args.workers} workers, MB")
    print(f"{'':<36}{'max RSS':>10}{'tree PSS':>10}{'seconds':>9}")
    peaks = {}
    for path, data in (
        (
            "lazy folder",
            lambda n: ["--config", str(ROOT / "configs/data/image_folder.yaml"), f"--data.root={folders[n]}"],
        ),
        ("streamed shards", lambda n: ["--config", str(ROOT / "configs/data/shards.yaml"), f"--data.url={shards[n]}"]),
    ):
        for n in (args.small, args.large):
            runs = [
                peak_memory(fit_args([*data(n), f"--data.num_workers={args.workers}"]))
                for _ in range(args.memory_repeats)
            ]
            rss, pss, seconds = (max(values) for values in zip(*runs, strict=True))
            peaks[path, n] = (rss, pss)
            print(f"{f'{path}, {n} images':<36}{rss:>10.0f}{pss:>10.0f}{seconds:>9.1f}")
    growth = {path: peaks[path, args.large][1] / peaks[path, args.small][1] for path, _ in peaks}
    worst = max(peaks[path, args.large][1] for path, _ in peaks)
    for path, g in growth.items():
        result(
            f"{args.large} / {args.small} images: {g:.2f}x the tree's peak PSS (goal <= 1.15x)",
            row=f"Peak memory, {path}",
        )
    result(f"largest peak tree PSS {worst:.0f} MB at {args.large} images (goal < 1500 MB)", row="Peak memory at scale")

    from proj.data import ImageFolderDataModule

    dm = ImageFolderDataModule(root=str(folders[args.large]), image_size=(32, 32), num_workers=args.workers)
    dm.setup()
    train = dm.splits["train"]
    plain = PlainFiles(list(train.paths), train.labels)
    settings = {"batch_size": 64, "num_workers": args.workers}
    cases = {
        "plain Dataset + DataLoader": lambda: rate(DataLoader(plain, **settings), len(train)),
        "template: lazy image folder": lambda: rate(dm.loader("train"), len(train)),
    }
    if SHARDS:
        from proj.extras.shards import ShardDataModule

        stream = ShardDataModule(url=str(shards[args.large]), num_workers=args.workers)
        stream.setup()
        cases["template: streamed shards"] = lambda: rate(stream.train_dataloader(), len(train))
    samples = interleave(cases, args.repeats)
    print(f"\n(2) images / s over {len(train)} training images, {args.workers} workers, batches of 64")
    print(table(samples, "images/s", baseline="plain Dataset + DataLoader", best=max))
    lazy = ratio(samples, "template: lazy image folder", "plain Dataset + DataLoader")
    streamed = ratio(samples, "template: streamed shards", "template: lazy image folder")
    result(
        f"lazy folder {lazy:.2f}x a plain DataLoader's images/s (goal >= 0.95x); shards {streamed:.2f}x the lazy folder"
    )
    print(f"\nmedian images/s: {', '.join(f'{k} {statistics.median(v):.0f}' for k, v in samples.items())}")


if __name__ == "__main__":
    main()
