"""Text classification data: texts and labels, a subword tokenizer trained on the training split, token ids
padded per batch.

The texts are tokenized once in `setup` into the ragged layout of sequences (proj.data.sequences.Sequences: every
token id of every text in one int64 array, and where each text starts), so batches are the sequence path's
`{"input": Padded(ids, lengths, mask), "target": y}` with ids kept as integers end to end. The tokenizer (Hugging
Face `tokenizers`) is trained on the training split's texts only, or loaded from `tokenizer_path`; it travels in
every checkpoint with the other statistics, so test and predict use the run's own.

With text augmentations on (proj.data.text_augment), the training split keeps its texts: each sample read is its
text edited, with a generator seeded by the key the training sampler gives it (proj.data.sampling.Keyed), and then
tokenized. Validation, test and predict always read the unedited tokens.

A subclass reads its texts (`read_texts`); proj.data.text_files reads a CSV or Parquet file, proj.data.stdlib_docs
the bundled demo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from proj.data.errors import DataError
from proj.data.sequence_data import SequenceDataModule
from proj.data.sequences import Sequences
from proj.data.text_augment import WORDNET, TextAugment

SPECIAL = ["[PAD]", "[UNK]"]  # [PAD] first: id 0 is what padding fills (proj.nets.text.PAD)
UNK = SPECIAL.index("[UNK]")
# The sequence options that act on feature values, and the value that turns each off: refused for token ids.
FEATURE_AUGMENTATIONS = {"jitter": 0.0, "scaling": 0.0, "time_mask": 0.0, "crop": 1.0}


class TextDataModule(SequenceDataModule):
    """Texts and their labels; a subclass says how to read them (`read_texts` returns texts, labels, ids).

    Args (the others are ArrayDataModule's, through SequenceDataModule; standardize does not apply):
        vocab_size: the vocabulary trained on the training split (the special tokens included; WordPiece keeps
            every character seen, so a tiny vocab_size may be exceeded; BPE stops early on a small corpus).
        max_length: tokens kept per text (the first ones); 0 or less is refused.
        subword: the tokenizer trained: bpe (byte-pair encoding) or wordpiece (BERT's); both lower-case. bpe by
            default: its training is deterministic, WordPiece's is not (ties broken by a hash seeded per run), so a
            run's tokenizer, and with it the run, follows from its seed.
        tokenizer_path: a tokenizer.json (Hugging Face tokenizers) to use instead of training one.
        word_delete, word_insert, word_swap, typos, synonyms: augmentations of training texts, each a probability
            per word (proj.data.text_augment); off at 0.
        wordnet: the WordNet database folder synonyms are read from (Debian's wordnet-base installs it there).
    """

    num_classes: int

    def __init__(
        self,
        vocab_size: int = 8000,
        max_length: int = 256,
        subword: Literal["bpe", "wordpiece"] = "bpe",
        tokenizer_path: str | None = None,
        word_delete: float = 0.0,
        word_insert: float = 0.0,
        word_swap: float = 0.0,
        typos: float = 0.0,
        synonyms: float = 0.0,
        wordnet: str = WORDNET,
        **kwargs: Any,
    ) -> None:
        if max_length < 1:
            raise DataError(f"data.max_length={max_length} must be at least 1 (tokens kept per text)")
        if vocab_size < len(SPECIAL) + 1:
            raise DataError(f"data.vocab_size={vocab_size} must be more than the {len(SPECIAL)} special tokens")
        if tokenizer_path and not Path(tokenizer_path).is_file():
            raise DataError(f"data.tokenizer_path={tokenizer_path!r} does not exist: give a tokenizer.json")
        self.vocab_size, self.max_length, self.subword = vocab_size, max_length, subword
        self.tokenizer_path = tokenizer_path
        for key, off in FEATURE_AUGMENTATIONS.items():
            if kwargs.get(key, off) != off:
                raise DataError(f"data.{key}={kwargs[key]} augments feature values; texts are token ids: remove it")
        self.text_augment = TextAugment(word_delete, word_insert, word_swap, typos, synonyms, wordnet)
        super().__init__(**kwargs)
        # Token ids are not measured. Set here, not in kwargs: Lightning records the outermost __init__'s arguments
        # (a subclass's **kwargs as the command line gave them), so a changed kwargs would not reach hparams.
        self.hparams.standardize = False
        self.read: tuple[list[str], np.ndarray, list[str]] | None = None

    def read_texts(self) -> tuple[list[str], np.ndarray, list[str]]:
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple[int]:
        """(vocabulary size,): one step is one token id; the size is the tokenizer's, known after setup (or, to
        predict without the training data, that of the run's tokenizer_path)."""
        if not hasattr(self, "tokenizer"):
            if self.predicting_only:
                self.tokenizer = self.make_tokenizer([])
            else:
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

    def make_split(self, x: Sequences, y: Tensor, idx: Tensor, train: bool) -> Dataset:
        """A split, tokenized; the tokenizer is made with the training split, which setup makes first (the splits
        come as train, val, test). With augmentations, the training split also keeps its texts."""
        texts = [self.texts[int(i)] for i in idx]
        if train:
            self.tokenizer = self.make_tokenizer(texts)
        split = self.tokenized(texts, y[idx], [x.ids[int(i)] for i in idx])
        if train and self.text_augment.active:
            return AugmentedTexts(split, texts, self.text_augment, self.tokenizer, self.max_length)
        return split

    def setup(self, stage: str | None = None) -> None:
        if self.splits or self.predicting_only:
            return super().setup(stage)
        super().setup(stage)
        self.stats["tokenizer"] = self.tokenizer.to_str()  # in every checkpoint: test and predict use this one
        self.stats["input"].update(dtype="int64", text=True, max_length=self.max_length)

    def found_init_args(self) -> dict[str, Any]:
        """Written into the run's config.yaml: the tokenizer, saved beside it as <run>/tokenizer.json. The model's
        embedding is built from its vocabulary size before a checkpoint is read, and a WordPiece tokenizer trained
        again would differ (its trainer breaks ties by a hash seeded per process)."""
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
        if self.predicting_only:
            raise DataError(f"{self.predicting_only}: predicting without it needs data.tokenizer_path (the run's)")
        return train_tokenizer(train, self.vocab_size, self.subword)

    def tokenized(self, texts: list[str], labels: Tensor, ids: list[str]) -> Sequences:
        """Texts as token ids in the ragged layout."""
        parts = token_tensors(self.tokenizer, texts, self.max_length)
        return Sequences.from_parts(parts, labels, ids, torch.zeros(0, dtype=torch.long))

    def add_predict_split(self, train: Tensor, no_labels: Tensor) -> None:
        """New texts, if the data module reads some (`load_predict_arrays`: texts and ids), tokenized, unlabelled."""
        new = self.load_predict_arrays()
        if new is not None:
            texts, self.predict_ids = new
            if not hasattr(self, "tokenizer"):  # predicting only: the checkpoint's, restored
                self.tokenizer = self.make_tokenizer([])
            labels = torch.full((len(texts), *no_labels.shape[1:]), -1, dtype=no_labels.dtype)
            self.splits["predict"] = self.tokenized(texts, labels, self.predict_ids)

    def checkpoint_refusal(self, state: dict[str, Any], option: str) -> str | None:
        """Why a checkpoint's net cannot read this data's token ids: it was trained with another vocabulary."""
        theirs = state.get("tokenizer")
        if theirs is None or "tokenizer" in self.restored:
            return None
        from tokenizers import Tokenizer

        if not self.tokenizer_path:
            return (
                f"{option}: its net reads the ids of its own tokenizer, and this run would train another: give "
                "data.tokenizer_path=<that run>/tokenizer.json"
            )
        mine = self.tokenizer if hasattr(self, "tokenizer") else self.make_tokenizer([])  # read once, for input_shape
        if Tokenizer.from_str(theirs).get_vocab() != mine.get_vocab():
            return (
                f"{option}: data.tokenizer_path={self.tokenizer_path!r} holds another vocabulary than the checkpoint's "
                "tokenizer: give the tokenizer.json of the run that wrote it"
            )
        return None


class AugmentedTexts(Dataset):
    """The training split with text augmentations on. Read with a key from proj.data.sampling.Keyed, (index, (seed,
    epoch, position)), a sample is its text edited with a generator seeded by the key, then tokenized; read with a
    plain index (statistics, examples), its unedited tokens."""

    keyed = True  # the training loader hands out keys (proj.data.loaders)

    def __init__(self, clean: Sequences, texts: list[str], augment: TextAugment, tokenizer: Any, max_length: int):
        # What a worker process needs, and no more: spawned workers get the dataset pickled.
        self.clean, self.texts, self.augment = clean, texts, augment
        self.tokenizer, self.max_length = tokenizer, max_length
        self.labels, self.ids = clean.labels, clean.ids

    def __len__(self) -> int:
        return len(self.clean)

    def __getitem__(self, key: int | tuple[int, tuple[int, int, int]]) -> tuple[Tensor, Tensor]:
        if not isinstance(key, tuple):
            return self.clean[key]
        i, seed = key
        edited = self.augment(self.texts[i], np.random.default_rng(seed))
        return token_tensors(self.tokenizer, [edited], self.max_length)[0], self.labels[i]

    def stack(self, limit: int | None = None) -> Any:
        return self.clean.stack(limit)


def train_tokenizer(texts: list[str], vocab_size: int, subword: str = "bpe") -> Any:
    """A lower-casing WordPiece or BPE tokenizer trained on `texts` (BERT's pre-tokenizer: words and punctuation)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if subword == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL)
    else:
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL)
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def token_ids(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Each text's first max_length token ids ([UNK] for a text with none): in training, predict and serving."""
    return [e.ids[:max_length] or [UNK] for e in tokenizer.encode_batch(texts)]


def token_tensors(tokenizer: Any, texts: list[str], max_length: int) -> list[Tensor]:
    """token_ids as int64 tensors: one sample's steps each."""
    return [torch.tensor(ids, dtype=torch.long) for ids in token_ids(tokenizer, texts, max_length)]


def checked_texts(texts: list[Any], where: list[str]) -> list[str]:
    """Texts as strings: an empty one, or a cell that is not text, is one line naming its row."""
    for text, place in zip(texts, where, strict=True):
        if not isinstance(text, str):
            raise DataError(f"{place}: the text is {text!r}, not a string")
        if not text.strip():
            raise DataError(f"{place}: the text is empty: drop that row or give it a text")
    return texts
