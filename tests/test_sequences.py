"""Variable-length sequences through the core: recorded speech (UEA JapaneseVowels, 7 to 29 frames of 12
coefficients) trained against a scikit-learn baseline on the same split, padded batches with lengths and masks,
standardisation over real steps only, the sequence augmentations, predict / export / serve / cv / tune /
init_from, and bad sequences refused in one line naming the sample."""

import json

import numpy as np
import pytest
import torch

from conftest import CONFIGS, DEFAULT, SHORT, cli, trained, usage_error
from helpers import predict_rows

EXPERIMENT = str(CONFIGS / "experiment" / "japanese_vowels.yaml")
ARGS = ["--config", DEFAULT, "--config", EXPERIMENT, "--trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def vowels_run(tmp_path_factory):
    """The experiment as written: (result, run directory)."""
    return trained(tmp_path_factory, "vowels", *ARGS, "--trainer.enable_model_summary=false")


def summary_features(split) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence: each coefficient's mean and std over its frames, and its last frame."""
    samples = (split[i][0] for i in range(len(split)))
    rows = [np.concatenate([x.mean(0), x.std(0, correction=0), x[-1]]) for x in samples]
    return np.array(rows), split.labels.numpy()


@pytest.mark.xdist_group("vowels_run")  # its module fixture is trained once, on one worker
@pytest.mark.slow
def test_speech_beats_logistic_regression_on_summary_features_of_the_same_split(vowels_run):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    result, _ = vowels_run
    splits = result.datamodule.splits
    assert (len(splits["train"]) + len(splits["val"]), len(splits["test"])) == (270, 370)  # the official split
    (x, y), (x_test, y_test) = summary_features(splits["train"]), summary_features(splits["test"])
    baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y).score(x_test, y_test)
    acc = float(result.trainer.callback_metrics["test/acc"])
    print(f"JapaneseVowels test accuracy: {acc:.4f}; logistic regression on summary features {baseline:.4f}")
    assert acc >= 0.97 and acc > baseline


def test_standardisation_counts_real_steps_only_and_padding_stays_zero():
    from proj.data import JapaneseVowelsDataModule

    dm = JapaneseVowelsDataModule(batch_size=16)
    dm.setup()
    train = dm.splits["train"]
    steps = np.concatenate([train[i][0].numpy() for i in range(len(train))]).astype(np.float64)
    assert np.allclose(dm.stats["mean"], steps.mean(0), atol=1e-6) and np.allclose(dm.stats["std"], steps.std(0))
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    x = batch["input"]
    assert x.values.shape == (16, int(x.lengths.max()), 12)
    assert torch.equal(x.mask, torch.arange(x.values.shape[1])[None] < x.lengths[:, None])
    assert torch.equal(x.lengths, dm.splits["val"].lengths[:16])
    assert (x.values[~x.mask] == 0).all() and x.values[x.mask].abs().sum(-1).min() > 0


def test_augmentations_keep_padding_zero_crop_within_bounds_and_repeat_with_the_seed():
    from proj.data.sequence_augment import SequenceAugment
    from proj.data.sequences import Padded
    from proj.nets.sequence import padding_mask

    lengths = torch.tensor([7, 29, 12, 1])
    mask = padding_mask(lengths, 29)
    values = torch.randn(4, 29, 12, generator=torch.Generator().manual_seed(0)) * mask[..., None]
    augment = SequenceAugment(jitter=0.1, scaling=0.1, time_mask=0.3, crop=0.6)

    def run(seed: int) -> Padded:
        torch.manual_seed(seed)
        return augment(Padded(values, lengths, padding_mask(lengths, 29)))

    out = run(1)
    assert ((out.lengths >= (0.6 * lengths).ceil()) & (out.lengths <= lengths)).all()
    assert (out.values[~out.mask] == 0).all()
    assert torch.equal(out.values, run(1).values) and not torch.equal(out.values, run(2).values)
    off = SequenceAugment()
    assert not off.active and torch.equal(off(Padded(values, lengths, padding_mask(lengths, 29))).values, values)


@pytest.mark.xdist_group("vowels_run")  # its module fixture is trained once, on one worker
@pytest.mark.slow
def test_predictions_name_each_utterance_and_its_speaker(vowels_run):
    result, run_dir = vowels_run
    rows = predict_rows(run_dir, result.trainer.checkpoint_callback.best_model_path)
    labels = result.datamodule.splits["test"].labels.tolist()
    assert len(rows) == 370 and [r["id"] for r in rows[:2]] == ["test_0", "test_1"]
    right = sum(r["predicted"] == result.datamodule.classes[y] for r, y in zip(rows, labels, strict=True))
    assert right / 370 == pytest.approx(float(result.trainer.callback_metrics["test/acc"]), abs=1e-6)


