"""The benchmark scripts still run, at tiny sizes. Their figures come from `make bench`; nothing is timed here."""

import contextlib
import io
import runpy
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from report import report_lines, results  # benchmarks/ holds scripts, not a package

pytestmark = pytest.mark.slow

# Scripts whose figures depend on the process running them: activation_checkpointing.py's memory children read their
# peak RSS (ru_maxrss), which a child process inherits from its parent: under a pytest worker's peak every rise is 0.
# (data_scale.py's fits run under /usr/bin/time, whose child starts afresh, and it samples their PSS.)
OWN_PROCESS = {"activation_checkpointing.py"}


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
def test_benchmark_runs_and_reports_its_result(args, tmp_path, monkeypatch):
    args = [arg.format(tmp=tmp_path) for arg in args]
    if not (ROOT / "benchmarks" / args[0]).is_file():
        pytest.skip(f"benchmarks/{args[0]} was deleted with its extra")
    stdout = run_process(args) if args[0] in OWN_PROCESS else run_in_process(args, monkeypatch)
    rows = results(stdout)  # what make bench puts in benchmarks/README.md's summary table
    assert rows.get(None), stdout[-3000:]
    assert report_lines(stdout).strip(), stdout[-3000:]  # and its table below
    if args[0] == "overhead.py":  # the headline ratio has a row of its own
        assert "(goal <= 1.00x)" in rows["Template / plain Lightning with its defaults, the default digits run"]
    if args[0] == "serve.py":  # the three servers of each case, and both ratios the goals are set on
        for server in ("minimal server", "proj serve, batching off", "proj serve, batching on"):
            assert f"smallcnn onnx {server}, concurrency 32" in stdout, stdout[-3000:]
        assert "batching on / off: smallcnn onnx" in rows[None], rows
        minimal = rows["Serving: proj serve against a minimal uvicorn + Starlette server, same model"]
        assert "(goal >= 0.8x for smallcnn onnx: " in minimal, minimal


def run_process(args: list[str]) -> str:
    """`python ARGS` from benchmarks/: its stdout (the report; Lightning logs to stderr)."""
    done = subprocess.run([sys.executable, *args], cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_in_process(args: list[str], monkeypatch) -> str:
    """`python ARGS` from benchmarks/, run in this process as its own `__main__`: its stdout (the report; Lightning
    logs to stderr). A fresh interpreter would only import torch and Lightning again, about 5 s a script; the
    processes a benchmark starts itself (fits measured for memory, servers, cold starts) are still its own."""
    monkeypatch.chdir(ROOT / "benchmarks")  # and back: the scripts chdir into folders of their own
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as sys.path[0] is the script's folder
    monkeypatch.setattr(sys, "argv", args)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(str(ROOT / "benchmarks" / args[0]), run_name="__main__")
        except SystemExit as done:  # sys.exit(message) on a failure; the scripts end without one
            assert done.code in (None, 0), f"exit {done.code}\n{out.getvalue()[-3000:]}"
    return out.getvalue()
