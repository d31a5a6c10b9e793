"""`python -m proj new ../mynet --name mynet`: copy the template into a new project, renamed.

The package (src/proj -> src/mynet), its imports, every class_path in configs, pyproject's name, tests,
notebooks, scripts and docs are renamed; logs, virtual environments, caches, checkpoints and git history
are left out. The result is a working project: its own `make test` passes.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import shutil
from pathlib import Path

from proj.cli.options import take_options

# Left out of the copy: anything a run, a build or an editor produced.
SKIP_DIRS = {".git", ".venv", "venv", "logs", "lightning_logs", "__pycache__", ".pytest_cache", ".ruff_cache",
             ".ipynb_checkpoints", "build", "dist", ".whl", ".gl"}  # fmt: skip
SKIP_TOP_LEVEL = {"data"}  # the user's datasets, not the template's src/proj/data package
SKIP_SUFFIXES = (".ckpt", ".pyc", ".egg-info", ".onnx", ".pt")
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".toml", ".md", ".txt", ".ipynb", ".cfg", ".sh", ".sbatch", ".json", ""}


def template_root() -> Path:
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file() or not (root / "configs").is_dir():
        raise RuntimeError(f"{root} is not a checkout of the template: run `proj new` from a clone of it")
    return root


def check_name(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(
            f"--name {name!r} is not a valid Python package name: use letters, digits and _, not starting with a digit"
        )
    if name != name.lower():
        raise ValueError(
            f"--name {name!r}: Python package names are lower case by convention (PEP 8): use {name.lower()!r}"
        )
    if name != "proj" and importlib.util.find_spec(name) is not None:
        raise ValueError(f"--name {name!r} is already an importable package here: the project would shadow it")


def skipped(path: Path) -> bool:
    if path.parts[0] in SKIP_TOP_LEVEL or path.suffix in SKIP_SUFFIXES:
        return True
    return any(part in SKIP_DIRS or part.endswith(".egg-info") for part in path.parts)


def new_project(destination: Path, name: str) -> list[Path]:
    check_name(name)
    if destination.exists() and any(destination.iterdir()):
        raise FileExistsError(f"{destination} exists and is not empty: choose a new folder")
    root = template_root()
    pattern = re.compile(r"\bproj\b")
    written = []
    for source in sorted(root.rglob("*")):
        relative = source.relative_to(root)
        if source.is_dir() or skipped(relative):
            continue
        target = destination / Path(*(name if part == "proj" else part for part in relative.parts))
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


def command(name: str, args: list[str]) -> list[Path]:
    options, rest = take_options(args, {"name": None})
    package = options["name"]
    folders = [a for a in rest if not a.startswith("-")]
    destination = Path(folders[-1]) if folders else None
    if destination is None:
        raise ValueError("usage: python -m proj new <folder> [--name <package>]")
    package = package or destination.resolve().name.replace("-", "_")
    files = new_project(destination, package)
    print(f"created {destination} ({len(files)} files), package {package!r}. Start with:")
    print(f"  cd {destination} && make fit    # set up .venv, train the default config, test it")
    print("  make test                       # the test suite")
    return files
