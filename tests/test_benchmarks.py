"""The benchmark scripts still run, at tiny sizes. Their figures come from `make bench`; nothing is timed here."""

import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from report import report_lines, results  # benchmarks/ holds scripts, not a package

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "args",
    [
        ["overhead.py", "--epochs", "1", "--repeats", "1"],
        ["time_to_accuracy.py", "--seeds", "1", "--target", "0.5"],
        ["startup.py", "--repeats", "1"],
        ["gpu_throughput.py", "--tiny"],
        ["resnet_epoch.py", "--tiny"],
        ["sequence_epoch.py", "--copies", "1", "--epochs", "1", "--repeats", "1", "--batches", "32"],
        # text_demo.py's fit and TF-IDF run inside text_augment.py; its own loop over the two recipes is not rerun
        ["text_augment.py", "--fraction", "0.1", "--seeds", "0", "--epochs", "1", "--augmentations", "typos"],
        ["activation_checkpointing.py", "--tiny"],
        # one rule (tests/extras/test_diagnose.py runs every rule, and --try)
        ["diagnose_rules.py", "--scale", "0.5", "--seeds", "--recipes", "--tries", "--rules", "lr_too_low"],
        ["serve.py", "--nets", "smallcnn", "--backends", "onnx", "--requests", "10", "--repeats", "1"],
        [
            "data_scale.py",
            "--small",
            "100",
            "--large",
            "200",
            "--repeats",
            "1",
            "--memory_repeats",
            "1",
            "--workers",  # no worker processes to start: the fits and loaders are what is checked here
            "0",
            "--work",
            "{tmp}",
        ],
    ],
    ids=lambda args: args[0],
)  # an extra's benchmark goes with it (benchmarks/serve.py with the serve extra): run those that are here
def test_benchmark_runs_and_reports_its_result(args, tmp_path):
    args = [arg.format(tmp=tmp_path) for arg in args]
    if not (ROOT / "benchmarks" / args[0]).is_file():
        pytest.skip(f"benchmarks/{args[0]} was deleted with its extra")
    done = subprocess.run([sys.executable, *args], cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = results(done.stdout)  # what make bench puts in benchmarks/README.md's summary table
    assert rows.get(None), done.stdout[-3000:]
    assert report_lines(done.stdout).strip(), done.stdout[-3000:]  # and its table below
    if args[0] == "overhead.py":  # the headline ratio has a row of its own
        assert "(goal <= 1.00x)" in rows["Template / plain Lightning with its defaults, the default digits run"]
