"""Evaluation a reader can trust (the diagnose extra): bootstrap intervals checked against scikit-learn, and what a
test writes into <run>/evaluation/ for a classifier, a regressor and a multi-label classifier, recomputed from its
own predictions file: metrics equal to the logged ones with an interval around them, per-class recall, the
highest-loss samples and their loss, the figures, the card's interval column; and a `validate` / later `test` of a
run's checkpoint writing into their own folders."""

import csv
import json

import numpy as np
import pytest

from proj.extras.diagnose.bootstrap import interval, metric_functions, paired_difference

from conftest import CONFIGS, DEFAULT, QUICK, cli_in, trained

# Two short epochs at a constant lr: a model half-way trained (test accuracy about 0.5), whose mistakes spread over
# several classes, so per-class numbers and confused pairs are not degenerate.
FAST = [*QUICK, "--trainer.limit_train_batches=5", '--model.init_args.optim.stages=[{optimizer: {class_path: '
        'torch.optim.Adam, init_args: {lr: 0.01}}}]']  # fmt: skip
CSV = str(CONFIGS / "logger" / "csv.yaml")
PNG = b"\x89PNG\r\n\x1a\n"
group = pytest.mark.xdist_group("diagnose_eval")


def saved(folder, split="test"):
    """(the JSON, the npz's arrays) Evaluation wrote into `folder`."""
    with np.load(folder / f"{split}_predictions.npz") as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads((folder / f"{split}.json").read_text()), arrays


def last_logged(run, name: str) -> float:
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    return float([row[name] for row in rows if row.get(name)][-1])


# --- the bootstrap against scikit-learn --------------------------------------------------------------------------


def test_the_metrics_equal_scikit_learns():
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(0)
    probs, target = rng.dirichlet(np.ones(6), 200), rng.integers(0, 5, 200)  # class 5 never true: sometimes predicted
    fns = metric_functions("classification")
    assert fns["acc"](probs, target) == pytest.approx(accuracy_score(target, probs.argmax(1)), abs=1e-12)
    assert fns["f1"](probs, target) == pytest.approx(f1_score(target, probs.argmax(1), average="macro"), abs=1e-12)
    decided, labels = rng.integers(0, 2, (200, 4)), rng.integers(0, 2, (200, 4))
    fns = metric_functions("multilabel")
    assert fns["f1"](decided, labels) == pytest.approx(f1_score(labels, decided, average="macro"), abs=1e-12)
    assert fns["subset_acc"](decided, labels) == pytest.approx(accuracy_score(labels, decided), abs=1e-12)
    true = rng.normal(size=(200, 2)) * [1, 30]
    pred = true + rng.normal(size=(200, 2)) * [0.5, 20]
    fns = metric_functions("regression")
    assert fns["mae"](pred, true) == pytest.approx(mean_absolute_error(true, pred), abs=1e-12)
    assert fns["rmse"](pred, true) == pytest.approx(np.sqrt(mean_squared_error(true, pred)), abs=1e-12)
    assert fns["r2"](pred, true) == pytest.approx(r2_score(true, pred), abs=1e-12)
    assert fns["r2"](pred[:, 0], true[:, 0]) == pytest.approx(r2_score(true[:, 0], pred[:, 0]), abs=1e-12)


def test_an_interval_holds_its_value_narrows_with_more_samples_and_is_reproducible():
    rng = np.random.default_rng(1)
    acc = metric_functions("classification")["acc"]

    def half_right(n):  # a classifier right on about 70% of n samples
        target = rng.integers(0, 3, n)
        guess = np.where(rng.random(n) < 0.7, target, (target + 1) % 3)
        return np.eye(3)[guess], target

    small, large = half_right(100), half_right(10_000)
    a, b = interval(acc, *small), interval(acc, *large)
    assert a["low"] < a["value"] < a["high"] and b["low"] < b["value"] < b["high"]
    assert (b["high"] - b["low"]) < (a["high"] - a["low"]) / 5  # width ~ 1/sqrt(n): 10x narrower
    assert interval(acc, *small) == a and interval(acc, *small, seed=1) != a  # seeded
    assert interval(acc, *small, level=0.5)["high"] < a["high"]


