"""Augmentations of training texts, on the words and letters before tokenization (EDA, Wei & Zou 2019, and simulated
spelling mistakes). Each option is a probability per word; all are off at 0.

    word_delete   each word dropped (at least one word is kept)
    word_insert   a copy of another word of the text put at a random place, per word
    word_swap     two random words swapped, per word
    typos         one spelling mistake in the word: a letter inserted, dropped, swapped with the next, or replaced;
                  inserted and replacing letters are neighbours on a QWERTY keyboard, as real typos are
    synonyms      the word replaced by a WordNet synonym (a word WordNet does not know is kept)

The randomness is a numpy Generator handed in per sample (proj.data.text: seeded by the run's seed, the epoch and
the sample's place in it), so a run, and a run resumed mid-epoch, draws the same edits on every machine.

Back-translation (into another language and back) needs a translation model, which cannot be had offline here:
it is not offered.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from proj.data.errors import DataError

# Debian's wordnet-base (apt-get install wordnet-base) puts WordNet 3.0's database here.
WORDNET = "/usr/share/wordnet"
KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
OPTIONS = ("word_delete", "word_insert", "word_swap", "typos", "synonyms")


class TextAugment:
    def __init__(
        self,
        word_delete: float = 0.0,
        word_insert: float = 0.0,
        word_swap: float = 0.0,
        typos: float = 0.0,
        synonyms: float = 0.0,
        wordnet: str = WORDNET,
    ) -> None:
        self.p = dict(zip(OPTIONS, (word_delete, word_insert, word_swap, typos, synonyms), strict=True))
        for name, value in self.p.items():
            if not 0.0 <= value < 1.0:
                raise DataError(f"data.{name}={value} must lie in [0, 1): the probability of an edit per word")
        self.thesaurus = read_wordnet(wordnet) if synonyms > 0 else {}

    @property
    def active(self) -> bool:
        return any(self.p.values())

    def __call__(self, text: str, rng: np.random.Generator) -> str:
        words = text.split()
        p = self.p
        if p["synonyms"]:
            words = [self.synonym(w, rng) if rng.random() < p["synonyms"] else w for w in words]
        for _ in range(rng.binomial(len(words), p["word_insert"]) if p["word_insert"] else 0):
            words.insert(int(rng.integers(len(words) + 1)), words[int(rng.integers(len(words)))])
        for _ in range(rng.binomial(len(words), p["word_swap"]) if p["word_swap"] else 0):
            i, j = rng.integers(len(words), size=2)
            words[i], words[j] = words[j], words[i]
        if p["word_delete"]:
            kept = [w for w in words if rng.random() >= p["word_delete"]]
            words = kept or [words[int(rng.integers(len(words)))]]
        if p["typos"]:
            words = [typo(w, rng) if rng.random() < p["typos"] else w for w in words]
        return " ".join(words)

    def synonym(self, word: str, rng: np.random.Generator) -> str:
        found = self.thesaurus.get(word.lower())
        return found[int(rng.integers(len(found)))] if found else word


def typo(word: str, rng: np.random.Generator) -> str:
    """The word with one spelling mistake: a letter inserted, dropped, swapped with the next, or replaced."""
    i = int(rng.integers(len(word)))
    kind = ("insert", "delete", "swap", "replace")[int(rng.integers(4))]
    if kind == "delete" and len(word) > 1:
        return word[:i] + word[i + 1 :]
    if kind == "swap" and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    near = neighbours(word[i].lower())
    letter = near[int(rng.integers(len(near)))]
    return word[:i] + letter + word[i + (kind != "insert") :]


@functools.cache
def neighbours(letter: str) -> str:
    """The keys next to `letter` on a QWERTY keyboard (any letter for a character that is not on it)."""
    for row, keys in enumerate(KEYBOARD):
        col = keys.find(letter)
        if col >= 0:
            near = keys[max(col - 1, 0) : col] + keys[col + 1 : col + 2]
            if row > 0:  # the rows are staggered: the keys above are at col and col + 1, those below at col - 1 and col
                near += KEYBOARD[row - 1][col : col + 2]
            if row + 1 < len(KEYBOARD):
                near += KEYBOARD[row + 1][max(col - 1, 0) : col + 1]
            return near
    return "abcdefghijklmnopqrstuvwxyz"


@functools.cache
def read_wordnet(folder: str) -> dict[str, list[str]]:
    """Each word WordNet knows -> its synonyms (the other words of its synsets, all parts of speech), read from the
    database files (data.noun, data.verb, data.adj, data.adv; the format of wndb(5WN)).

    Read here rather than with nltk's WordNetCorpusReader: that one also wants files Debian's wordnet-base does not
    ship (lexnames), and nltk 3.10 refuses to read outside its own data folders."""
    files = [Path(folder) / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.is_file() for f in files):
        raise DataError(
            f"data.synonyms needs WordNet's database in data.wordnet={folder!r}, which has no data.noun: "
            "apt-get install wordnet-base (Debian / Ubuntu), or point data.wordnet at a WordNet 3 dict folder"
        )
    synonyms: dict[str, set[str]] = {}
    for path in files:
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):  # the licence, at the top of each file
                continue
            fields = line.split()
            count = int(fields[3], 16)
            # words with "_" for spaces; adjectives may carry a marker such as (a) or (ip)
            words = {w.split("(")[0].replace("_", " ").lower() for w in fields[4 : 4 + 2 * count : 2]}
            for w in words:
                synonyms.setdefault(w, set()).update(words - {w})
    return {w: sorted(s) for w, s in synonyms.items() if s}
