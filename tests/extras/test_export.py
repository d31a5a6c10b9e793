"""The export extra: ONNX / TorchScript export with parity against PyTorch, int8, the regression's units, the
run's records carried beside the model."""

import json
import os
import re
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import CONFIGS, DEFAULT, QUICK, assert_refused_before_training, cli, help_text, usage_error

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("default_run")]  # shares the default run


@pytest.fixture(scope="module")
def trained(default_run):
    """The default run's directory and its best checkpoint (the session's one full fit)."""
    workdir, result = default_run
    best = workdir / result.trainer.checkpoint_callback.best_model_path  # absolute: tests run in their own folders
    return workdir, workdir / "logs" / "default" / "version_0", str(best)


@pytest.fixture(scope="module")
def onnx_export(trained, tmp_path_factory):
    _, run_dir, best = trained
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("export"))
    try:
        info = cli(
            "export",
            "--config",
            str(run_dir / "config.yaml"),
            f"--ckpt_path={best}",
            "--format=onnx",
            "--quantize=int8",
        )
    finally:
        os.chdir(cwd)
    return info, run_dir


def test_onnx_export_matches_pytorch_at_any_batch_size(onnx_export):
    info, run_dir = onnx_export
    assert info["max_abs_diff_vs_pytorch"] <= 1e-4
    meta = json.loads((run_dir / "export" / "model.json").read_text())
    assert meta["classes"] == [str(i) for i in range(10)] and meta["input_shape"] == ["batch", 1, 8, 8]
    session = ort.InferenceSession(str(run_dir / "export" / info["files"]["model"]))  # relative to model.json
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw = digits.images[:5, None].astype(np.float32)  # raw 0..16 pixels: normalisation is inside the model
    out = session.run(None, {"input": raw})[0]
    assert out.shape == (5, 10) and np.allclose(out.sum(1), 1.0, atol=1e-5)  # a batch size never exported
    assert (out.argmax(1) == digits.target[:5]).mean() >= 0.8


def test_int8_is_smaller_and_within_one_point(onnx_export):
    info, _ = onnx_export
    fp32, int8 = info["measured"]["onnx fp32"], info["measured"]["onnx int8"]
    print(f"fp32 {fp32}\nint8 {int8}")
    assert int8["size_kb"] < fp32["size_kb"]
    assert int8["test_accuracy"] >= fp32["test_accuracy"] - 0.01


def test_torchscript_export_reloads_and_matches(trained, tmp_path, monkeypatch):
    _, run_dir, best = trained
    monkeypatch.chdir(tmp_path)
    info = cli(
        "export",
        "--config",
        str(run_dir / "config.yaml"),
        f"--ckpt_path={best}",
        "--format=torchscript",
        f"--out={tmp_path}",
    )
    assert info["max_abs_diff_vs_pytorch"] <= 1e-4
    scripted = torch.jit.load(str(tmp_path / info["files"]["model"]))
    assert scripted(torch.rand(3, 1, 8, 8) * 16).shape == (3, 10)


def test_export_errors_name_the_problem(trained, tmp_path, monkeypatch, capsys):
    _, run_dir, best = trained
    monkeypatch.chdir(tmp_path)
    config = ["--config", str(run_dir / "config.yaml")]
    error = usage_error(capsys, "export", *config, f"--ckpt_path={best}", "--format=tflite")
    assert "format" in error and "tflite" in error and "onnx" in error and "torchscript" in error
    error = usage_error(capsys, "export", *config, f"--ckpt_path={tmp_path / 'missing.ckpt'}")
    assert re.search(r"--ckpt_path .*missing.ckpt does not exist", error)
    resnet = ["--config", str(CONFIGS / "model" / "resnet20.yaml")]
    error = usage_error(capsys, "export", *config, *resnet, f"--ckpt_path={best}", f"--out={tmp_path}")
    assert "does not match the model of the config (ResNet)" in error


@pytest.mark.xdist_group("tiny_run")
def test_model_json_paths_survive_moving_the_run_directory(tiny_run, in_tmp):
    # The session's tiny run (`fit --config DEFAULT QUICK --trainer.max_epochs=1 --test_after_fit=false`), where that
    # fit in in_tmp writes it.
    run = in_tmp / "logs" / "default" / "version_0"
    shutil.copytree(tiny_run, run, symlinks=True)
    cli("export", "--config", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        "--format=torchscript")  # fmt: skip
    moved = in_tmp / "elsewhere" / "run"
    moved.parent.mkdir()
    run.rename(moved)
    meta = json.loads((moved / "export" / "model.json").read_text())
    assert os.path.normpath(moved / "export" / meta["source_checkpoint"]) == str(moved / "checkpoints" / "last.ckpt")
    scripted = torch.jit.load(str(moved / "export" / meta["files"]["model"]))  # was an absolute path into run/
    assert scripted(torch.rand(2, 1, 8, 8) * 16).shape == (2, 10)


