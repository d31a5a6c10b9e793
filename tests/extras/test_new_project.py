"""`python -m proj new`: a renamed, working copy of the template, whose own `new` makes the next one."""

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, cli, help_text, usage_error

pytestmark = pytest.mark.slow


def test_two_generations_of_new_projects_are_renamed_and_the_second_ones_fast_tests_pass(tmp_path):
    (ROOT / "scratch_notes.txt").write_text("an untracked file")  # in the checkout, not in git: never copied
    try:
        first = tmp_path / "mynet"
        cli("new", str(first), "--name", "mynet")
    finally:
        (ROOT / "scratch_notes.txt").unlink()
    assert (first / "src" / "mynet" / "cli" / "__init__.py").is_file() and not (first / "src" / "proj").exists()
    assert not (first / "scratch_notes.txt").exists()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    copied = sorted(str(p.relative_to(first)).replace("mynet", "proj") for p in first.rglob("*") if p.is_file())
    assert copied == sorted(tracked)  # exactly the template's tracked files
    texts = [p for p in first.rglob("*") if p.suffix in (".py", ".yaml", ".toml") and p.is_file()]
    assert not [p for p in texts if re.search(r"\bproj\b", p.read_text())]  # every import and class_path renamed
    assert 'name = "mynet"' in (first / "pyproject.toml").read_text()

    # The first generation has no git: its own `new` copies its listed parts, renamed again.
    (first / "logs").mkdir()
    (first / "logs" / "run.ckpt").write_text("a run's output")
    second = tmp_path / "othernet"
    env = {**os.environ, "PYTHONPATH": str(first / "src")}
    made = subprocess.run(
        [sys.executable, "-m", "mynet", "new", str(second), "--name", "othernet"],
        cwd=first, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    assert (second / "src" / "othernet" / "extras" / "new_project" / "copy_template.py").is_file()
    assert not (second / "logs").exists()
    texts = [p for p in second.rglob("*") if p.suffix in (".py", ".yaml", ".toml") and p.is_file()]
    assert not [p for p in texts if re.search(r"\b(proj|mynet)\b", p.read_text())]
    assert len(list(second.rglob("*.py"))) == len(list(first.rglob("*.py")))

    # The second generation's fast tests of its command line (every subcommand's --help imports every module),
    # optim config and nets pass with this venv; the template's own run covers the rest, which renaming cannot
    # change, and running it all again cost two minutes of CPU.
    env = {**os.environ, "PYTHONPATH": str(second / "src")}
    files = ["tests/test_cli.py", "tests/test_optim.py", "tests/test_nets.py"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", *files],
        cwd=second, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(r"\d+ passed", done.stdout)


def test_new_refuses_a_non_empty_folder_and_a_bad_name(tmp_path, capsys):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    assert "exists and is not empty" in usage_error(capsys, "new", str(target), "--name", "mynet")
    error = usage_error(capsys, "new", str(tmp_path / "x"), "--name", "my-net")
    assert "'my-net' is not a valid Python package name" in error
    error = usage_error(capsys, "new", str(tmp_path / "y"), "--name", "torch")
    assert "'torch' is already an importable package" in error


def test_help_shows_its_own_options(capsys):
    out = help_text(capsys, "new")
    assert "folder" in out and "--name" in out
