"""Imbalanced table: no correction, oversampling, class weights, SMOTE and GAN oversampling, over seeds and splits.

    python benchmarks/imbalanced_table.py [--splits 0 1 2] [--seeds 0 1 2] [--methods none ... gan]
                                          [--epochs 0] [--gan_epochs 0] [--gan_batch_size 0]

The table is scikit-learn's breast-cancer data with 90% of the malignant rows dropped (proj.data.imbalanced_table:
21 malignant, 357 benign), each method its configs/experiment/table_<method>.yaml (an MLP, 30 epochs, the last
checkpoint tested). For every split (`data.split_seed`: which rows are training, validation and test, and the seed of
SMOTE and of the GAN), `python -m proj repeat` trains each method once per seed (`seed_everything`: initialisation,
order, dropout) on that split; the split's test rows (114, 6 of them malignant) score every method alike. Reported:
the mean and std over all runs of the malignant class's test recall and of the test macro F1, both read from each
run's evaluation/test.json, and the GAN's own training time per split (it is trained once per split: the seeds of a
split share its rows, as they share SMOTE's). Needs the repeat and diagnose extras (repeat, Evaluation) and ctgan
(pip install -c constraints.txt -e ".[gan]").
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import result

from proj.data import CSVDataModule, gan_oversampling
from proj.data.imbalanced_table import write_imbalanced_table

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"none": "none", "oversample": "oversample", "class_weights": "class weights", "smote": "SMOTE", "gan": "GAN"}
MINORITY = "malignant"


def repeat(method: str, table: Path, split: int, seeds: list[int], options: list[str]) -> list[dict[str, float]]:
    """Each seed's malignant test recall and test macro F1 for `method` on split `split`."""
    from proj.cli import main

    name = f"{method}_split{split}"
    args = ["repeat", "--config", str(ROOT / "configs" / "default.yaml")]
    args += ["--config", str(ROOT / "configs" / "experiment" / f"table_{method}.yaml"), "--seeds", *map(str, seeds)]
    args += [f"--data.init_args.path={table}", f"--data.init_args.split_seed={split}", *options]
    args += [f"--trainer.logger.init_args.name={name}", "--trainer.enable_progress_bar=false"]
    with contextlib.redirect_stdout(sys.stderr):  # repeat's own report and Lightning's tables: not this one's
        main([*args, "--trainer.enable_model_summary=false"])
    return [scores(Path("logs") / f"{name}_repeat" / f"seed_{seed}" / "evaluation" / "test.json") for seed in seeds]


def scores(path: Path) -> dict[str, float]:
    found = json.loads(path.read_text())
    minority = next(row for row in found["per_class"] if row["class"] == MINORITY)
    return {"recall": minority["recall"], "f1": found["metrics"]["f1"]["value"], "support": minority["support"]}


def added_rows(table: Path, split: int, method: str, gan: dict[str, int]) -> dict[str, float]:
    """Where the rows `method` (smote, gan) adds on split `split` lie among the real training rows, on features
    standardised with the real rows' statistics: the share whose nearest real row is malignant, and the median
    distance to the nearest malignant row (beside a real malignant row's median distance to its nearest other one).
    Built as the experiment builds its data; the GAN's rows come from the cache its last run on this split left."""
    init = yaml.safe_load((ROOT / "configs" / "experiment" / f"table_{method}.yaml").read_text())["data"]["init_args"]
    dm = CSVDataModule(**{**init, "path": str(table), "split_seed": split, **gan})
    dm.setup()
    x, y = dm.splits["train"].tensors
    real, minority = len(dm.indices["train"]), dm.classes.index(MINORITY)
    mean, std = x[:real].mean(0), x[:real].std(0).clamp(min=1e-6)
    rows, known = (x[real:] - mean) / std, (x[:real][y[:real] == minority] - mean) / std
    distance = torch.cdist(rows, (x[:real] - mean) / std)
    own = torch.cdist(known, known).fill_diagonal_(float("inf")).min(1).values.median()
    return {
        "nearest is malignant": float((y[:real][distance.argmin(1)] == minority).float().mean()),
        "to malignant": float(distance[:, y[:real] == minority].min(1).values.median()),
        "real to malignant": float(own),
    }


