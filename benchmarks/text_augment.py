"""The text augmentations on a reduced training split: test macro F1 with and without each, over seeds.

    python benchmarks/text_augment.py [--fraction 0.2] [--seeds 0 1 2] [--rate 0.1] [--augmentations typos ...]

The docstrings demo as configs/experiment/stdlib_docstrings.yaml trains it (TextEmbeddingBag), its training split
cut to `--fraction` of itself (the same texts in every row and seed; validation and test as they are, so every row
is scored on the same 354 texts), with no augmentation, each augmentation alone at `--rate` per word, and all of
them together. TF-IDF + logistic regression on the same reduced split is the reference. Each seed is the run's
seed (initialisation, order, the edits). Reported: the mean and std of test macro F1 over the seeds, and each row's
difference to no augmentation. Synonyms need WordNet (apt-get install wordnet-base); without it that row is left
out.
"""

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
from common import result
from text_demo import fit, tfidf

from proj.data import StdlibDocstringsDataModule
from proj.data.text_augment import OPTIONS, WORDNET

EXPERIMENT_DATA = {"batch_size": 32, "vocab_size": 8000, "max_length": 128}  # stdlib_docstrings.yaml's


class ReducedDocstrings(StdlibDocstringsDataModule):
    """The docstrings demo with `fraction` of its training split (a seeded choice, the same in every run)."""

    def __init__(self, fraction: float = 0.2, **kwargs) -> None:
        self.fraction = fraction
        super().__init__(**kwargs)

    def split_indices(self, y: np.ndarray, fixed_test: int = 0) -> dict[str, np.ndarray]:
        found = super().split_indices(y, fixed_test)
        train = found["train"]
        keep = np.random.default_rng(0).choice(len(train), round(self.fraction * len(train)), replace=False)
        return {**found, "train": train[np.sort(keep)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--augmentations", nargs="+", choices=OPTIONS, default=list(OPTIONS))
    parser.add_argument("--epochs", type=int, default=40, help="the experiment's")
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="text_augment_"))  # the runs' logs and checkpoints land there
    options = [o for o in args.augmentations if o != "synonyms" or Path(WORDNET, "data.noun").is_file()]
    rows = {"none": []} | {o: [f"--data.init_args.{o}={args.rate}"] for o in options}
    if len(options) > 1:
        rows["all of them"] = [f"--data.init_args.{o}={args.rate}" for o in options]
    scores: dict[str, list[float]] = {}
    for name, row in rows.items():
        for seed in args.seeds:
            data = ["--data=text_augment.ReducedDocstrings", f"--data.init_args.fraction={args.fraction}"]
            data += [f"--data.init_args.{k}={v}" for k, v in EXPERIMENT_DATA.items()]  # a new class: given again
            f1, dm = fit([*data, *row, f"--trainer.max_epochs={args.epochs}"], seed, split_seed=0)
            scores.setdefault(name, []).append(f1)
            print(f"{name} seed {seed}: test macro F1 {f1:.4f}", flush=True)
    reference = tfidf(dm)
    base = statistics.mean(scores["none"])
    print(
        f"\ndocstrings, {args.fraction:.0%} of the training split ({len(dm.splits['train'])} texts), seeds {args.seeds}"
    )
    print(f"{'augmentation':<22}{'test macro F1':>22}{'vs none':>10}")
    for name, values in scores.items():
        mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
        label = name if name in ("none", "all of them") else f"{name} {args.rate}"
        print(f"{label:<22}{mean:>14.4f} ± {std:.4f}{mean - base:>+10.4f}")
        result(f"{mean:.4f} ± {std:.4f} ({mean - base:+.4f} vs none)", row=f"text augmentation: {label}")
    print(f"{'TF-IDF + LR':<22}{reference:>14.4f}")
    result(f"TF-IDF + LR on the same reduced split {reference:.4f}")


if __name__ == "__main__":
    main()
