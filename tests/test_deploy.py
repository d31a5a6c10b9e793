"""Deployment and compression: predictions CSV, ONNX / TorchScript export with parity, int8, pruning."""

import csv
import json
import os
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from conftest import CONFIGS, DEFAULT, QUICK, cli, usage_error

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("default_run")]  # shares the default run


@pytest.fixture(scope="module")
def trained(default_run):
    """The default run's directory and its best checkpoint (the session's one full fit)."""
    workdir, result = default_run
    best = workdir / result.trainer.checkpoint_callback.best_model_path  # absolute: tests run in their own folders
    return workdir, workdir / "logs" / "default" / "version_0", str(best)


def test_predict_writes_one_row_per_input_with_the_test_accuracy(trained, tmp_path, monkeypatch):
    _, run_dir, best = trained
    monkeypatch.chdir(tmp_path)  # predict and test start run directories of their own: not in the shared run
    args = ["--config", str(run_dir / "config.yaml"), f"--ckpt_path={best}", "--trainer.enable_progress_bar=false"]
    cli("predict", *args)
    with open(run_dir / "predict" / "predictions.csv") as f:  # in the run's directory, not a new version
        rows = list(csv.DictReader(f))
    assert len(rows) == 360  # the test split
    probabilities = np.array([[float(r[f"p_{c}"]) for c in range(10)] for r in rows])
    assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)
    # ids are the samples' indices in scikit-learn's digits: check the labels through them
    from sklearn.datasets import load_digits

    target = load_digits().target
    accuracy = np.mean([int(r["predicted"]) == target[int(r["id"])] for r in rows])
    tested = cli("test", *args)
    assert accuracy == pytest.approx(float(tested.trainer.callback_metrics["test/acc"]), abs=1e-6)


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


def test_pruned_fit_exports_the_configured_sparsity_and_keeps_accuracy(in_tmp, trained):
    _, _, _ = trained
    pruned = cli(
        "fit",
        "--config",
        DEFAULT,
        "--config",
        str(CONFIGS / "callbacks" / "pruning.yaml"),
        "--trainer.enable_progress_bar=false",
    )
    accuracy = float(pruned.trainer.callback_metrics["test/acc"])
    last = in_tmp / "logs" / "default" / "version_0" / "checkpoints" / "last.ckpt"
    info = cli(
        "export", "--config", str(in_tmp / "logs/default/version_0/config.yaml"), f"--ckpt_path={last}", "--format=onnx"
    )
    weights = [
        numpy_helper.to_array(t)
        for t in onnx.load(str(last.parents[1] / "export" / info["files"]["model"])).graph.initializer
    ]
    weights = [w for w in weights if w.ndim >= 2]  # conv and linear weights
    sparsity = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    print(f"pruned: sparsity {sparsity:.4f}, test accuracy {accuracy:.4f}")
    assert sparsity == pytest.approx(0.6, abs=0.005)
    assert accuracy >= 0.9944 - 0.02  # within 2 points of the unpruned default (99.44%)


def test_model_json_paths_survive_moving_the_run_directory(in_tmp):
    cli("fit", "--config", DEFAULT, *QUICK, "--trainer.max_epochs=1", "--test_after_fit=false")
    run = in_tmp / "logs" / "default" / "version_0"
    cli("export", "--config", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        "--format=torchscript")  # fmt: skip
    moved = in_tmp / "elsewhere" / "run"
    moved.parent.mkdir()
    run.rename(moved)
    meta = json.loads((moved / "export" / "model.json").read_text())
    assert os.path.normpath(moved / "export" / meta["source_checkpoint"]) == str(moved / "checkpoints" / "last.ckpt")
    scripted = torch.jit.load(str(moved / "export" / meta["files"]["model"]))  # was an absolute path into run/
    assert scripted(torch.rand(2, 1, 8, 8) * 16).shape == (2, 10)
