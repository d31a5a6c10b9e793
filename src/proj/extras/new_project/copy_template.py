"""`python -m proj new ../mynet --name mynet`: copy the template into a new project, renamed.

The package (src/proj -> src/mynet), its imports, every class_path in configs, pyproject's name, tests,
notebooks, scripts and docs are renamed. Only the template's own files are copied: the files git tracks when
the template is a git checkout, else the listed parts of a project (TEMPLATE_PARTS) without anything a run, a
build or an editor produced. Logs, virtual environments, caches, checkpoints, data and scratch files stay
behind. The result is a working project, whose own `new` makes the next one.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

from proj.cli.parser import UsageError, run_function

PACKAGE = __name__.split(".")[0]  # this package's own name: the template's, or the one a copy of it was given
# Outside git: what a project made by `new` consists of, at its top level.
TEMPLATE_PARTS = ("pyproject.toml", "constraints.txt", "Makefile", "README.md", ".gitignore", ".ci", "configs",
                  "src", "tests", "notebooks", "scripts", "benchmarks", "docs", "mkdocs.yml")  # fmt: skip
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints", "logs", "lightning_logs", "site"}
SKIP_SUFFIXES = (".ckpt", ".pyc", ".onnx", ".pt", ".egg-info")
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".toml", ".md", ".txt", ".ipynb", ".cfg", ".sh", ".sbatch", ".json", ""}


def template_root() -> Path:
    root = Path(__file__).resolve().parents[4]  # src/<package>/extras/new_project/this file
    if not (root / "pyproject.toml").is_file() or not (root / "configs").is_dir():
        raise UsageError(f"{root} is not a checkout of the template: run `new` from a clone of it")
    return root


def check_name(name: str) -> None:
    if not name.isascii():  # Python takes `données` as an identifier; pyproject.toml's bare keys and pip do not
        raise UsageError(
            f"--name {name!r}: a package name must be ASCII letters, digits and _; e.g. {ascii_name(name)!r}"
        )
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(
            f"--name {name!r} is not a valid Python package name: use letters, digits and _, not starting with a digit"
        )
    if name != name.lower():
        raise UsageError(
            f"--name {name!r}: Python package names are lower case by convention (PEP 8): use {name.lower()!r}"
        )
    if name != PACKAGE and importlib.util.find_spec(name) is not None:
        raise UsageError(f"--name {name!r} is already an importable package here: the project would shadow it")


def check_destination(destination: Path) -> None:
    """A new or empty folder this process can write into, or a UsageError naming it (before anything is copied)."""
    if destination.is_file():
        raise UsageError(f"{destination} is a file: give a new folder for the project")
    if destination.exists() and any(destination.iterdir()):
        raise UsageError(f"{destination} exists and is not empty: choose a new folder")
    try:
        destination.mkdir(parents=True, exist_ok=True)
        (destination / ".write_probe").touch()
        (destination / ".write_probe").unlink()
    except OSError as err:
        raise UsageError(
            f"cannot write into {destination} ({err.strerror}): choose a folder you can write to"
        ) from None


def ascii_name(name: str) -> str:
    """`données` -> `donnees`: the name with its accents dropped and anything else not ASCII made an underscore."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"\W", "_", plain) or "my_project"


def template_files(root: Path) -> list[Path]:
    """The template's own files, relative to its root."""
    if (root / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True, check=True)
        return sorted(Path(p) for p in listed.stdout.split("\0") if p and (root / p).is_file())
    files = []
    for part in TEMPLATE_PARTS:
        path = root / part
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p.relative_to(root) for p in candidates if not produced(p.relative_to(root))]
    return files


def produced(relative: Path) -> bool:
    """Whether a file was made by a run, a build or an editor rather than written as part of the template."""
    return relative.suffix in SKIP_SUFFIXES or any(
        part in SKIP_DIRS or part.endswith(".egg-info") for part in relative.parts
    )


def new_project(destination: Path, name: str) -> list[Path]:
    check_name(name)
    check_destination(destination)
    root = template_root()
    pattern = re.compile(rf"\b{PACKAGE}\b")
    written = []
    for relative in template_files(root):
        source = root / relative
        target = destination / Path(*(name if part == PACKAGE else part for part in relative.parts))
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix in TEXT_SUFFIXES or source.name in ("Makefile", "run"):
            try:
                text = source.read_text()
            except UnicodeDecodeError:
                shutil.copy2(source, target)
            else:
                target.write_text(pattern.sub(name, text))
                shutil.copymode(source, target)
        else:
            shutil.copy2(source, target)
        written.append(target)
    return written


def new(folder: Path, name: str | None = None) -> list[Path]:
    """Copy the template into a new project folder, with the package and every reference to it renamed.

    Args:
        folder: the new project's folder (must not exist, or be empty).
        name: the Python package name (default: the folder's name, with - as _).
    """
    package = name or Path(folder).resolve().name.replace("-", "_")
    files = new_project(Path(folder), package)
    print(f"created {folder} ({len(files)} files), package {package!r}. Start with:")
    print(f"  cd {folder} && make fit    # set up .venv, train the default config, test it")
    print("  make test                       # the test suite")
    return files


def command(name: str, args: list[str]) -> list[Path]:
    return run_function(name, new, args)