def test_a_paired_difference_sees_a_small_gain_that_two_separate_intervals_would_not():
    rng = np.random.default_rng(2)
    target = rng.integers(0, 2, 400)
    a = np.where(rng.random(400) < 0.8, target, 1 - target)
    b = np.where(rng.random(400) < 0.3, target, a)  # b fixes ~30% of a's mistakes, keeps the rest
    acc = metric_functions("classification")["acc"]
    pa, pb = np.eye(2)[a], np.eye(2)[b]
    diff = paired_difference(acc, pa, pb, target)
    assert diff["value"] == pytest.approx(acc(pb, target) - acc(pa, target))
    assert 0 < diff["low"] < diff["value"] < diff["high"]  # a gain beyond the test split's noise
    assert interval(acc, pa, target)["high"] > interval(acc, pb, target)["low"]  # the separate intervals overlap
    assert paired_difference(acc, pa, pa, target) == {"value": 0.0, "low": 0.0, "high": 0.0}


# --- a classifier: the test after fit, a validate and a later test of its checkpoint ------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    result, run = trained(tmp_path_factory, "eval_digits", "--config", DEFAULT, "--config", CSV, *FAST)
    card_after_fit = (run / "model_card.md").read_text()
    ckpt = f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    workdir = run.parents[2]
    validated = cli_in(workdir, "validate", "--config", str(run / "config.yaml"), ckpt, *QUICK)
    tested = cli_in(workdir, "test", "--config", str(run / "config.yaml"), ckpt, *QUICK)
    return {"result": result, "run": run, "card": card_after_fit, "validated": validated, "tested": tested}


@pytest.mark.slow
@group
def test_the_test_metrics_are_the_logged_ones_with_an_interval_around_them(digits):
    report, arrays = saved(digits["run"] / "evaluation")
    logged = digits["result"].trainer.callback_metrics
    assert report["split"] == "test" and report["task"] == "classification" and report["samples_from"] == "all"
    assert report["samples"] == len(arrays["loss"]) == len(digits["result"].datamodule.splits["test"]) == 360
    for name in ("acc", "f1"):
        metric = report["metrics"][name]
        assert metric["logged"] == f"test/{name}"
        assert metric["value"] == pytest.approx(float(logged[f"test/{name}"]), abs=1e-6), name
        assert metric["low"] < metric["value"] < metric["high"] and metric["high"] - metric["low"] > 0.01
    run = digits["run"]  # and in the logger, beside the metric
    assert last_logged(run, "test/acc_low") == pytest.approx(report["metrics"]["acc"]["low"], rel=1e-6)
    assert last_logged(run, "test/acc_low") < last_logged(run, "test/acc") < last_logged(run, "test/acc_high")


@pytest.mark.slow
@group
def test_per_class_metrics_and_confused_pairs_are_scikit_learns_on_the_saved_predictions(digits):
    from sklearn.metrics import confusion_matrix, precision_score, recall_score

    report, arrays = saved(digits["run"] / "evaluation")
    predicted, target = arrays["preds"].argmax(1), arrays["target"]
    rows = report["per_class"]
    assert [row["class"] for row in rows] == [str(i) for i in range(10)]
    labels = list(range(10))
    recall = recall_score(target, predicted, average=None, labels=labels, zero_division=0)
    precision = precision_score(target, predicted, average=None, labels=labels, zero_division=0)
    assert np.allclose([row["recall"] for row in rows], recall) and np.allclose(
        [r["precision"] for r in rows], precision
    )
    assert sum(row["support"] for row in rows) == 360 and sum(row["share"] for row in rows) == pytest.approx(1)
    counts = confusion_matrix(target, predicted, labels=labels)
    np.fill_diagonal(counts, 0)
    pairs = report["confused_pairs"]
    assert 0 < len(pairs) <= 10 and pairs[0]["count"] == counts.max()
    for pair in pairs:
        true, pred = int(pair["true"]), int(pair["predicted"])
        assert pair["count"] == counts[true, pred] and pair["share_of_true"] == pytest.approx(
            pair["count"] / (target == true).sum()
        )
    assert [p["count"] for p in pairs] == sorted((p["count"] for p in pairs), reverse=True)


