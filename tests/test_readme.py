"""README.md stays true: every path it names exists, every config it names parses, every command exists."""

import re

import pytest

from proj.cli.registry import commands

from conftest import DEFAULT, ROOT, cli

README = (ROOT / "README.md").read_text()
# Paths as written: a pattern such as imbalanced_$e.yaml or version_<n> is not a path.
PATH = r"(?<![\w/.])((?:configs|src|scripts|benchmarks|notebooks|tests)/[\w./-]+[\w/])(?![\w/$<*{.-])"
PATHS = sorted(set(re.findall(PATH, README)))
CONFIGS = [p for p in PATHS if p.startswith("configs/") and p.endswith(".yaml")]


def test_readme_names_paths():
    assert len(PATHS) > 40 and len(CONFIGS) > 20


@pytest.mark.parametrize("path", PATHS)
def test_every_path_in_readme_exists(path):
    assert (ROOT / path).exists(), f"README names {path}, which does not exist"


@pytest.mark.parametrize("path", CONFIGS)
def test_every_config_in_readme_parses(path, capsys):
    config = ROOT / path
    # a search file (its tune: block) is read by tune, every other config by fit
    command = "tune" if "tune:" in config.read_text() else "fit"
    args = ["--config", DEFAULT, "--config", str(config)]
    with pytest.raises(SystemExit) as done:
        cli(command, *args, "--print_config")
    assert done.value.code in (0, None), capsys.readouterr().err[-2000:]


def test_every_command_in_readme_exists():
    subcommands = set(re.findall(r"python -m proj (\w+)", README))
    assert subcommands <= {"fit", "validate", "test", "predict", *commands()}, subcommands
    targets = set(re.findall(r"(?:^|`)make ([\w-]+)", README, re.M))
    makefile = (ROOT / "Makefile").read_text()
    assert all(re.search(rf"^{t}:", makefile, re.M) for t in targets), targets
