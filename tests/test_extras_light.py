"""Every extra's __init__.py stays light: `python -m proj` imports them all to find the subcommands, so one that
imported an optional package at once would break every command of an install without that extra (the serving
image installs only serve and export: the optim extra's eager pytorch_optimizer import once crashed it).

Checked by reading the code (ast), not by importing it: the module-level imports of each __init__.py, followed
through proj's own modules, must not reach a package that only an extra installs."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
OPTIONAL = {  # the packages only pyproject.toml's extras install, by import name
    "optuna", "ray", "onnx", "onnxruntime", "onnxscript", "mlflow", "wandb", "pytorch_optimizer", "ctgan", "uvicorn",
    "starlette", "fastapi", "prometheus_client", "pyarrow", "schedulefree",
}  # fmt: skip


def module_level_imports(path: Path) -> set[str]:
    """The modules a file imports when it is imported (not inside functions, nor under `if TYPE_CHECKING`)."""
    found, todo = set(), list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # a submodule imported by name
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody
    return found


def file_of(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def reached(start: Path) -> set[str]:
    """Every module imported, directly or through proj's modules, when `start` is imported."""
    seen, todo, files = set(), [start], {start}
    while todo:
        for module in module_level_imports(todo.pop()):
            seen.add(module)
            path = file_of(module) if module.startswith("proj") else None
            if path and path not in files:
                files.add(path)
                todo.append(path)
    return seen


def test_finding_the_extras_imports_no_optional_package():
    for init in sorted((SRC / "proj" / "extras").glob("*/__init__.py")):
        heavy = sorted({m.split(".")[0] for m in reached(init)} & OPTIONAL)
        assert not heavy, f"{init.relative_to(SRC)} imports {heavy} when `python -m proj` starts: import lazily"
