"""`python -m proj new`: a renamed, working copy of the template."""

import os
import re
import subprocess
import sys

import pytest

from conftest import cli

pytestmark = pytest.mark.slow


def test_new_project_is_renamed_and_its_own_tests_pass(tmp_path):
    target = tmp_path / "mynet"
    cli("new", str(target), "--name", "mynet")
    assert (target / "src" / "mynet" / "cli" / "__init__.py").is_file() and not (target / "src" / "proj").exists()
    for leftover in ("logs", ".venv", ".git", "lightning_logs"):
        assert not (target / leftover).exists()
    assert not list(target.rglob("*.ckpt")) and not list(target.rglob("__pycache__"))
    texts = [p for p in target.rglob("*") if p.suffix in (".py", ".yaml", ".toml") and p.is_file()]
    assert not [p for p in texts if re.search(r"\bproj\b", p.read_text())]  # every import and class_path renamed
    assert 'name = "mynet"' in (target / "pyproject.toml").read_text()
    # Its fast tests pass with this venv (the slow ones train; the template's own run covers them).
    env = {**os.environ, "PYTHONPATH": str(target / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider"],
        cwd=target, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(r"\d+ passed", done.stdout)


def test_new_refuses_a_non_empty_folder_and_a_bad_name(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        cli("new", str(target), "--name", "mynet")
    with pytest.raises(ValueError, match=r"'my-net' is not a valid Python package name"):
        cli("new", str(tmp_path / "x"), "--name", "my-net")
    with pytest.raises(ValueError, match=r"'torch' is already an importable package"):
        cli("new", str(tmp_path / "y"), "--name", "torch")
