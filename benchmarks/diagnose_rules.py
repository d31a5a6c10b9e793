"""diagnose's rules against runs built to have each problem, the default run over seeds, and the bundled recipes;
then --try: each chosen fix trained against the original on the same budget, with a paired bootstrap interval.

    python benchmarks/diagnose_rules.py [--seeds 0 1 2] [--recipes ...] [--tries ...] [--scale 1.0]

Each constructed run is a config of benchmarks/diagnose_cases.py stacked on configs/default.yaml (the same runs
tests/extras/test_diagnose.py trains), for the epochs it lists (times --scale). A rule passes when it fires on its
own run; the default run and the recipes pass when nothing fires. --try trains the fix and the original for the
case's epochs (the first finding's fix; the original retrained, so both have the same budget and seed) and reports
the test metric of each, their difference and its 95% paired bootstrap interval over the test samples.
"""

import argparse
import os
import tempfile
from pathlib import Path

from common import result
from diagnose_cases import CASES, case_args

ROOT = Path(__file__).resolve().parents[1]
RECIPES = [  # stacked on configs/default.yaml, as each file's first lines say
    "experiment/digits_augmented.yaml",
    "experiment/diabetes_regression.yaml",
    "experiment/digits_multilabel.yaml",
    "experiment/imbalanced_class_weights.yaml",
    "experiment/imbalanced_oversample.yaml",
    "experiment/japanese_vowels.yaml",
    "experiment/stdlib_docstrings.yaml",
    "model/mlp.yaml",
    "optim/sgd_onecycle.yaml",
    "optim/adam_then_sgd.yaml",
    "optim/rmsprop_plateau.yaml",
    "callbacks/ema.yaml",
]
TRIES = ["lr_too_low", "underfitting", "vanishing_gradients", "class_imbalance", "lr_decayed_early"]


def fit_and_diagnose(workdir: Path, args: list[str], *options: str) -> dict:
    from proj.cli import main

    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    try:
        run = Path(main(["fit", *args, "--trainer.enable_progress_bar=false"]).trainer.log_dir)
    except SystemExit:  # a run its guard stopped (non-finite loss): diagnose reads what it recorded
        run = sorted((workdir / "logs").glob("*/version_*"))[-1]
    return main(["diagnose", str(run), *options])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="*", default=RECIPES)
    parser.add_argument("--tries", nargs="*", default=TRIES)
    parser.add_argument("--rules", nargs="*", default=sorted(CASES))
    parser.add_argument("--scale", type=float, default=1.0, help="times each case's epochs (smaller: a smoke test)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="diagnose_rules_"))
    default = str(ROOT / "configs" / "default.yaml")

    def epochs(rule: str) -> str:
        return f"--trainer.max_epochs={max(2, round(CASES[rule][1] * args.scale))}"

    rows, hits = [], 0
    for rule in args.rules:
        fired = fit_and_diagnose(scratch / rule, [*case_args(rule, scratch / rule / "case"), epochs(rule)])["findings"]
        hits += rule in fired
        rows.append((f"constructed: {rule}", fired, rule in fired))
    quiet = 0
    others = [(f"default, seed {s}", ["--config", default, f"--seed_everything={s}"]) for s in args.seeds]
    others += [(recipe, ["--config", default, "--config", str(ROOT / "configs" / recipe)]) for recipe in args.recipes]
    for name, fit_args in others:
        fired = fit_and_diagnose(scratch / name.replace("/", "_").replace(" ", "_"), fit_args)["findings"]
        quiet += not fired
        rows.append((name, fired, not fired))
    print(f"\n{'run':<44}{'findings':<56}ok")
    for name, fired, ok in rows:
        print(f"{name:<44}{', '.join(fired) or 'none (healthy)':<56}{'yes' if ok else 'NO'}")
    result(
        f"{hits} of {len(args.rules)} rules fire on the run built for them; {quiet} of {len(others)} healthy runs "
        f"(default x {len(args.seeds)} seeds, {len(args.recipes)} recipes) have no finding"
    )
    tried_lines = []
    for rule in args.tries:
        folder = scratch / f"try_{rule}"
        budget = epochs(rule).split("=")[1]
        fit_args = [*case_args(rule, folder / "case"), epochs(rule)]
        found = fit_and_diagnose(folder, fit_args, "--try", "--only", f"[{rule}]", "--epochs", budget)
        for t in found["tried"]:
            d = t["difference"]
            tried_lines.append(
                f"{t['rule']}: {t['metric']} {t['original']:.3f} -> {t['fixed']:.3f} in {t['epochs']} epochs, "
                f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] {'helped' if t['helped'] else 'not shown'}"
            )
    print("\n--try, each fix against the original on the same budget (95% paired bootstrap over the test samples)")
    print("\n".join(tried_lines))
    helped = sum("helped" in line for line in tried_lines)
    result(f"{helped} of {len(tried_lines)} fixes beat the original beyond the interval; " + "; ".join(tried_lines),
           row="diagnose --try: the fix against the original, same budget")  # fmt: skip


if __name__ == "__main__":
    main()
