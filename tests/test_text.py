"""Text classification, first part: a WordPiece tokenizer trained on the training split, token ids padded per batch
(integers end to end), a bag-of-embeddings net against TF-IDF + logistic regression on the same split of real text
(docstrings of the standard library labelled by package), the tokenizer in the checkpoint, and bad text input
refused in one line before training."""

import csv

import numpy as np
import pytest
import torch

from conftest import CONFIGS, DEFAULT, cli, trained, usage_error
from helpers import predict_rows

EXPERIMENT = str(CONFIGS / "experiment" / "stdlib_docstrings.yaml")
ARGS = ["--config", DEFAULT, "--config", EXPERIMENT, "--trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def docstrings_run(tmp_path_factory):
    return trained(tmp_path_factory, "text", *ARGS, "--trainer.enable_model_summary=false")


@pytest.mark.slow
def test_the_bag_of_embeddings_comes_within_003_of_tfidf_logistic_regression_on_the_same_split(docstrings_run):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    result, _ = docstrings_run
    dm = result.datamodule
    texts, labels, _ = dm.texts_and_labels()
    train, test = dm.indices["train"].numpy(), dm.indices["test"].numpy()
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
    tfidf = LogisticRegression(max_iter=2000, C=10).fit(
        vectorizer.fit_transform([texts[i] for i in train]), labels[train]
    )
    baseline = f1_score(labels[test], tfidf.predict(vectorizer.transform([texts[i] for i in test])), average="macro")
    f1 = float(result.trainer.callback_metrics["test/f1"])
    print(f"standard-library docstrings, test macro F1: TextEmbeddingBag {f1:.4f}, TF-IDF + LR {baseline:.4f}")
    assert f1 >= baseline - 0.03


@pytest.mark.slow
def test_the_tokenizer_is_trained_on_the_training_split_and_travels_in_the_checkpoint(docstrings_run):
    from tokenizers import Tokenizer

    result, run_dir = docstrings_run
    dm = result.datamodule
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    state = next(v for k, v in saved.items() if isinstance(v, dict) and "tokenizer" in v)
    tokenizer = Tokenizer.from_str(state["tokenizer"])
    assert tokenizer.get_vocab_size() == dm.input_shape[0] == result.model.hparams.input_shape[0]
    texts, _, _ = dm.texts_and_labels()
    sample = texts[int(dm.indices["test"][0])]
    assert tokenizer.encode(sample).ids[: dm.max_length] == dm.splits["test"][0][0].tolist()
    batch = next(iter(dm.test_dataloader()))["input"]
    assert batch.values.dtype == torch.int64 and (batch.values[~batch.mask] == 0).all()  # ids, [PAD] = 0


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


GOOD = [[f"a sentence about {topic} number {i}", topic] for i in range(20) for topic in ("cats", "dogs")]


@pytest.mark.parametrize(
    ("rows", "option", "named"),
    [
        ([*GOOD, ["   ", "cats"]], None, "texts.csv:42: the text is empty"),
        ([*GOOD, ["a text without a label", ""]], None, "texts.csv:42: the label column 'label' is empty"),
        (GOOD, "--data.init_args.text=body", "data.text='body' is not a column of"),
        (GOOD, "--data.init_args.max_length=0", "data.max_length=0 must be at least 1"),
        (GOOD, "--data.init_args.jitter=0.1", "data.jitter=0.1 augments feature values"),
    ],
    ids=["empty text", "missing label", "no such column", "max_length 0", "jitter"],
)
def test_bad_text_input_is_one_line_naming_the_row_or_key(rows, option, named, in_tmp, capsys):
    write_csv(in_tmp / "texts.csv", rows)
    data = ["--data=proj.data.TextCSVDataModule", f"--data.init_args.path={in_tmp / 'texts.csv'}"]
    line = usage_error(capsys, "fit", *ARGS, *data, *([option] if option else []))
    assert named in line, line


def test_a_csv_of_texts_trains_both_nets_and_keeps_ids_integer(in_tmp):
    write_csv(in_tmp / "texts.csv", GOOD * 4)
    data = ["--data=proj.data.TextCSVDataModule", "--data.init_args.path=texts.csv", "--data.init_args.vocab_size=50"]
    short = ["--trainer.max_epochs=20", "--trainer.enable_model_summary=false"]  # past the 50 warm-up steps
    for net in ("TextEmbeddingBag", "TextTransformer"):
        result = cli("fit", *ARGS, *data, *short, f"--model.init_args.net=proj.nets.{net}")
        assert result.datamodule.classes == ["cats", "dogs"]
        assert float(result.trainer.callback_metrics["test/acc"]) > 0.9, net
    assert np.all(np.diff(result.datamodule.splits["train"].offsets.numpy()) >= 1)


@pytest.mark.slow
def test_predict_from_the_runs_config_uses_the_runs_tokenizer(docstrings_run):
    result, run_dir = docstrings_run
    assert (run_dir / "tokenizer.json").is_file()  # named by the run's config.yaml: a new one would differ
    rows = predict_rows(run_dir, result.trainer.checkpoint_callback.best_model_path)
    labels = result.datamodule.splits["test"].labels.tolist()
    right = sum(r["predicted"] == result.datamodule.classes[y] for r, y in zip(rows, labels, strict=True))
    assert right / len(rows) == pytest.approx(float(result.trainer.callback_metrics["test/acc"]), abs=1e-6)