@pytest.mark.slow
@group
def test_the_highest_loss_samples_are_the_worst_predicted_with_their_cross_entropy_and_a_gallery(digits):
    folder = digits["run"] / "evaluation"
    report, arrays = saved(folder)
    rows = report["highest_loss"]
    loss = -np.log(np.clip(arrays["preds"][np.arange(360), arrays["target"]].astype(np.float64), 1e-12, None))
    assert np.allclose(arrays["loss"], loss)
    assert len(rows) == 16 and [r["loss"] for r in rows] == sorted((r["loss"] for r in rows), reverse=True)
    assert rows[0]["loss"] == pytest.approx(loss.max()) and rows[-1]["loss"] == pytest.approx(np.sort(loss)[-16])
    ids = list(arrays["ids"])
    assert ids == digits["result"].datamodule.sample_ids("test")  # the data's ids, in the test split's order
    for row in rows:
        i = ids.index(row["id"])
        assert row["loss"] == pytest.approx(loss[i]) and row["true"] == str(arrays["target"][i])
        assert row["predicted"] == str(arrays["preds"][i].argmax()) and "text" not in row
    assert report["figures"] == {
        "roc": "test_roc.png", "precision_recall": "test_precision_recall.png", "highest_loss": "test_highest_loss.png"
    }  # fmt: skip
    for file in report["figures"].values():
        assert (folder / file).read_bytes()[:8] == PNG, file


@pytest.mark.slow
@group
def test_the_card_shows_each_test_metrics_interval_and_links_the_evaluation(digits):
    run, card = digits["run"], digits["card"]
    report, _ = saved(run / "evaluation")
    acc = report["metrics"]["acc"]
    assert "| metric | value | 95% interval |" in card
    value = digits["result"].trainer.callback_metrics["test/acc"]
    assert f"| test/acc | {float(value):.4g} | {acc['low']:.4g} to {acc['high']:.4g} |" in card
    assert "[ROC curves](evaluation/test_roc.png)" in card and "[evaluation/test.json](evaluation/test.json)" in card
    assert "| val/acc | " in card and "Diagnosis:" not in card  # no interval for validation; no report yet


@pytest.mark.slow
@group
def test_validate_and_a_later_test_write_into_their_own_folders_and_fit_validation_writes_none(digits):
    run = digits["run"]
    assert sorted(p.name for p in (run / "evaluation").iterdir() if p.suffix != ".png") == [
        "test.json", "test_predictions.npz"
    ]  # fmt: skip
    report, arrays = saved(run / "validate" / "evaluation", "val")
    val_acc = digits["validated"].trainer.callback_metrics["val/acc"]
    assert report["split"] == "val" and report["samples"] == len(arrays["ids"]) == 64 * 2  # QUICK: 2 batches
    assert report["metrics"]["acc"]["value"] == pytest.approx(float(val_acc), abs=1e-6)
    later, _ = saved(run / "test" / "evaluation")
    assert later["metrics"]["acc"]["value"] == pytest.approx(
        float(digits["tested"].trainer.callback_metrics["test/acc"]), abs=1e-6
    )
    card = json.loads((run / "run.json").read_text())["card"]  # the later test's intervals, its files linked
    assert card["intervals"]["test/acc"]["low"] == later["metrics"]["acc"]["low"]
    assert card["evaluation"]["file"] == "test/evaluation/test.json"
    assert "[ROC curves](test/evaluation/test_roc.png)" in (run / "model_card.md").read_text()


# --- a regressor and a multi-label classifier --------------------------------------------------------------------


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    return trained(tmp_path_factory, "eval_diabetes", "--config", DEFAULT, "--config",
                   str(CONFIGS / "experiment" / "diabetes_regression.yaml"), *QUICK)  # fmt: skip


@pytest.mark.slow
@group
def test_a_regression_has_mae_rmse_and_r2_intervals_per_target_and_a_scatter(diabetes):
    result, run = diabetes
    folder = run / "evaluation"
    report, arrays = saved(folder)
    logged = result.trainer.callback_metrics
    for name in ("mae", "rmse", "r2"):
        metric = report["metrics"][name]
        assert metric["value"] == pytest.approx(float(logged[f"test/{name}"]), rel=1e-4), name
        assert metric["low"] < metric["value"] < metric["high"]
    (row,) = report["per_class"]
    assert row["class"] == "progression" and row["mae"] == pytest.approx(report["metrics"]["mae"]["value"])
    assert np.allclose(arrays["loss"], ((arrays["preds"] - arrays["target"]) ** 2).mean(1))  # in the target's units
    worst = report["highest_loss"][0]
    assert worst["loss"] == pytest.approx(arrays["loss"].max()) and isinstance(worst["true"], float)
    assert report["figures"] == {"predicted_vs_true": "test_predicted_vs_true.png"}  # a table: no gallery
    assert (folder / "test_predicted_vs_true.png").read_bytes()[:8] == PNG
    assert report["confused_pairs"] == []
    card = (run / "model_card.md").read_text()
    assert f"| test/rmse | {float(logged['test/rmse']):.4g} | " in card and "[predicted vs true]" in card


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory):
    return trained(tmp_path_factory, "eval_multilabel", "--config", DEFAULT, "--config",
                   str(CONFIGS / "experiment" / "digits_multilabel.yaml"), *FAST)  # fmt: skip