@pytest.mark.xdist_group("vowels_run")  # its module fixture is trained once, on one worker
@pytest.mark.slow
def test_the_onnx_export_equals_pytorch_on_sequences_of_three_lengths(vowels_run, tmp_path, monkeypatch):
    pytest.importorskip("proj.extras.export")  # an extra: its part goes with it
    from proj.extras.export.formats import SequenceInputs, runner
    from proj.models.deployable import deployable

    result, run_dir = vowels_run
    monkeypatch.chdir(run_dir.parents[2])
    best = result.trainer.checkpoint_callback.best_model_path
    cli("export", "--config", str(run_dir / "config.yaml"), f"--ckpt_path={best}", f"--out={tmp_path}")
    assert json.loads((tmp_path / "model.json").read_text())["input_shape"] == ["batch", "time", 12]
    module, run = deployable(result.model, result.datamodule), runner(tmp_path / "model.onnx", "onnx")
    test = result.datamodule.splits["test"]
    raw = [test[i][0] for i in range(8)]
    for length in (3, 11, 26):  # dynamic time and batch axes: 5, 6 and 7 utterances cut to each length
        cut = [r[:length] for r in raw[: length % 7 + 2]]
        lengths = torch.tensor([len(c) for c in cut])
        values = torch.nn.utils.rnn.pad_sequence(cut, batch_first=True)
        onnx = run(SequenceInputs(values.numpy(), lengths.numpy()))
        with torch.no_grad():
            assert np.abs(onnx - module(values, lengths).numpy()).max() < 1e-4, length


@pytest.mark.xdist_group("vowels_run")  # its module fixture is trained once, on one worker
@pytest.mark.slow
def test_serve_takes_lists_of_frames_and_answers_speakers(vowels_run):
    pytest.importorskip("proj.extras.serve")
    from proj.extras.serve.backends import outputs_to_json
    from proj.extras.serve.command import torch_backend
    from proj.extras.serve.requests import BadRequest, InputSpec

    result, run_dir = vowels_run
    best = run_dir.parents[2] / result.trainer.checkpoint_callback.best_model_path
    backend, facts = torch_backend(run_dir, best, threads=1)  # the server's worker, without HTTP
    backend.load()
    spec, test = InputSpec.from_facts(facts), result.datamodule.splits["test"]
    frames = [test[i][0] for i in range(2)]
    answers = outputs_to_json(facts, backend(spec.decode({"inputs": [frames[0].tolist(), frames[1][:9].tolist()]})))
    assert len(answers) == 2 and answers[0]["class"] == result.datamodule.classes[int(test.labels[0])]
    with pytest.raises(BadRequest, match=r"inputs\[1\]: frames of shape \[11\]; expected \[12\]"):
        spec.decode({"inputs": [frames[0].tolist(), frames[1][:, :11].tolist()]})
    with pytest.raises(BadRequest, match=r"inputs\[0\]: expected a non-empty list of frames"):
        spec.decode({"inputs": [[]]})


@pytest.mark.xdist_group("vowels_run")  # its module fixture is trained once, on one worker
@pytest.mark.slow
def test_init_from_the_speech_run_loads_every_weight(vowels_run, in_tmp):
    result, run_dir = vowels_run
    best = run_dir.parents[2] / result.trainer.checkpoint_callback.best_model_path  # relative to its workdir
    start = cli("fit", *ARGS, *SHORT, "--trainer.max_epochs=1", f"--init_from={best}")
    report = json.loads((in_tmp / start.trainer.log_dir / "init_from.json").read_text())
    assert report["loaded"] and not report.get("skipped")


