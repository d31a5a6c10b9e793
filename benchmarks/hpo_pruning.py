"""What pruning saves in a hyper-parameter search: the same Optuna study (seeded TPE, same number of
trials) run with the median pruner and without, through the real `python -m proj tune`.

    python benchmarks/hpo_pruning.py [--trials 16] [--epochs 8]

Reports the epochs trained in total (the cost) and the best validation accuracy (the result) of each.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def study(pruner: str, trials: int, epochs: int) -> tuple[int, float, float, int]:
    from proj.cli import main

    start = time.perf_counter()
    configs = [
        "--config",
        str(ROOT / "configs" / "default.yaml"),
        "--config",
        str(ROOT / "configs" / "hpo" / "optuna.yaml"),
    ]
    result = main([
        "tune", *configs,
        f"--tune.n_trials={trials}", f"--tune.pruner={pruner}", f"--tune.study_name=bench_{pruner}",
        f"--trainer.max_epochs={epochs}", "--trainer.limit_train_batches=8", "--trainer.limit_val_batches=3",
    ])  # fmt: skip
    seconds = time.perf_counter() - start
    epochs_run = sum(t.user_attrs.get("epochs", 0) for t in result.trials)
    pruned = sum(t.state.name == "PRUNED" for t in result.trials)
    return epochs_run, result.best_value, seconds, pruned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="hpo_pruning_"))
    rows = {pruner: study(pruner, args.trials, args.epochs) for pruner in ("none", "median")}
    print(f"{args.trials} trials of up to {args.epochs} epochs, digits, seeded TPE")
    print(f"{'pruner':<8}{'epochs trained':>16}{'pruned':>8}{'best val/acc':>14}{'wall s':>8}")
    for pruner, (epochs, best, seconds, pruned) in rows.items():
        print(f"{pruner:<8}{epochs:>16}{pruned:>8}{best:>14.4f}{seconds:>8.0f}")
    saved = 1 - rows["median"][0] / rows["none"][0]
    print(f"pruning trains {saved:.0%} fewer epochs; best val/acc {rows['median'][1]:.4f} vs {rows['none'][1]:.4f}")


if __name__ == "__main__":
    main()