@pytest.mark.slow
@group
def test_a_multi_label_run_has_per_label_metrics_binary_cross_entropy_and_curves(multilabel):
    from sklearn.metrics import recall_score

    result, run = multilabel
    folder = run / "evaluation"
    report, arrays = saved(folder)
    logged = result.trainer.callback_metrics
    assert report["metrics"]["f1"]["logged"] == "test/f1_macro"
    assert report["metrics"]["f1"]["value"] == pytest.approx(float(logged["test/f1_macro"]), abs=1e-6)
    assert report["metrics"]["subset_acc"]["value"] == pytest.approx(float(logged["test/exact_match"]), abs=1e-6)
    labels = ["even", "greater_than_4", "has_loop"]
    assert [row["class"] for row in report["per_class"]] == labels
    recall = recall_score(arrays["target"], arrays["preds"], average=None, zero_division=0)
    assert np.allclose([row["recall"] for row in report["per_class"]], recall)
    p, t = np.clip(arrays["probs"].astype(np.float64), 1e-12, 1 - 1e-12), arrays["target"]
    assert np.allclose(arrays["loss"], -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(1))
    assert set(report["figures"]) == {"roc", "precision_recall", "highest_loss"}
    assert all((folder / file).read_bytes()[:8] == PNG for file in report["figures"].values())
    assert all(set(row["true"].split(";")) <= {"", *labels} for row in report["highest_loss"])


# --- texts and sequences: the texts in the JSON, the sequences drawn -----------------------------------------------


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    from helpers import TOPIC_ROWS

    workdir = tmp_path_factory.mktemp("eval_texts")
    with open(workdir / "texts.csv", "w", newline="") as f:
        csv.writer(f).writerows([["text", "label"], *TOPIC_ROWS])
    experiment = str(CONFIGS / "experiment" / "stdlib_docstrings.yaml")
    data = ["--data=proj.data.TextCSVDataModule", f"--data.init_args.path={workdir / 'texts.csv'}"]
    result = cli_in(workdir, "fit", "--config", DEFAULT, "--config", experiment, *data, "--data.vocab_size=50", *QUICK)
    return workdir / result.trainer.log_dir


@pytest.mark.slow
@group
def test_a_text_runs_highest_loss_samples_carry_their_text_and_get_no_gallery(texts):
    report, _ = saved(texts / "evaluation")
    rows = report["highest_loss"]
    assert rows and all(row["text"].startswith("a sentence about") for row in rows), rows
    for row in rows:  # the text is the sample's: its topic is the true class
        assert row["true"] in row["text"]
    assert "highest_loss" not in report["figures"] and "roc" in report["figures"]


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("eval_sequences")
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 20, 120)
    labels = rng.integers(0, 3, 120)
    steps = np.concatenate([rng.normal(label, 1, (n, 2)) for n, label in zip(lengths, labels, strict=True)])
    np.savez(workdir / "seq.npz", steps=steps.astype(np.float32), lengths=lengths, labels=labels)
    experiment = str(CONFIGS / "experiment" / "japanese_vowels.yaml")
    data = ["--data=proj.data.SequenceFileDataModule", f"--data.init_args.path={workdir / 'seq.npz'}"]
    result = cli_in(
        workdir, "fit", "--config", DEFAULT, "--config", experiment, *data, "--data.test_fraction=0.3", *QUICK
    )
    return result, workdir / result.trainer.log_dir


@pytest.mark.slow
@group
def test_a_sequence_runs_highest_loss_samples_are_drawn_over_their_real_steps(sequences):
    result, run = sequences
    report, _ = saved(run / "evaluation")
    assert report["figures"]["highest_loss"] == "test_highest_loss.png"
    assert (run / "evaluation" / "test_highest_loss.png").read_bytes()[:8] == PNG
    assert report["samples"] == len(result.datamodule.splits["test"])
