"""Text classification data: texts and labels, a WordPiece tokenizer trained on the training split, token ids
padded per batch.

The texts are tokenized once in `setup` into the ragged layout of sequences (proj.data.sequences.Sequences: every
token id of every text in one int64 array, and where each text starts), so batches are the sequence path's
`{"input": Padded(ids, lengths, mask), "target": y}` with ids kept as integers end to end. The tokenizer (Hugging
Face `tokenizers`) is trained on the training split's texts only, or loaded from `tokenizer_path`; it travels in
every checkpoint with the other statistics, so test and predict use the run's own.
"""

from __future__ import annotations

import ast
import csv
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from proj.data.errors import DataError
from proj.data.sequence_data import SequenceDataModule
from proj.data.sequences import Sequences

SPECIAL = ["[PAD]", "[UNK]"]  # [PAD] first: id 0 is what padding fills (proj.nets.text.PAD)


class TextDataModule(SequenceDataModule):
    """Texts and their labels; a subclass says how to read them (`read_texts` returns texts, labels, ids).

    Args (the others are ArrayDataModule's, through SequenceDataModule; standardize does not apply):
        vocab_size: the WordPiece vocabulary trained on the training split (the special tokens included).
        max_length: tokens kept per text (the first ones); 0 or less is refused.
        tokenizer_path: a tokenizer.json (Hugging Face tokenizers) to use instead of training one.
    """

    num_classes: int

    def __init__(
        self, vocab_size: int = 8000, max_length: int = 256, tokenizer_path: str | None = None, **kwargs: Any
    ) -> None:
        if max_length < 1:
            raise DataError(f"data.max_length={max_length} must be at least 1 (tokens kept per text)")
        if vocab_size < len(SPECIAL) + 1:
            raise DataError(f"data.vocab_size={vocab_size} must be more than the {len(SPECIAL)} special tokens")
        if tokenizer_path and not Path(tokenizer_path).is_file():
            raise DataError(f"data.tokenizer_path={tokenizer_path!r} does not exist: give a tokenizer.json")
        self.vocab_size, self.max_length, self.tokenizer_path = vocab_size, max_length, tokenizer_path
        for key in ("jitter", "scaling", "time_mask", "crop"):  # they act on feature values, not on token ids
            if kwargs.get(key, 1.0 if key == "crop" else 0.0) != (1.0 if key == "crop" else 0.0):
                raise DataError(f"data.{key}={kwargs[key]} augments feature values; texts are token ids: remove it")
        super().__init__(**kwargs)
        # Token ids are not measured. Set here, not in kwargs: Lightning records the outermost __init__'s arguments
        # (a subclass's **kwargs as the command line gave them), so a changed kwargs would not reach hparams.
        self.hparams.standardize = False
        self.read: tuple[list[str], np.ndarray, list[str]] | None = None

    def read_texts(self) -> tuple[list[str], np.ndarray, list[str]]:
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple[int]:
        """(vocabulary size,): one step is one token id; the size is the tokenizer's, known after setup."""
        self.setup()
        return (self.tokenizer.get_vocab_size(),)

    def texts_and_labels(self) -> tuple[list[str], np.ndarray, list[str]]:
        """read_texts, once."""
        if self.read is None:
            self.read = self.read_texts()
        return self.read

    def load_arrays(self) -> tuple[Sequences, np.ndarray]:
        """The texts stay strings until their split is made (make_split tokenizes them); x carries the ids."""
        self.texts, labels, ids = self.texts_and_labels()
        self.ids = list(ids)
        empty = torch.zeros(0, dtype=torch.long)
        return Sequences(empty, torch.zeros(len(ids) + 1, dtype=torch.long), torch.as_tensor(labels), ids), labels

    def make_split(self, x: Sequences, y: Tensor, idx: Tensor, train: bool) -> Sequences:
        """A split, tokenized; the tokenizer is made with the training split, which setup makes first (the splits
        come as train, val, test)."""
        texts = [self.texts[int(i)] for i in idx]
        if train:
            self.tokenizer = self.make_tokenizer(texts)
        return self.tokenized(texts, y[idx], [x.ids[int(i)] for i in idx])

    def setup(self, stage: str | None = None) -> None:
        if self.splits or self.predicting_only:
            return super().setup(stage)
        super().setup(stage)
        self.stats["tokenizer"] = self.tokenizer.to_str()  # in every checkpoint: test and predict use this one
        self.stats["input"].update(dtype="int64", text=True)

    def found_init_args(self) -> dict[str, Any]:
        """Written into the run's config.yaml: the tokenizer, saved beside it as <run>/tokenizer.json. A tokenizer
        trained again would differ (the trainer breaks ties by a hash seeded per process), and the model's
        embedding is built from its vocabulary size before a checkpoint is read."""
        log_dir = getattr(self.trainer, "log_dir", None) if self.trainer is not None else None
        if not log_dir or self.tokenizer_path:
            return {}
        path = Path(log_dir) / "tokenizer.json"
        if self.trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(str(path))
        return {"tokenizer_path": str(path)}

    def make_tokenizer(self, train: list[str]) -> Any:
        """The checkpoint's tokenizer, the one at tokenizer_path, or one trained on the training split's texts."""
        from tokenizers import Tokenizer

        if "tokenizer" in self.restored:
            return Tokenizer.from_str(self.restored["tokenizer"])
        if self.tokenizer_path:
            return Tokenizer.from_file(self.tokenizer_path)
        return train_wordpiece(train, self.vocab_size)

    def tokenized(self, texts: list[str], labels: Tensor, ids: list[str]) -> Sequences:
        """Each text as its first max_length token ids, in the ragged layout."""
        encoded = self.tokenizer.encode_batch(texts)
        parts = [torch.tensor(e.ids[: self.max_length] or [1], dtype=torch.long) for e in encoded]  # [UNK] if empty
        return Sequences.from_parts(parts, labels, ids, torch.zeros(0, dtype=torch.long))


