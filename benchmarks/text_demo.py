"""The text demo over seeds: test macro F1 of the two text recipes beside TF-IDF + logistic regression on the same
split.

    python benchmarks/text_demo.py [--seeds 0 1 2]

Each seed is both the split's (`data.split_seed`) and the run's (`seed_everything`): every seed is another split of
the docstrings into training, validation and test (354 texts), and TF-IDF (1- and 2-grams, sublinear tf) + logistic
regression is fitted on that split's training texts and scored on its test texts. The recipes:
configs/experiment/stdlib_docstrings.yaml (TextEmbeddingBag) and
configs/experiment/stdlib_docstrings_transformer.yaml (TextTransformer). Reported: each seed's scores, their means,
and each recipe's mean difference to TF-IDF (the goal: within 0.03, or better).
"""

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from common import result

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "configs" / "experiment"
CONFIGS = ["--config", str(ROOT / "configs" / "default.yaml"), "--config", str(EXPERIMENTS / "stdlib_docstrings.yaml")]
RECIPES = {
    "TextEmbeddingBag": [],
    "TextTransformer": ["--config", str(EXPERIMENTS / "stdlib_docstrings_transformer.yaml")],
}


def fit(args: list[str], seed: int, split_seed: int | None = None):
    """A fit of the docstrings experiment with `args` at `seed` (the run's, and the split's unless `split_seed`
    fixes it): its test macro F1 and its data module."""
    from proj.cli import main

    split = seed if split_seed is None else split_seed
    options = [f"--seed_everything={seed}", f"--data.init_args.split_seed={split}"]
    options += ["--trainer.enable_progress_bar=false"]
    cli = main(["fit", *CONFIGS, *args, *options, "--trainer.enable_model_summary=false"])
    return float(cli.trainer.callback_metrics["test/f1"]), cli.datamodule


def tfidf(dm) -> float:
    """TF-IDF + logistic regression on the data module's training texts, its test macro F1."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    texts, labels, _ = dm.texts_and_labels()
    train, test = dm.indices["train"].numpy(), dm.indices["test"].numpy()
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
    model = LogisticRegression(max_iter=2000, C=10)
    model.fit(vectorizer.fit_transform([texts[i] for i in train]), labels[train])
    return f1_score(labels[test], model.predict(vectorizer.transform([texts[i] for i in test])), average="macro")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=0, help="0: the experiments' own")
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="text_demo_"))  # the runs' logs and checkpoints land there
    epochs = [f"--trainer.max_epochs={args.epochs}"] if args.epochs else []
    scores: dict[str, list[float]] = {name: [] for name in [*RECIPES, "TF-IDF + LR"]}
    for seed in args.seeds:
        for name, recipe in RECIPES.items():
            f1, dm = fit([*recipe, *epochs], seed)
            scores[name].append(f1)
        scores["TF-IDF + LR"].append(tfidf(dm))
        print(f"seed {seed}: " + ", ".join(f"{n} {v[-1]:.4f}" for n, v in scores.items()), flush=True)
    reference = statistics.mean(scores["TF-IDF + LR"])
    print(f"\ndocstrings, test macro F1, seeds {args.seeds} (split and run)")
    print(f"{'':<20}" + "".join(f"{f'seed {s}':>10}" for s in args.seeds) + f"{'mean':>10}{'vs TF-IDF':>12}")
    for name, values in scores.items():
        mean = statistics.mean(values)
        print(f"{name:<20}" + "".join(f"{v:>10.4f}" for v in values) + f"{mean:>10.4f}{mean - reference:>+12.4f}")
    result(
        ", ".join(f"{n} {statistics.mean(v):.4f}" for n, v in scores.items())
        + f" (test macro F1, mean of seeds {' '.join(map(str, args.seeds))}; goal: within 0.03 of TF-IDF)"
    )


if __name__ == "__main__":
    main()
