"""Multi-label classification through the core: the digits with three yes / no labels (even, greater than 4, has a
loop) trained to macro F1 >= 0.95, thresholds tuned on validation and used by test, predict, export and serve, the
data options either right for several labels or refused in one line, and stratified splits over combinations."""

import csv
import json

import numpy as np
import pytest
import torch

from conftest import CONFIGS, DEFAULT, cli, trained, usage_error
from helpers import predict_rows

EXPERIMENT = str(CONFIGS / "experiment" / "digits_multilabel.yaml")
ARGS = ["--config", DEFAULT, "--config", EXPERIMENT, "--trainer.enable_progress_bar=false"]
TINY = [*ARGS, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
TINY += ["--test_after_fit=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory):
    """The demo, trained for 6 epochs: (result, run directory)."""
    return trained(tmp_path_factory, "multilabel", *ARGS, "--trainer.max_epochs=6")


@pytest.mark.xdist_group("multilabel_run")  # its module fixture is trained once, on one worker
@pytest.mark.slow
def test_the_demo_reaches_macro_f1_095_with_thresholds_tuned_on_validation(multilabel_run):
    result, run_dir = multilabel_run
    metrics = result.trainer.callback_metrics
    f1, exact = float(metrics["test/f1_macro"]), float(metrics["test/exact_match"])
    print(
        f"digits multi-label test: macro F1 {f1:.4f}, micro F1 {float(metrics['test/f1_micro']):.4f}, exact {exact:.4f}"
    )
    assert f1 >= 0.95 and exact >= 0.9
    for label in ("even", "greater_than_4", "has_loop"):  # the per-label record diagnose and the card read
        assert float(metrics[f"test/f1_{label}"]) > 0.9 and float(metrics[f"test/auroc_{label}"]) > 0.97
    saved = json.loads((run_dir / "thresholds.json").read_text())
    model = result.model
    assert list(saved) == ["even", "greater_than_4", "has_loop"]
    assert saved != {"even": 0.5, "greater_than_4": 0.5, "has_loop": 0.5}  # tuned, not the starting value
    assert np.allclose(list(saved.values()), model.thresholds.tolist(), atol=1e-4)


def run_thresholds(run_dir) -> np.ndarray:
    return np.array(list(json.loads((run_dir / "thresholds.json").read_text()).values()))


@pytest.mark.xdist_group("multilabel_run")  # its module fixture is trained once, on one worker
@pytest.mark.slow
def test_predictions_hold_each_labels_probability_and_the_set_at_the_thresholds(multilabel_run):
    result, run_dir = multilabel_run
    rows = predict_rows(run_dir, result.trainer.checkpoint_callback.best_model_path)
    assert len(rows) == 360 and list(rows[0]) == ["id", "predicted", "p_even", "p_greater_than_4", "p_has_loop"]
    thresholds = run_thresholds(run_dir)
    for row in rows:
        p = np.array([float(row[f"p_{n}"]) for n in ("even", "greater_than_4", "has_loop")])
        chosen = [n for n, on in zip(("even", "greater_than_4", "has_loop"), p >= thresholds, strict=True) if on]
        assert row["predicted"] == ";".join(chosen)


@pytest.mark.xdist_group("multilabel_run")  # its module fixture is trained once, on one worker
@pytest.mark.slow
def test_export_carries_the_thresholds_and_scores_exact_match_as_test_did(multilabel_run, tmp_path, monkeypatch):
    pytest.importorskip("proj.extras.export")  # an extra: its part goes with it
    result, run_dir = multilabel_run
    best = result.trainer.checkpoint_callback.best_model_path
    monkeypatch.chdir(run_dir.parents[2])
    cli("export", "--config", str(run_dir / "config.yaml"), f"--ckpt_path={best}", f"--out={tmp_path / 'export'}")
    info = json.loads((tmp_path / "export" / "model.json").read_text())
    assert info["task"] == "multilabel" and np.allclose(info["thresholds"], run_thresholds(run_dir), atol=1e-4)
    exact = float(result.trainer.callback_metrics["test/exact_match"])
    assert info["measured"]["onnx fp32"]["test_exact_match"] == pytest.approx(exact, abs=1e-3)


@pytest.mark.xdist_group("multilabel_run")  # its module fixture is trained once, on one worker
@pytest.mark.slow
def test_serve_answers_the_labels_set_at_the_thresholds(multilabel_run, monkeypatch):
    pytest.importorskip("proj.extras.serve")
    from proj.extras.serve.backends import outputs_to_json
    from proj.extras.serve.command import torch_backend

    result, run_dir = multilabel_run
    best = run_dir.parents[2] / result.trainer.checkpoint_callback.best_model_path
    backend, facts = torch_backend(run_dir, best, threads=1)  # what the server's worker runs, without HTTP
    backend.load()
    x, y = result.datamodule.splits["test"].tensors
    answers = outputs_to_json(facts, backend(x[:20].numpy()))
    assert np.allclose(facts["thresholds"], run_thresholds(run_dir), atol=1e-4)
    truth = [[n for n, on in zip(facts["classes"], row, strict=True) if on] for row in y[:20].bool().tolist()]
    assert sum(a["labels"] == t for a, t in zip(answers, truth, strict=True)) >= 17


def test_mixup_trains_and_balanced_weights_are_each_labels_negatives_over_positives(in_tmp):
    result = cli("fit", *TINY, "--data.init_args.mixup_alpha=0.2", "--data.init_args.class_weights=balanced")
    y = result.datamodule.train_labels().numpy()
    expected = (len(y) - y.sum(0)) / y.sum(0)
    assert np.allclose(result.model.loss_fn.pos_weight.numpy(), expected, rtol=1e-5)
    assert np.isfinite(float(result.trainer.callback_metrics["train/loss_epoch"]))


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("--data.init_args.sampler=oversample", "data.sampler='oversample'"),
        ("--data.init_args.sampler=smote", "data.sampler='smote'"),
        ("--data.init_args.class_weights=[1.0, 2.0]", "data.class_weights has 2 values for 3 labels"),
        ("--model.init_args.thresholds=[0.5, 0.5]", "thresholds has 2 values for the 3 labels"),
        ("--model.init_args.thresholds=1.5", "must lie strictly between 0 and 1"),
    ],
)
def test_wrong_options_are_one_line_naming_the_key(option, named, in_tmp, capsys):
    assert named in usage_error(capsys, "fit", *TINY, option)


