"""The text demo, with no download: docstrings of Python's standard library, labelled by their package."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

import numpy as np

from proj.data.text import TextDataModule

# Packages of Python's standard library present in every CPython, each with 130 to 300 documented functions and
# classes: the demo's classes.
PACKAGES = ("asyncio", "email", "http", "importlib", "logging", "multiprocessing", "unittest", "xml")


class StdlibDocstringsDataModule(TextDataModule):
    """Real English text with no download: the docstrings of the functions and classes of eight packages of the
    running Python's standard library (PSF licence), each labelled by its package; docstrings of fewer than five
    words are left out (about 1,770 texts on Python 3.11). Read with `ast`, nothing is imported."""

    num_classes = len(PACKAGES)
    classes = list(PACKAGES)

    def read_texts(self) -> tuple[list[str], np.ndarray, list[str]]:
        texts, labels, ids = [], [], []
        root = Path(sysconfig.get_paths()["stdlib"])
        for label, package in enumerate(PACKAGES):
            for path in sorted((root / package).rglob("*.py")):
                if "test" in path.relative_to(root).parts[1:]:
                    continue
                for name, doc in docstrings(path):
                    texts.append(" ".join(doc.split()))
                    labels.append(label)
                    ids.append(f"{path.relative_to(root)}:{name}")
        return texts, np.array(labels), ids


def docstrings(path: Path) -> list[tuple[str, str]]:
    """(name, docstring) of each function and class in a Python file with a docstring of five words or more."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            doc = ast.get_docstring(node)
            if doc and len(doc.split()) >= 5:
                found.append((node.name, doc))
    return found