def timed_gan_fits() -> list[float]:
    """The seconds of every GAN trained from now on (gan_oversampling.fit_gan, wrapped)."""
    seconds: list[float] = []
    fit = gan_oversampling.fit_gan

    def timed(*args, **kwargs):
        start = time.perf_counter()
        gan = fit(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
        return gan

    gan_oversampling.fit_gan = timed
    return seconds


def spread(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2], help="data.split_seed values")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seed_everything values (>= 2)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--epochs", type=int, default=0, help="the MLP's; 0: the experiments' own (30)")
    parser.add_argument("--gan_epochs", type=int, default=0, help="0: data.gan_epochs' default")
    parser.add_argument("--gan_batch_size", type=int, default=0, help="0: data.gan_batch_size's default")
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="imbalanced_table_"))  # the table, the runs' logs and checkpoints land there
    table = write_imbalanced_table("imbalanced_table.csv")
    gan = {key: getattr(args, key) for key in ("gan_epochs", "gan_batch_size") if getattr(args, key)}
    options = [f"--data.init_args.{key}={value}" for key, value in gan.items()]  # they change nothing but the GAN
    options += [f"--trainer.max_epochs={args.epochs}"] if args.epochs else []
    gan_seconds = timed_gan_fits()
    runs: dict[str, list[dict[str, float]]] = {}
    added: dict[str, list[dict[str, float]]] = {}
    for split in args.splits:
        for method in args.methods:
            found = repeat(method, table, split, args.seeds, options)
            runs.setdefault(method, []).extend(found)
            shown = ", ".join(f"{r['recall']:.3f} / {r['f1']:.3f}" for r in found)
            print(f"split {split}, {method}: malignant recall / macro F1 by seed: {shown}", flush=True)
            if method in ("smote", "gan"):
                added.setdefault(method, []).append(added_rows(table, split, method, gan))
    support = sorted({int(r["support"]) for found in runs.values() for r in found})
    print(
        f"\nimbalanced breast-cancer table (21 malignant, 357 benign), {len(args.splits)} splits x "
        f"{len(args.seeds)} seeds = {len(args.splits) * len(args.seeds)} runs a method; {support} malignant test rows; "
        f"torch threads: {torch.get_num_threads()}"
    )
    print(f"{'method':<16}{'malignant recall':>20}{'macro F1':>20}{'GAN training':>16}")
    for method, found in runs.items():
        gan = f"{statistics.median(gan_seconds):.1f} s" if method == "gan" and gan_seconds else ""
        recall, f1 = spread([r["recall"] for r in found]), spread([r["f1"] for r in found])
        print(f"{METHODS[method]:<16}{recall:>20}{f1:>20}{gan:>16}".rstrip())
    if gan_seconds:
        print(f"GAN training, one per split: {', '.join(f'{s:.1f}' for s in gan_seconds)} s")
    if added:
        print("\nwhere the synthetic rows lie among the real training rows (standardised features, mean over splits):")
        print(f"{'':<48}{'nearest real row':>20}{'distance to the':>20}")
        print(f"{'':<48}{'is malignant':>20}{'nearest malignant':>20}")
        for method, found in added.items():
            share, distance = (statistics.mean(a[k] for a in found) for k in ("nearest is malignant", "to malignant"))
            print(f"{METHODS[method] + ' rows':<48}{share:>20.0%}{distance:>20.2f}")
        own = statistics.mean(a["real to malignant"] for a in next(iter(added.values())))
        print(f"{'real malignant rows (the nearest other one)':<48}{'':>20}{own:>20.2f}")
    means = {m: [statistics.mean(r[k] for r in found) for k in ("recall", "f1")] for m, found in runs.items()}
    headline = ", ".join(f"{METHODS[m]} {recall:.3f} / {f1:.3f}" for m, (recall, f1) in means.items())
    gan = f"; the GAN trains in {statistics.median(gan_seconds):.0f} s" if gan_seconds else ""
    result(f"malignant recall / macro F1, mean of {len(args.splits) * len(args.seeds)} runs: {headline}{gan}")


if __name__ == "__main__":
    main()