@pytest.mark.slow
def test_cv_and_tune_run_on_sequences(in_tmp):
    pytest.importorskip("proj.extras.cv")
    pytest.importorskip("proj.extras.tune")
    quick = ["--trainer.max_epochs=15"]  # past the 50 warm-up steps: each fold trains on 135 utterances
    summary = cli("cv", *ARGS, *SHORT[3:], *quick, "--folds", "2")
    assert len(summary["folds"]) == 2 and summary["mean"]["test/acc"] > 0.6, summary["mean"]
    space = {
        "model.init_args.optim.stages.0.optimizer.init_args.lr": {"type": "float", "low": 1e-3, "high": 1e-2},
        "model.init_args.net.init_args.d_model": {"type": "categorical", "choices": [32, 64]},
    }
    search = {"tune": {"study_name": "vowels_hpo", "metric": "val/acc", "n_trials": 2, "space": space}}
    (in_tmp / "search.yaml").write_text(json.dumps(search))  # JSON is YAML
    cli("tune", *ARGS, "--config", str(CONFIGS / "hpo" / "optuna.yaml"), "--config", "search.yaml", *SHORT)
    best = (in_tmp / "logs" / "vowels_hpo" / "best_config.yaml").read_text()
    assert "SequenceTransformer" in best and "JapaneseVowelsDataModule" in best


LENGTHS = [5, 6, 7, 4] * 5


def bad_file(case: str) -> dict[str, np.ndarray]:
    """A sequence file of 20 samples of 12 features, broken as `case` says."""
    lengths = np.array([5, 6, 0, 4] * 5 if case == "empty" else LENGTHS)
    arrays = {"steps": np.ones((lengths.sum(), 12), np.float32), "lengths": lengths, "labels": np.arange(20) % 2}
    if case == "nan":
        arrays["steps"][5 + 3, 4] = np.nan  # sample 1, step 3
    if case == "short":
        arrays["steps"] = arrays["steps"][:-3]
    if case == "labels":
        arrays["labels"] = np.arange(21) % 2
    return arrays


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("empty", "sequence '2' has no time steps (length 0)"),
        ("nan", "sequence '1' has NaN or infinite values at step 3"),
        ("short", "lengths add up to 110 steps, but steps holds 107 rows"),
        ("labels", "21 labels for 20 sequences"),
    ],
)
def test_bad_sequences_are_one_line_naming_the_sample_before_training(case, named, in_tmp, capsys):
    np.savez(in_tmp / "seq.npz", **bad_file(case))
    data = ["--data=proj.data.SequenceFileDataModule", f"--data.init_args.path={in_tmp / 'seq.npz'}"]
    line = usage_error(capsys, "fit", *ARGS, *data, "--trainer.max_epochs=1")
    assert named in line
    assert not (in_tmp / "logs").exists() or not list((in_tmp / "logs").rglob("*.ckpt"))


def test_a_sequence_file_trains_and_predicts_with_its_ids(in_tmp):
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 20, 120)
    labels = np.arange(120) % 2  # class 1: a rising ramp in feature 0, class 0: a falling one, plus noise
    seqs = [
        np.stack([np.linspace(0, 1, n) * (1 if y else -1), rng.normal(size=n)], 1)
        for n, y in zip(lengths, labels, strict=True)
    ]
    ids = [f"utt{i}" for i in range(120)]
    np.savez(
        in_tmp / "s.npz", steps=np.concatenate(seqs), lengths=lengths, labels=labels, classes=["down", "up"], ids=ids
    )
    data = ["--data=proj.data.SequenceFileDataModule", "--data.init_args.path=s.npz", "--trainer.max_epochs=8"]
    result = cli("fit", *ARGS, *data, "--model.init_args.net=proj.nets.SequenceCNN")
    assert result.datamodule.classes == ["down", "up"] and float(result.trainer.callback_metrics["test/acc"]) > 0.9
    assert result.datamodule.sample_ids("test")[0].startswith("utt")


def test_mixed_feature_counts_name_both_samples():
    from proj.data import DataError
    from proj.data.sequences import Sequences

    arrays = [np.zeros((4, 12)), np.zeros((6, 12)), np.zeros((3, 11))]
    with pytest.raises(DataError, match=r"sequence 'c' has 11 features per step, sequence 'a' 12"):
        Sequences.from_arrays(arrays, [0, 1, 0], ["a", "b", "c"])


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("--data.init_args.mixup_alpha=0.2", "data.mixup_alpha=0.2"),
        ("--data.init_args.sampler=smote", "data.sampler='smote'"),
        ("--data.init_args.crop=0", "data.crop=0"),
    ],
)
def test_options_that_do_not_fit_sequences_are_refused(option, named, in_tmp, capsys):
    assert named in usage_error(capsys, "fit", *ARGS, option)


def test_activation_checkpointing_of_a_net_without_blocks_is_refused_naming_it(in_tmp, capsys):
    gru = ["--model.init_args.net=proj.nets.SequenceGRU", "--model.init_args.activation_checkpointing=true"]
    assert "the net SequenceGRU has no blocks in `net.body`" in usage_error(capsys, "fit", *ARGS, *gru)