def test_a_threshold_file_of_other_labels_is_refused(in_tmp, capsys):
    (in_tmp / "thresholds.json").write_text(json.dumps({"even": 0.4, "odd": 0.5, "has_loop": 0.5}))
    line = usage_error(capsys, "fit", *TINY, f"--model.init_args.thresholds={in_tmp / 'thresholds.json'}")
    assert "thresholds.json" in line and "'odd'" in line and "greater_than_4" in line


def test_a_given_threshold_file_is_used_and_wins_over_tuning(in_tmp):
    (in_tmp / "t.json").write_text(json.dumps({"has_loop": 0.3, "even": 0.7, "greater_than_4": 0.6}))
    result = cli("fit", *TINY, f"--model.init_args.thresholds={in_tmp / 't.json'}")
    assert result.model.thresholds.tolist() == pytest.approx([0.7, 0.6, 0.3])


def test_a_label_row_of_the_wrong_width_is_one_line_naming_it():
    from proj.data import DataError, MultiLabelDigitsDataModule

    class Wide(MultiLabelDigitsDataModule):
        def load_arrays(self):
            x, y = super().load_arrays()
            return x, np.concatenate([y, y[:, :1]], 1)

    class NotBinary(MultiLabelDigitsDataModule):
        def load_arrays(self):
            x, y = super().load_arrays()
            y[17, 1] = 2
            return x, y

    with pytest.raises(DataError, match=r"a label row has 4 value\(s\) for the 3 labels"):
        Wide().setup()
    with pytest.raises(DataError, match=r"label row 17 is \[.*2\.0.*\]: each value must be 0 or 1"):
        NotBinary().setup()


