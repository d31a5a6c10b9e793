"""Text classification: a BPE tokenizer trained on the training split, token ids padded per batch (integers end
to end), a bag-of-embeddings net against TF-IDF + logistic regression on the same split of real text (docstrings of
the standard library labelled by package), the tokenizer in the checkpoint, predict on a file of new texts (also
without the training file), multi-label texts from Parquet, the text augmentations (what each edit does, seeded by
epoch and place, the same again when an epoch is resumed), a pretrained text net of the same tokenizer, and bad
text input refused in one line before training."""

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from proj.data.text_augment import WORDNET, TextAugment, neighbours, read_wordnet, typo

from conftest import CONFIGS, DEFAULT, cli, cli_in, trained, usage_error
from helpers import predict_rows

EXPERIMENT = str(CONFIGS / "experiment" / "stdlib_docstrings.yaml")
ARGS = ["--config", DEFAULT, "--config", EXPERIMENT, "--trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def docstrings_run(tmp_path_factory):
    return trained(tmp_path_factory, "text", *ARGS, "--trainer.enable_model_summary=false")


@pytest.mark.xdist_group("docstrings_run")  # its module fixture is trained once, on one worker
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


@pytest.mark.xdist_group("docstrings_run")  # its module fixture is trained once, on one worker
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
        ([*GOOD, ["a text without a label", ""]], None, "texts.csv:42: the target column 'label' is missing"),
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


@pytest.fixture(scope="module")
def topics_run(tmp_path_factory):
    """A tiny run on a CSV of two topics, its directory holding the CSV: (result, run directory)."""
    workdir = tmp_path_factory.mktemp("topics")
    write_csv(workdir / "texts.csv", GOOD * 4)
    data = ["--data=proj.data.TextCSVDataModule", "--data.init_args.path=texts.csv", "--data.init_args.vocab_size=50"]
    result = cli_in(workdir, "fit", *ARGS, *data, *TOPICS)
    return result, workdir / result.trainer.log_dir


TOPICS = ["--trainer.max_epochs=20", "--trainer.enable_model_summary=false"]  # past the 50 warm-up steps
NEW = ["the cats sleep", "a sentence about dogs number 99", "dogs " * 300]  # the last one past max_length


@pytest.mark.xdist_group("topics_run")  # its module fixture is trained once, on one worker
def test_predict_on_a_file_of_new_texts_also_without_the_training_file(topics_run):
    result, run_dir = topics_run
    assert float(result.trainer.callback_metrics["test/acc"]) > 0.9
    workdir = run_dir.parents[2]
    with open(workdir / "new.csv", "w", newline="") as f:
        csv.writer(f).writerows([["text"], *[[t] for t in NEW]])
    ckpt = result.trainer.checkpoint_callback.best_model_path
    predicted = predict_rows(run_dir, ckpt, "--data.init_args.predict_path=new.csv")
    assert [r["predicted"] for r in predicted] == ["cats", "dogs", "dogs"]
    shutil.move(workdir / "texts.csv", workdir / "moved.csv")  # the run's config.yaml names classes and tokenizer
    try:
        again = predict_rows(run_dir, ckpt, "--data.init_args.predict_path=new.csv")
    finally:
        shutil.move(workdir / "moved.csv", workdir / "texts.csv")
    assert again == predicted


@pytest.mark.xdist_group("topics_run")  # its module fixture is trained once, on one worker
def test_a_text_net_starts_from_a_pretrained_one_of_the_same_tokenizer_and_refuses_another(topics_run, capsys):
    result, run_dir = topics_run
    workdir = run_dir.parents[2]
    ckpt = str(workdir / result.trainer.checkpoint_callback.best_model_path)
    data = ["--data=proj.data.TextCSVDataModule", "--data.init_args.path=texts.csv"]
    other = workdir / "other_tokenizer.json"
    from proj.data.text import train_tokenizer

    train_tokenizer(["entirely different words here"] * 5, 50).save(str(other))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        line = usage_error(capsys, "fit", *ARGS, *data, f"--init_from={ckpt}")
        assert "--init_from" in line and "data.tokenizer_path=<that run>/tokenizer.json" in line, line
        line = usage_error(
            capsys, "fit", *ARGS, *data, f"--data.init_args.tokenizer_path={other}", f"--init_from={ckpt}"
        )
        assert "holds another vocabulary than the checkpoint's" in line, line
    tokenizer = f"--data.init_args.tokenizer_path={run_dir / 'tokenizer.json'}"
    tuned = cli_in(workdir, "fit", *ARGS, *data, tokenizer, f"--init_from={ckpt}", "--trainer.max_epochs=1")
    assert float(tuned.trainer.callback_metrics["test/acc"]) > 0.9  # one epoch: the pretrained weights did it


def test_a_parquet_file_of_tagged_texts_trains_a_multilabel_model(in_tmp):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    topics = ["cats", "dogs", "birds"]
    rows = [
        (f"a note on {a} and {b} number {i}", f"{a};{b}") for i in range(30) for a in topics for b in topics if a < b
    ]
    rows += [(f"a note on {a} alone number {i}", a) for i in range(30) for a in topics]
    pq.write_table(pa.table({"text": [r[0] for r in rows], "tags": [r[1] for r in rows]}), "tags.parquet")
    data = ["--data=proj.data.TextCSVDataModule", "--data.init_args.path=tags.parquet", "--data.init_args.target=tags"]
    options = [
        "--data.init_args.task=multilabel",
        "--data.init_args.vocab_size=60",
        "--model=proj.models.MultiLabelClassifier",
    ]
    result = cli("fit", *ARGS, *data, *options, "--model.init_args.net=proj.nets.TextEmbeddingBag", *TOPICS)
    assert result.datamodule.classes == sorted(topics)
    assert float(result.trainer.callback_metrics["test/f1_macro"]) > 0.9


def test_a_non_string_text_cell_of_a_parquet_file_is_one_line_naming_its_row(in_tmp, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    texts = [f"text number {i}" for i in range(20)] + [None]
    pq.write_table(pa.table({"text": texts, "label": ["a", "b"] * 10 + ["a"]}), "texts.parquet")
    line = usage_error(
        capsys, "fit", *ARGS, "--data=proj.data.TextCSVDataModule", "--data.init_args.path=texts.parquet"
    )
    assert "texts.parquet:22: the text is None, not a string" in line, line


def test_typos_are_one_keyboard_edit_and_word_edits_keep_the_texts_words():
    rng = np.random.default_rng(0)
    for word in ["handler", "queue", "x"] * 100:
        edited = typo(word, rng)
        if len(edited) == len(word) + 1:  # a letter inserted before its neighbour on the keyboard
            i = next(i for i in range(len(word)) if edited[i] != word[i]) if edited[:-1] != word else len(word) - 1
            assert edited[:i] + edited[i + 1 :] == word and edited[i] in neighbours(word[min(i, len(word) - 1)])
        elif len(edited) == len(word) - 1:
            assert any(word[:i] + word[i + 1 :] == edited for i in range(len(word)))
        else:
            changed = [i for i in range(len(word)) if edited[i] != word[i]]
            swapped = len(changed) == 2 and changed[1] == changed[0] + 1 and sorted(edited) == sorted(word)
            replaced = len(changed) == 1 and edited[changed[0]] in neighbours(word[changed[0]])
            assert swapped or replaced, (word, edited)
    text = "one two three four five six seven eight"
    words = text.split()
    for seed in range(20):
        kept = TextAugment(word_delete=0.5)(text, np.random.default_rng(seed)).split()
        assert kept and [w for w in words if w in kept] == kept  # in order, none new
        assert sorted(TextAugment(word_swap=0.5)(text, np.random.default_rng(seed)).split()) == sorted(words)
        more = Counter(TextAugment(word_insert=0.3)(text, np.random.default_rng(seed)).split())
        assert set(more) == set(words) and all(more[w] >= 1 for w in words)
    augment = TextAugment(0.1, 0.1, 0.1, 0.1)
    assert augment(text, np.random.default_rng(7)) == augment(text, np.random.default_rng(7))


@pytest.mark.skipif(not Path(WORDNET, "data.noun").is_file(), reason="WordNet is not installed (wordnet-base)")
def test_synonyms_come_from_wordnet():
    thesaurus = read_wordnet(WORDNET)
    assert {"fast", "speedy"} <= set(thesaurus["quick"])
    rng = np.random.default_rng(0)
    replaced = [TextAugment(synonyms=0.99)("quick", rng) for _ in range(20)]
    assert set(replaced) <= set(thesaurus["quick"]) | {"quick"} and len(set(replaced)) > 3


def test_synonyms_without_wordnet_is_one_line_saying_what_to_install(in_tmp, capsys):
    write_csv(in_tmp / "texts.csv", GOOD)
    data = ["--data=proj.data.TextCSVDataModule", "--data.init_args.path=texts.csv", "--data.init_args.synonyms=0.1"]
    line = usage_error(capsys, "fit", *ARGS, *data, f"--data.init_args.wordnet={in_tmp / 'none'}")
    assert "data.synonyms needs WordNet" in line and "apt-get install wordnet-base" in line, line


def test_augmented_batches_are_seeded_by_epoch_and_place_and_resume_in_the_middle_of_an_epoch(in_tmp):
    from proj.data import TextCSVDataModule

    write_csv(in_tmp / "texts.csv", GOOD * 2)
    dm = TextCSVDataModule(path="texts.csv", vocab_size=50, batch_size=8, word_delete=0.3, typos=0.3, word_swap=0.2)
    dm.setup()

    def batches(epoch=0, resume=None):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        if resume is not None:
            loader.load_state_dict(resume)
        return [(b["input"].values, b["target"]) for b in loader]

    def equal(a, b):
        return len(a) == len(b) and all(
            torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=False)
        )

    first = batches()
    assert equal(first, batches()) and not equal(first, batches(epoch=1))
    assert equal(first[3:], batches(resume={"epoch": 0, "batches": 3}))  # the rest of the epoch, as it was
    dm.hparams.num_workers = 2
    assert equal(first, batches())  # whichever process reads a sample draws its edits
    train = dm.splits["train"]
    edited = [i for i in range(len(train)) if not torch.equal(train[(i, (0, 0, i))][0], train[i][0])]
    assert len(edited) > len(train) // 2  # augmented, while a plain index reads the unedited tokens
    assert isinstance(dm.splits["val"], type(train.clean))  # validation is never augmented


@pytest.mark.xdist_group("topics_run")  # its module fixture is trained once, on one worker
def test_a_csv_of_texts_trains_both_nets_and_keeps_ids_integer(topics_run):
    result, run_dir = topics_run  # TextEmbeddingBag
    assert result.datamodule.classes == ["cats", "dogs"]
    assert np.all(np.diff(result.datamodule.splits["train"].offsets.numpy()) >= 1)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(run_dir.parents[2])
        config = ["--config", str(run_dir / "config.yaml"), "--model.init_args.net=proj.nets.TextTransformer"]
        transformer = cli("fit", *config)
    assert float(transformer.trainer.callback_metrics["test/acc"]) > 0.9


@pytest.mark.xdist_group("docstrings_run")  # its module fixture is trained once, on one worker
@pytest.mark.slow
def test_predict_from_the_runs_config_uses_the_runs_tokenizer(docstrings_run):
    result, run_dir = docstrings_run
    assert (run_dir / "tokenizer.json").is_file()  # named by the run's config.yaml: a new one would differ
    rows = predict_rows(run_dir, result.trainer.checkpoint_callback.best_model_path)
    labels = result.datamodule.splits["test"].labels.tolist()
    right = sum(r["predicted"] == result.datamodule.classes[y] for r, y in zip(rows, labels, strict=True))
    assert right / len(rows) == pytest.approx(float(result.trainer.callback_metrics["test/acc"]), abs=1e-6)


@pytest.mark.xdist_group("docstrings_run")  # its module fixture is trained once, on one worker
@pytest.mark.slow
def test_the_misclassified_validation_texts_are_a_table_in_tensorboards_text_tab(docstrings_run):
    pytest.importorskip("proj.extras.tensorboard_views")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, run_dir = docstrings_run
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0}).Reload()
    last = events.Tensors("val/misclassified_texts/text_summary")[-1]  # the end of fit: the last epoch's weights
    lines = last.tensor_proto.string_val[0].decode().splitlines()
    assert lines[0] == "id | true | predicted | probability | text"
    rows = [line.split(" | ") for line in lines[2:]]
    model, dm = result.model, result.datamodule
    model.load_state_dict(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"])
    wrong = {}
    with torch.no_grad():  # the validation batches: the same sums in the same order, the same near-ties
        outputs = [(model.eval()(b["input"]).argmax(1), b["target"]) for b in dm.val_dataloader()]
    predicted, target = (torch.cat(t) for t in zip(*outputs, strict=True))
    ids, names = dm.sample_ids("val"), dm.classes
    for i in torch.nonzero(predicted != target).flatten().tolist():
        wrong[ids[i]] = (names[int(target[i])], names[int(predicted[i])])
    assert 0 < len(rows) == min(20, len(wrong))
    assert all(wrong[row[0]] == (row[1], row[2]) for row in rows)
    sure = [float(row[3]) for row in rows]
    assert sure == sorted(sure, reverse=True)  # the most confident mistakes first


@pytest.mark.slow
def test_cross_validation_and_a_search_run_on_texts(in_tmp):
    pytest.importorskip("proj.extras.cv")
    pytest.importorskip("proj.extras.tune")
    write_csv(in_tmp / "texts.csv", GOOD * 8)  # a fold's training split: past the 50 warm-up steps in 20 epochs
    data = ["--data=proj.data.TextCSVDataModule", "--data.init_args.path=texts.csv", "--data.init_args.vocab_size=50"]
    short = ["--trainer.max_epochs=20", "--trainer.enable_model_summary=false"]
    summary = cli("cv", *ARGS, *data, *short, "--folds", "2")
    assert len(summary["folds"]) == 2 and summary["mean"]["test/acc"] > 0.8
    search = ["--config", str(CONFIGS / "hpo" / "text_optuna.yaml"), "--tune.n_trials=2", "--tune.pruner=none"]
    study = cli("tune", *ARGS, *data, *search, *short, "--data.init_args.vocab_size=50")
    assert len(study.trials) == 2 and study.best_value > 0.8
    vocab = [t.params["data.init_args.vocab_size"] for t in study.trials]
    assert all(v in (2000, 4000, 8000) for v in vocab)  # the search's choices reached the data module


@pytest.mark.parametrize("subword", ["wordpiece", "bpe"])
def test_both_tokenizers_learn_the_training_words_within_the_vocabulary_size(subword):
    from proj.data.text import SPECIAL, token_ids, train_tokenizer

    tokenizer = train_tokenizer([text for text, _ in GOOD], 60, subword)
    assert tokenizer.get_vocab_size() <= 60 and [tokenizer.token_to_id(t) for t in SPECIAL] == [0, 1]
    ids = token_ids(tokenizer, ["A sentence about cats", "zebra"], 3)
    assert len(ids[0]) == 3 and 1 not in ids[0]  # known words, lower-cased, truncated to max_length
    assert tokenizer.decode(token_ids(tokenizer, ["about dogs"], 10)[0]).replace(" ", "") == "aboutdogs"
