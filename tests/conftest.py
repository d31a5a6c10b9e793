"""Shared fixtures: in-process CLI runs inside a temporary working directory, and one default run per session."""

import os
from pathlib import Path

import pytest

# `make test` runs two pytest-xdist workers: each gets its share of the cores (two workers each using every core
# would only fight over them). Set before torch is imported, so the processes the tests start inherit it too.
if "PYTEST_XDIST_WORKER" in os.environ:
    share = (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, share)))

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


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """`python -m proj fit --config configs/default.yaml`, run once for every test that reads its results."""
    workdir = tmp_path_factory.mktemp("default_run")
    return workdir, cli_in(workdir, "fit", "--config", DEFAULT, "--trainer.enable_progress_bar=false")


def pytest_collection_modifyitems(config, items):
    """The slow tests first, so that two workers end together on short ones instead of one waiting for the
    other's last minute-long test. Tests marked `gpu` run only where CUDA is available; CI has none."""
    items.sort(key=lambda item: "slow" not in item.keywords)  # stable: file order within each kind
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
