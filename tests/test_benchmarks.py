"""The benchmark scripts still run, at tiny sizes. Their figures come from `make bench`; nothing is timed here."""

import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "args",
    [
        ["overhead.py", "--epochs", "1", "--repeats", "1"],
        ["time_to_accuracy.py", "--seeds", "1", "--target", "0.5"],
        ["startup.py", "--repeats", "1"],
        ["gpu_throughput.py", "--tiny"],
        ["resnet_epoch.py", "--tiny"],
        ["activation_checkpointing.py", "--tiny"],
        ["serve.py", "--nets", "smallcnn", "--backends", "onnx", "--requests", "10", "--repeats", "1"],
    ],
    ids=lambda args: args[0],
)
def test_benchmark_runs_and_reports_its_result(args):
    done = subprocess.run([sys.executable, *args], cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESULT: " in done.stdout, done.stdout[-3000:]