def test_export_of_a_run_without_its_training_data_is_one_line(in_tmp, capsys):
    """predict runs without the training CSV (the run's config.yaml and checkpoint suffice); export checks its file
    on the test split, so it needs the data: once a KeyError traceback."""
    (in_tmp / "t.csv").write_text("f1,f2,label\n" + "".join(f"{i},{i % 3},{'ab'[i % 2]}\n" for i in range(24)))
    (in_tmp / "new.csv").write_text("f1,f2\n1,2\n")
    csv = ["--data=proj.data.CSVDataModule", "--data.path=t.csv", "--data.target=label"]
    cli("fit", "--config", DEFAULT, *QUICK, *csv, "--model.init_args.net=proj.nets.MLP", "--test_after_fit=false")
    run = in_tmp / "logs" / "default" / "version_0"
    (in_tmp / "t.csv").unlink()
    error = usage_error(capsys, "export", "--config", str(run / "config.yaml"), "--data.predict_path=new.csv",
                        f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}")  # fmt: skip
    assert "data.path='t.csv' does not exist: export checks the exported model on the test split" in error, error
    assert not (run / "export").exists()


@pytest.mark.xdist_group("regression_run")  # shares the session's regression run
def test_onnx_export_bakes_in_the_target_scaling(diabetes_run, tmp_path, monkeypatch):
    result, run_dir, best = diabetes_run
    monkeypatch.chdir(tmp_path)
    info = cli("export", "--config", str(run_dir / "config.yaml"), f"--ckpt_path={best}", "--format=onnx")
    assert info["task"] == "regression" and info["target_names"] == ["progression"]
    assert info["max_abs_diff_vs_pytorch"] < 1e-3  # in the target's units (values up to ~300)
    session = ort.InferenceSession(str(run_dir / "export" / info["files"]["model"]), providers=["CPUExecutionProvider"])
    x, y = (t.numpy() for t in result.datamodule.splits["test"].tensors)
    values = session.run(None, {"input": x.astype(np.float32)})[0]
    rmse = float(np.sqrt(np.mean((values[:, 0] - y) ** 2)))
    measured = json.loads((run_dir / "export" / "model.json").read_text())["measured"]
    assert measured["onnx fp32"]["test_rmse"] == pytest.approx(rmse, abs=1e-3)
    assert 30 < rmse < 90  # not standardised units: the scaling is inside the file


@pytest.mark.xdist_group("tiny_run")
def test_the_export_folder_carries_the_runs_records(tiny_run, tmp_path, monkeypatch):
    """run.json and model_card.md, where the run has them (the run_record extra writes them), travel with the model."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    (run / "run.json").write_text('{"commands": []}\n')
    (run / "model_card.md").write_text("# the card\n")
    cli("export", "--config", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        "--format=torchscript")  # fmt: skip
    assert (run / "export" / "model_card.md").read_text() == "# the card\n"
    assert json.loads((run / "export" / "run.json").read_text()) == {"commands": []}  # as of the export


def test_help_shows_its_own_options(capsys):
    out = help_text(capsys, "export")
    assert all(option in out for option in ("--ckpt_path", "--format", "--quantize", "--out")), out


@pytest.mark.xdist_group("tiny_run")
@pytest.mark.parametrize(
    "case",
    [(
        "export_format",
        ["export", "--config={run}/config.yaml", "--ckpt_path={run}/checkpoints/best-00.ckpt", "--format=tflite"],
        "format",
    )],
    ids=lambda case: case[0],
)  # fmt: skip
def test_bad_input_is_one_clear_line_before_training(case, tiny_run, tmp_path, monkeypatch, capsys):
    assert_refused_before_training(case, tiny_run, tmp_path, monkeypatch, capsys)


@pytest.mark.xdist_group("serve")  # the session's exported text run, which test_serve serves
def test_a_text_model_exports_with_its_tokenizer_and_equals_predict_on_texts_of_several_lengths(text_export):
    from tokenizers import Tokenizer

    from proj.data.text import token_ids

    from helpers import NEW_TEXTS

    run_dir, _, predicted = text_export  # exported from the run's folder: its config.yaml names texts.csv there
    folder = run_dir / "export"
    info = json.loads((folder / "model.json").read_text())
    assert info["files"]["tokenizer"] == "tokenizer.json" and info["input_dtype"] == "int64"
    tokenizer = Tokenizer.from_file(str(folder / info["files"]["tokenizer"]))  # beside the model, as a client has it
    ids = token_ids(tokenizer, NEW_TEXTS, info["max_length"])
    assert len(ids[-1]) == info["max_length"] < len(tokenizer.encode(NEW_TEXTS[-1]).ids)  # truncated
    lengths = np.array([len(i) for i in ids])
    values = np.zeros((len(ids), lengths.max()), dtype=np.int64)
    for row, i in zip(values, ids, strict=True):
        row[: len(i)] = i
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"values": values, "lengths": lengths})[0]
    expected = np.array([[float(r["p_cats"]), float(r["p_dogs"])] for r in predicted])
    assert np.allclose(probabilities, expected, atol=1e-5)
    assert [info["classes"][k] for k in probabilities.argmax(1)] == [r["predicted"] for r in predicted]
