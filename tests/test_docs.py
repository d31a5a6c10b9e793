"""README.md and the manual (docs/) stay true: README fits on a few screens, the site builds with --strict, and every
path, config, subcommand and make target a page names exists; every subcommand and every extra has its page."""

import os
import re
import subprocess
import sys

import pytest

from proj.cli.registry import LIGHTNING, commands, extras

from conftest import DEFAULT, ROOT, cli

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TEXTS = {page.relative_to(ROOT).as_posix(): page.read_text() for page in PAGES}
# Paths as written: a pattern such as imbalanced_$e.yaml or version_<n> is not a path.
PATH = r"(?<![\w/.])((?:configs|src|scripts|benchmarks|notebooks|tests|docs)/[\w./-]+[\w/])(?![\w/$<*{.-])"
NAMED = sorted({(page, path) for page, text in TEXTS.items() for path in re.findall(PATH, text)})
CONFIGS = sorted({path for _, path in NAMED if path.startswith("configs/") and path.endswith(".yaml")})
EXTRAS = [extra.__name__.rsplit(".", 1)[-1] for extra in extras()]


def test_readme_fits_on_a_few_screens():
    assert len(TEXTS["README.md"].splitlines()) <= 300


@pytest.mark.slow  # a real process
def test_the_site_builds_with_strict_checks(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    built = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("index.html")}
    assert {"data_contract/index.html", *(f"extras/{name}/index.html" for name in EXTRAS)} <= built


@pytest.mark.parametrize(("page", "path"), NAMED)
def test_every_path_a_page_names_exists(page, path):
    assert (ROOT / path).exists(), f"{page} names {path}, which does not exist"


@pytest.mark.parametrize("path", CONFIGS)
def test_every_config_a_page_names_parses(path, capsys):
    config = ROOT / path
    command = "tune" if "tune:" in config.read_text() else "fit"  # a search file's tune: block is tune's
    with pytest.raises(SystemExit) as done:
        cli(command, "--config", DEFAULT, "--config", str(config), "--print_config")
    assert done.value.code in (0, None), capsys.readouterr().err[-2000:]


@pytest.mark.parametrize("page", sorted(TEXTS))
def test_every_subcommand_and_make_target_a_page_names_exists(page):
    named = set(re.findall(r"python -m proj (\w+)", TEXTS[page]))
    assert named <= {*LIGHTNING, *commands()}, named - {*LIGHTNING, *commands()}
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"(?:^|`)make ([\w-]+)", TEXTS[page], re.M))
    assert all(re.search(rf"^{t}:", makefile, re.M) for t in targets), targets


@pytest.mark.parametrize("name", [*LIGHTNING, *commands()])
def test_every_subcommand_has_a_page(name):
    pages = [page for page, text in TEXTS.items() if f"`{name}`" in text or f"python -m proj {name}" in text]
    assert pages, f"no page of docs/ names the subcommand {name}"


@pytest.mark.parametrize("name", EXTRAS)
def test_every_extra_has_its_page_and_tests_and_says_how_to_take_it_out(name):
    page = TEXTS.get(f"docs/extras/{name}.md")
    assert page is not None, f"docs/extras/{name}.md is missing"
    assert (ROOT / "tests" / "extras" / f"test_{name}.py").is_file()
    removal = page.split("## Taking it out", 1)[-1]
    assert f"src/proj/extras/{name}/" in removal and f"tests/extras/test_{name}.py" in removal
