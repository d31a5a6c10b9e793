"""`python -m proj new`: a renamed, working copy of the template, whose own `new` makes the next one."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

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


BAD_NEW = [  # (id, folder: {tmp} is the test's own, --name, what the one line names)
    ("non_ascii_name", "{tmp}/x", "données", "ASCII letters, digits and _; e.g. 'donnees'"),
    ("keyword_name", "{tmp}/x", "class", "not a valid Python package name"),
    ("leading_digit_name", "{tmp}/x", "1net", "not a valid Python package name"),
    ("upper_case_name", "{tmp}/x", "MyNet", "use 'mynet'"),
    ("folder_is_a_file", "{tmp}/a_file", "mynet", "a_file is a file"),
    ("folder_not_writable", "/proc/proj_new/mynet", "mynet", "cannot write into /proc/proj_new/mynet"),
]


@pytest.mark.parametrize(("folder", "name", "named"), [case[1:] for case in BAD_NEW], ids=[c[0] for c in BAD_NEW])
def test_a_bad_folder_or_name_is_one_line_and_writes_nothing(tmp_path, capsys, folder, name, named):
    (tmp_path / "a_file").write_text("mine")
    error = usage_error(capsys, "new", folder.format(tmp=tmp_path), "--name", name)
    assert named in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"] and (tmp_path / "a_file").read_text() == "mine"


def test_help_shows_its_own_options(capsys):
    out = help_text(capsys, "new")
    assert "folder" in out and "--name" in out


@pytest.fixture(scope="module")
def scaffold(tmp_path_factory):
    """A copy of the template made by `new`, package `mynet`: what a user starts from."""
    copy = tmp_path_factory.mktemp("scaffold") / "mynet"
    cli("new", str(copy), "--name", "mynet")
    return copy


def removal_list(project, extra: str) -> list:
    """The files an extra's docs page says to delete to take it out (its "Taking it out" list)."""
    page = (project / "docs" / "extras" / f"{extra}.md").read_text().split("## Taking it out", 1)[1]
    return [project / path for path in re.findall(r"^- `([^`]+)`$", page, re.M) if (project / path).exists()]


@pytest.mark.parametrize("extra", ["serve", "tune", "export"])
def test_deleting_an_extra_as_its_page_says_leaves_the_core_working(scaffold, tmp_path, extra):
    """In a copy of the template, the extra's files (folder, tests, docs page, presets, benchmark) are deleted and
    nothing else is edited: make lint's import contracts, the collection of every remaining test module and the
    core's fast tests of the command line (short fits of the default config, resumed and tested; --help of each
    subcommand left, which no longer lists the extra's) and of the docs pass."""
    project = tmp_path / "mynet"
    shutil.copytree(scaffold, project)
    deleted = removal_list(project, extra)
    assert project / "src" / "mynet" / "extras" / extra in deleted and len(deleted) >= 3
    for path in deleted:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    env = {**os.environ, "PYTHONPATH": str(project / "src"), "NO_MKDOCS_2_WARNING": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, *args], cwd=project, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
        return done

    lint_imports = Path(sys.executable).parent / "lint-imports"  # make lint's import contracts hold without it
    lint = subprocess.run([str(lint_imports)], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0 and "0 broken" in lint.stdout, lint.stdout[-3000:] + lint.stderr[-2000:]
    # Every remaining test module is collected (imported), and the core's fast tests of the command line (--help
    # of every subcommand left, the usage errors, in-process fits of the default config) and of the docs (every
    # path, subcommand and make target the pages name) run.
    selected = "(test_cli or test_docs) and not parses"
    tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-k", selected, "tests").stdout
    assert re.search(r"\d+ passed", tests) and not re.search(r"failed|error", tests.splitlines()[-1]), tests[-3000:]
    assert "ERROR" not in tests, tests[-3000:]
