"""Shared fixtures and checks: in-process CLI runs inside a temporary working directory, one default run and one
regression run per session (a test using one joins its xdist group, so that one worker trains it), and the
bad-input check every feature's table of wrong values goes through."""

import os
import re
import shutil
import traceback
from pathlib import Path

import pytest

# `make test` runs two pytest-xdist workers: each gets its share of the cores (two workers each using every core
# would only fight over them). Set before torch is imported, so the processes the tests start inherit it too.
if "PYTEST_XDIST_WORKER" in os.environ:
    share = (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, share)))

# Imported here, at collection, not inside a test's captured output: Lightning's log handler then holds the real
# stderr, not the first test's capture (closed by the next tests: "--- Logging error ---" in later tests' output).
import proj.cli  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DEFAULT = str(CONFIGS / "default.yaml")
README_PATH = ROOT / "README.md"

# A short run: few batches, no progress bar. Enough to check numbers, not to train well.
QUICK = [
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]

# Runs several of which a test trains (trials, folds, sweeps): 3 epochs of 5 batches.
SHORT = [
    "--trainer.max_epochs=3",
    "--trainer.limit_train_batches=5",
    "--trainer.limit_val_batches=3",
    "--trainer.enable_model_summary=false",
    "--trainer.enable_progress_bar=false",
]


def cli(*args: str, run: bool = True):
    """Run the real CLI in-process (the same object `python -m proj` builds)."""
    from proj.cli import main

    return main(list(args), run=run)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run inside an empty directory so that logs/ lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def usage_error(capsys, *args: str) -> str:
    """Run the CLI expecting a usage error: exit status 2 and one line on stderr, no traceback. Returns it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        cli(*args)
    err = capsys.readouterr().err
    assert done.value.code == 2, (done.value.code, err[-2000:])
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def cli_in(workdir: Path, *args: str):
    """The CLI run inside `workdir` (its logs/ land there), for fixtures shared by several tests."""
    old = os.getcwd()
    os.chdir(workdir)
    try:
        return cli(*args)
    finally:
        os.chdir(old)


def trained(tmp_path_factory, name: str, *args: str):
    """One fit in a fresh working directory, for a module's tests to share: (result, its run directory)."""
    workdir = tmp_path_factory.mktemp(name)
    result = cli_in(workdir, "fit", *args)
    return result, workdir / result.trainer.log_dir


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """`python -m proj fit --config configs/default.yaml`, run once for every test that reads its results."""
    workdir = tmp_path_factory.mktemp("default_run")
    return workdir, cli_in(workdir, "fit", "--config", DEFAULT, "--trainer.enable_progress_bar=false")


@pytest.fixture(scope="session")
def diabetes_run(tmp_path_factory):
    """One full fit of the diabetes experiment (tested on its best checkpoint): (result, run directory, best)."""
    workdir = tmp_path_factory.mktemp("diabetes")
    result = cli_in(workdir, "fit", *REGRESSION)
    run_dir = workdir / "logs" / "diabetes_regression" / "version_0"
    best = workdir / result.trainer.checkpoint_callback.best_model_path
    return result, run_dir, str(best)


REGRESSION = [
    "--config", DEFAULT, "--config", str(CONFIGS / "experiment" / "diabetes_regression.yaml"),
    "--trainer.enable_progress_bar=false",
]  # fmt: skip


@pytest.fixture(scope="session")
def csv_run(tmp_path_factory):
    """The default config with the CSV logger preset (configs/logger/csv.yaml), 2 short epochs: (run directory,
    result, the info lines Lightning's loggers printed)."""
    import logging

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.INFO)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("lightning.pytorch").addHandler(handler)
    workdir = tmp_path_factory.mktemp("csv")
    try:
        result = cli_in(workdir, "fit", "--config", DEFAULT, "--config", str(CONFIGS / "logger" / "csv.yaml"), *QUICK)
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    return workdir / "logs" / "default" / "version_0", result, [r.getMessage() for r in records]


@pytest.fixture(scope="session")
def text_export(tmp_path_factory):
    """helpers.text_run's tiny text run, exported once (ONNX, its tokenizer beside it) for the export and serve
    tests that read it (the xdist group "serve"): (run directory, best checkpoint, the rows of predict's CSV)."""
    from helpers import text_run

    workdir = tmp_path_factory.mktemp("text_export")
    run, best, predicted = text_run(workdir)
    cli_in(workdir, "export", "--config", str(run / "config.yaml"), f"--ckpt_path={best}")
    return run, best, predicted