def test_tuned_thresholds_maximise_each_labels_f1_on_the_grid():
    from sklearn.metrics import f1_score
    from torchmetrics.classification import MultilabelPrecisionRecallCurve

    from proj.models.multilabel import GRID, best_f1_thresholds

    g = torch.Generator().manual_seed(0)
    target = (torch.rand(500, 3, generator=g) < torch.tensor([0.2, 0.5, 0.8])).long()
    probs = (0.35 * target + 0.65 * torch.rand(500, 3, generator=g)).clamp(0, 1)
    curve = MultilabelPrecisionRecallCurve(3, thresholds=GRID)
    curve.update(probs, target)
    chosen = best_f1_thresholds(*curve.compute())
    for label in range(3):
        scores = [f1_score(target[:, label], probs[:, label] >= t, zero_division=0) for t in GRID.tolist()]
        assert f1_score(target[:, label], probs[:, label] >= chosen[label]) == pytest.approx(max(scores), abs=1e-6)


def test_splits_keep_each_label_combinations_share_and_pool_rare_ones():
    from proj.data.splits import split_indices

    rng = np.random.default_rng(0)
    y = np.concatenate([rng.random((1000, 3)) < [0.3, 0.5, 0.7], np.zeros((1000, 1))], 1).astype(np.float32)
    y[3, 3] = 1  # a combination of one row: pooled with the other rare ones, not an error
    splits = split_indices(y, stratify=True, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert sorted(np.concatenate(list(splits.values()))) == list(range(1000))
    combos, counts = np.unique(y, axis=0, return_counts=True)
    for combo, n in zip(combos, counts, strict=True):
        if n < 20:
            continue
        in_test = (y[splits["test"]] == combo).all(1).sum()
        assert abs(in_test - 0.2 * n) <= 1, (combo, n, in_test)


def test_thresholds_no_sample_reaches_do_not_win_and_ties_take_the_one_nearest_half():
    from torchmetrics.classification import MultilabelPrecisionRecallCurve

    from proj.models.multilabel import GRID, best_f1_thresholds

    target = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]] * 10)
    g = torch.Generator().manual_seed(0)  # separable: negatives below 0.3, positives in 0.6 .. 0.9
    probs = torch.where(target.bool(), 0.6 + 0.3 * torch.rand(40, 2, generator=g), 0.3 * torch.rand(40, 2, generator=g))
    curve = MultilabelPrecisionRecallCurve(2, thresholds=GRID)
    curve.update(probs, target)
    assert best_f1_thresholds(*curve.compute()).tolist() == pytest.approx([0.5, 0.5])


def test_a_csv_whose_target_lists_each_rows_labels_trains_and_predicts_them(in_tmp):
    from sklearn.datasets import load_digits

    from proj.data.digits import LABELS

    digits = load_digits()
    with open(in_tmp / "tags.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*(f"px{i}" for i in range(64)), "tags"])
        for row, digit in zip(digits.data, digits.target, strict=True):
            writer.writerow([*map(int, row), ";".join(n for n, values in LABELS.items() if digit in values)])
    data = ["--data=proj.data.CSVDataModule", "--data.init_args.path=tags.csv", "--data.init_args.target=tags"]
    data += ["--data.init_args.task=multilabel", "--data.init_args.predict_path=tags.csv"]
    model = ["--model=proj.models.MultiLabelClassifier", "--model.init_args.net=proj.nets.MLP"]
    result = cli("fit", *ARGS, *data, *model, "--trainer.max_epochs=4", "--trainer.enable_model_summary=false")
    assert result.datamodule.classes == ["even", "greater_than_4", "has_loop"]  # found in the column, sorted
    assert float(result.trainer.callback_metrics["test/f1_macro"]) > 0.9
    run_dir = in_tmp / "logs" / "digits_multilabel" / "version_0"
    cli("predict", "--config", str(run_dir / "config.yaml"), f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")
    with open(run_dir / "predict" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    truth = [";".join(n for n, values in LABELS.items() if d in values) for d in digits.target]
    assert rows[0]["id"] == "tags.csv:2" and sum(r["predicted"] == t for r, t in zip(rows, truth, strict=True)) > 1600