def train_wordpiece(texts: list[str], vocab_size: int) -> Any:
    """A lower-casing WordPiece tokenizer trained on `texts` (BERT's pre-tokenizer: words and punctuation)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL))
    return tokenizer


def checked_texts(texts: list[Any], where: list[str]) -> list[str]:
    """Texts as strings: an empty one, or a cell that is not text, is one line naming its row."""
    for text, place in zip(texts, where, strict=True):
        if not isinstance(text, str):
            raise DataError(f"{place}: the text is {text!r}, not a string")
        if not text.strip():
            raise DataError(f"{place}: the text is empty: drop that row or give it a text")
    return texts


class TextCSVDataModule(TextDataModule):
    """A CSV with a text column and a label column (`text`, `target`); the classes are those found, sorted."""

    def __init__(self, path: str, text: str = "text", target: str = "label", **kwargs: Any) -> None:
        self.path, self.text_column, self.target_column = Path(path), text, target
        if not self.path.is_file():
            raise DataError(f"data.path={path!r} does not exist: give a CSV with a text and a label column")
        with open(self.path, newline="") as f:
            self.rows = list(csv.DictReader(f))
        header = list(self.rows[0]) if self.rows else []
        for key, column in (("text", text), ("target", target)):
            if column not in header:
                raise DataError(f"data.{key}={column!r} is not a column of {path}; columns: {', '.join(header)}")
        missing = next((i for i, row in enumerate(self.rows) if not (row[target] or "").strip()), None)
        if missing is not None:
            raise DataError(f"{path}:{missing + 2}: the label column {target!r} is empty: label or drop that row")
        self.classes = sorted({row[target].strip() for row in self.rows})
        self.num_classes = len(self.classes)
        super().__init__(**kwargs)

    def read_texts(self) -> tuple[list[str], np.ndarray, list[str]]:
        where = [f"{self.path}:{i + 2}" for i in range(len(self.rows))]
        texts = checked_texts([row[self.text_column] for row in self.rows], where)
        labels = np.array([self.classes.index(row[self.target_column].strip()) for row in self.rows])
        return texts, labels, [f"{self.path.name}:{i + 2}" for i in range(len(self.rows))]


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
