"""Each training recipe's effect on the scarce digits, over seeds, and its cost in training step time.

    python benchmarks/recipes.py                   # effects (3 seeds) and step costs: docs/techniques.md's table
    python benchmarks/recipes.py --seeds 0 1 2 3 4 --epochs 60
    python benchmarks/recipes.py --only sam lookahead --skip-cost

Effect: every recipe is stacked on the same run, configs/default.yaml + configs/data/scarce_digits.yaml (a tenth of
the digits' training split; the same test split), for a fixed budget of `--epochs` epochs (early stopping off, so
that a schedule's end is reached and every recipe gets the same number of steps), and repeated over the seeds by
`python -m proj repeat`. The split is the same for every seed and recipe, so each recipe's test accuracy is compared
with its baseline's seed by seed: the table's difference is the mean of the per-seed differences, with their std.
Drop-path's baseline is the plain ResNet-20; every other recipe's is the default run.

Cost: each recipe and its baseline are fitted in this process on the full digits (20 training batches an epoch),
interleaved, and every training batch (forward, backward, optimizer step and the callbacks' hooks) is timed; the
ratio of the medians of the second epoch's batches, on one thread. TTA changes no training step: its row times
the test batches.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import interleave, result

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SCARCE = CONFIGS / "data" / "scarce_digits.yaml"

# name -> (its config files, its baseline); None: the default run. Extras' presets are skipped when taken out.
RECIPES: dict[str, tuple[list[str], str]] = {
    "randaugment": (["augment/randaugment.yaml"], "default"),
    "trivialaugment": (["augment/trivialaugment.yaml"], "default"),
    "random_erasing": (["augment/random_erasing.yaml"], "default"),
    "resnet20": (["model/resnet20.yaml"], "default"),
    "resnet20_drop_path": (["model/resnet20_drop_path.yaml"], "resnet20"),
    "layer_decay": (["optim/layer_decay.yaml"], "default"),
    "gradual_unfreeze": (["callbacks/gradual_unfreeze.yaml"], "default"),
    "agc": (["callbacks/agc.yaml"], "default"),
    "sam": (["optim/sam.yaml"], "default"),
    "lookahead": (["optim/lookahead.yaml"], "default"),
    "wsd": (["optim/adamw_wsd.yaml"], "default"),
    "ema": (["callbacks/ema.yaml"], "default"),
    "avg_checkpoints": (["callbacks/avg_checkpoints.yaml"], "default"),
    "tta": (["callbacks/tta.yaml"], "default"),
}


def budget_config(folder: Path, epochs: int) -> Path:
    """The default's callbacks with early stopping's patience past the run: every recipe trains `epochs` epochs."""
    callbacks = yaml.safe_load((CONFIGS / "default.yaml").read_text())["trainer"]["callbacks"]
    for callback in callbacks:
        if "EarlyStopping" in callback["class_path"]:
            callback["init_args"]["patience"] = epochs + 1
    path = folder / "budget.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"max_epochs": epochs, "callbacks": callbacks}}, sort_keys=False))
    return path


def recipe_files(name: str, folder: Path, epochs: int) -> list[Path]:
    """The recipe's config files; the presets sized for the default run's 30 epochs rewritten for this budget."""
    files = [CONFIGS / f for f in RECIPES[name][0]] if name != "default" else []
    warm = max(1, round(epochs * 0.05))
    budgeted = {
        # warmup for 5% of this budget, the decay over its last 20%
        "wsd": ("[2, 24]", f"[{warm}, {max(warm + 1, round(epochs * 0.8))}]"),
        # an average over the last 10% of the budget's steps (4 an epoch on the scarce digits)
        "ema": ("decay: 0.99 ", f"decay: {1 - 1 / max(2.0, 0.1 * epochs * 4):.4f} "),
        "avg_checkpoints": ("last_k: 5", f"last_k: {max(2, epochs // 10)}"),  # the last 10% of the budget
    }
    if name in budgeted:
        old, new = budgeted[name]
        path = folder / files[0].name
        path.write_text(files[0].read_text().replace(old, new))
        files = [path]
    return files


def present(name: str) -> bool:
    return name == "default" or all((CONFIGS / f).is_file() for f in RECIPES[name][0])


# --- effects -----------------------------------------------------------------------------------------------------


def repeat(name: str, folder: Path, epochs: int, seeds: list[int], processes: int) -> dict[int, float]:
    """`python -m proj repeat` of one recipe on the scarce digits: {seed: test accuracy}."""
    args = ["--config", str(CONFIGS / "default.yaml"), "--config", str(SCARCE)]
    args += ["--config", str(budget_config(folder, epochs))]
    for f in recipe_files(name, folder, epochs):
        args += ["--config", str(f)]
    args += [f"--trainer.logger.init_args.save_dir={folder / 'logs'}", f"--trainer.logger.init_args.name={name}"]
    args += ["--trainer.enable_progress_bar=false", "--seeds", *map(str, seeds), "--processes", str(processes)]
    done = subprocess.run([sys.executable, "-m", "proj", "repeat", *args], capture_output=True, text=True, cwd=folder)
    if done.returncode != 0:
        raise SystemExit(f"{name}: repeat failed\n{done.stderr[-3000:]}")
    summary = json.loads((folder / "logs" / f"{name}_repeat" / "summary.json").read_text())
    return {int(seed): metrics["test/acc"] for seed, metrics in summary["seeds"].items()}


def effects(names: list[str], epochs: int, seeds: list[int], processes: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="recipes_"))
    accs: dict[str, dict[int, float]] = {}
    for name in ["default", *names]:
        for needed in (name, RECIPES.get(name, (None, "default"))[1]):
            if needed not in accs:
                start = time.perf_counter()
                accs[needed] = repeat(needed, folder, epochs, seeds, processes)
                print(f"{needed}: {fmt(list(accs[needed].values()))} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"\nscarce digits, {epochs} epochs, seeds {seeds}: test accuracy, and the difference to the baseline")
    print(f"{'recipe':<22}{'baseline':<12}{'test acc':>18}{'difference':>22}")
    print(f"{'default':<22}{'':<12}{fmt(list(accs['default'].values())):>18}")
    for name in names:
        base = RECIPES[name][1]
        diffs = [accs[name][s] - accs[base][s] for s in seeds]
        print(f"{name:<22}{base:<12}{fmt(list(accs[name].values())):>18}{fmt(diffs, sign=True):>22}")
        result(f"{fmt(list(accs[name].values()))} ({fmt(diffs, sign=True)} against {base})", row=f"effect: {name}")


def fmt(values: list[float], sign: bool = False) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if sign else ''}.4f} +- {spread:.4f}"


# --- step time ---------------------------------------------------------------------------------------------------


def timed_fit(name: str, folder: Path) -> tuple[float, float]:
    """One fit of a recipe on the full digits, 3 epochs: the median training batch time of the second epoch and
    the median test batch time, in ms."""
    import lightning.pytorch as L

    from proj.cli.run import lightning_main

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.train: list[float] = []
            self.test: list[float] = []

        def on_train_batch_start(self, trainer, *args):
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, *args):
            if trainer.current_epoch == 1:
                self.train.append(time.perf_counter() - self.start)

        def on_test_batch_start(self, trainer, *args):
            self.start = time.perf_counter()

        def on_test_batch_end(self, trainer, *args):
            self.test.append(time.perf_counter() - self.start)

    args = ["--config", str(CONFIGS / "default.yaml")]
    for f in recipe_files(name, folder, 3):
        args += ["--config", str(f)]
    args += ["--trainer.max_epochs=3", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    args += [f"--trainer.logger.init_args.save_dir={folder / 'cost'}", "--trainer.limit_val_batches=2"]
    cli = lightning_main(args, run=False)
    timer = Timer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return statistics.median(timer.train) * 1e3, statistics.median(timer.test) * 1e3


def costs(names: list[str], repeats: int) -> None:
    import torch

    # One thread: with two per process, anything else running on a 2-core machine (another process's threads
    # waiting at their barriers) made single runs 20-50x slower, the baseline's as much as a recipe's.
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="recipe_cost_"))
    print(
        f"\nstep time on the full digits (batch 64, 1 thread), median of the second epoch's batches, {repeats} repeats"
    )
    for name in names:
        base = RECIPES[name][1]
        runs = interleave({n: lambda n=n: timed_fit(n, folder) for n in (base, name)}, repeats)
        train = {n: statistics.median(t[0] for t in v) for n, v in runs.items()}
        test = {n: statistics.median(t[1] for t in v) for n, v in runs.items()}
        part, r = ("test batch", test[name] / test[base]) if name == "tta" else ("step", train[name] / train[base])
        print(f"{name:<22}{part}: {r:.2f}x {base} ({train[name]:.1f} / {train[base]:.1f} ms per step)", flush=True)
        result(f"{r:.2f}x {base}'s {part} time", row=f"cost: {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--processes", type=int, default=2, help="seeds trained at once (repeat --processes)")
    parser.add_argument("--only", nargs="+", default=None, help="these recipes only")
    parser.add_argument("--skip-effect", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--cost-repeats", type=int, default=3)
    args = parser.parse_args()
    names = [n for n in (args.only or RECIPES) if present(n)]
    if not args.skip_effect:
        effects(names, args.epochs, args.seeds, args.processes)
    if not args.skip_cost:
        costs(names, args.cost_repeats)


if __name__ == "__main__":
    main()