# The keys people compare runs by (proj.run_settings), with the default config's values where it sets them.
COMPARED_HPARAMS = {
    "optimizer": "AdamW", "lr": 3e-3, "weight_decay": 0.05, "schedule": "CosineAnnealingLR", "warmup_steps": 50,
    "interval": "step", "batch_size": 64, "net": "SmallCNN", "net.widths": "[32, 64]", "max_epochs": 2,
    "precision": "32-true", "gradient_clip_val": 1.0, "accumulate_grad_batches": 1, "sampler": "none",
    "augmentation": "none",
}  # fmt: skip


def help_text(capsys, name: str) -> str:
    """`python -m proj <name> --help`, run in this process."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        cli(name, "--help")
    assert done.value.code == 0
    return capsys.readouterr().out


# --- bad input: every wrong value is refused in one or two lines, before training -------------------------------


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One tiny run (1 epoch of 2 batches): its run directory, copied by the bad-input cases that need a run."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    cli_in(workdir, "fit", "--config", DEFAULT, *QUICK, "--trainer.max_epochs=1", "--test_after_fit=false")
    return workdir / "logs" / "default" / "version_0"


def assert_refused_before_training(case, tiny_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """One case of a bad-input table: (id, arguments, what the message must name, steps preparing the run copy).
    In the arguments {run} is a copy of a tiny trained run and {tmp} the case's folder. The case must fail before
    training, in one or two lines naming the key or path, with a non-zero exit, no Python traceback, no checkpoint
    written and no run directory (version_<n>) left behind."""
    _, args, named, *prepare = case
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "saved" / "default" / "version_0"
    shutil.copytree(tiny_run, run, symlinks=True)
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    import torch

    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.ckpt")
    for step in prepare:
        step(run)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    code, err = run_case(capsys, [a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for a in args])
    assert code != 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if re.search(r"error|Refused", line)]
    assert 1 <= len(errors) <= 2, err[-3000:]
    assert named in " ".join(errors), (named, errors)
    after = [p for p in tmp_path.rglob("*") if p.is_file() and before.get(p) != p.stat().st_mtime_ns]
    assert not [p for p in after if p.suffix == ".ckpt"], after  # no checkpoint written
    runs = [p for p in tmp_path.rglob("version_*") if p.is_dir() and p != run]
    assert not runs, runs  # and no run directory left behind


def run_case(capsys, args: list[str]) -> tuple[int, str]:
    """One CLI run in this process: its exit code and everything it wrote to stderr (and a traceback, if one
    escaped, so that the case fails showing it)."""
    capsys.readouterr()
    code, extra = 0, ""
    try:
        cli(*args)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
        extra = "" if isinstance(done.code, int) or done.code is None else str(done.code)
    except Exception:  # an escaped exception is the failure the tables look for
        code, extra = 1, traceback.format_exc()
    return code, capsys.readouterr().err + extra


def pytest_collection_modifyitems(config, items):
    """The slow tests first, so that two workers end together on short ones instead of one waiting for the
    other's last minute-long test. Tests marked `gpu` run only where CUDA is available; CI has none."""
    items.sort(key=lambda item: "slow" not in item.keywords)  # stable: file order within each kind
    group_by_xdist_marks(config, items)
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def group_by_xdist_marks(config, items) -> None:
    """`--dist loadgroup` sends the tests of one xdist_group to one worker by adding "@<group>" to their node ids on
    the worker. pytest 9.2 keeps a node id in item._id, so pytest-xdist 3.8's write to item._nodeid no longer
    reaches item.nodeid (pytest-dev/pytest-xdist#1386): every group was spread over both workers, and each worker
    trained the shared runs (the default run, the tiny run, the modules' fixtures) again. Done here as xdist means
    to, where xdist's own write did not take."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        marks = item.iter_markers("xdist_group")
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks}
        suffix = "@" + "_".join(sorted(names))
        if not names or item.nodeid.endswith(suffix):
            continue
        nodeid = item.nodeid + suffix
        if hasattr(item, "_id"):  # pytest >= 9.2: a structured NodeId, which keeps the string it parsed
            item._id = type(item._id).parse(nodeid)
        else:
            item._nodeid = nodeid
        if item.nodeid != nodeid:  # another pytest: the groups would be lost without a word, minutes of test time
            raise RuntimeError(f"{item.nodeid}: its xdist_group did not take; see group_by_xdist_marks in {__file__}")
