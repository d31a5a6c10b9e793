"""A CSV of any size as shards (`shard --table`): read in blocks with pyarrow, never whole.

Pass 1 reads the target column alone: the classes (sorted as CSVDataModule sorts them) and the seeded,
stratified split, which need one number per row. Pass 2 reads the features block by block and sends each row to
a shard of its split chosen at random (a seeded permutation of the split's rows), so every shard mixes the whole
file even when the file is sorted by class. The statistics are summed over the training rows as they pass: the
mean of each feature (ignoring missing values) fills its missing values, and the std is that of the filled
column, as CSVDataModule computes them. At most MAX_OPEN shard files per split are open at once (their count
bounds --rows_per_shard from below); each buffers one row group.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from proj.data.errors import DataError
from proj.data.splits import split_indices
from proj.data.tabular import natural_key
from proj.extras.shards.index import SPLITS, open_shard, schema

MISSING = ["", "na", "NA", "n/a", "N/A", "nan", "NaN", "NAN", "null", "NULL", "none", "None", "?"]
MAX_OPEN = 256
ROW_GROUP = 256


def csv_reader(path: Path, columns: list[str], types: dict[str, Any], block_mb: float) -> Any:
    read = pcsv.ReadOptions(block_size=int(block_mb * 2**20))
    convert = pcsv.ConvertOptions(
        include_columns=columns, column_types=types, null_values=MISSING, strings_can_be_null=True
    )
    return pcsv.open_csv(path, read_options=read, convert_options=convert)


def blocks(path: Path, columns: list[str], types: dict[str, Any], block_mb: float) -> Any:
    """The CSV's record batches; a value of the wrong type is one line naming the file and pyarrow's row."""
    try:
        yield from csv_reader(path, columns, types, block_mb)
    except pa.ArrowInvalid as err:
        raise DataError(f"{path}: {str(err).splitlines()[0]}: fix that value, or leave its column out") from None


def read_targets(path: Path, target: str, task: str, block_mb: float) -> tuple[np.ndarray, list[str]]:
    """Pass 1: class indices (or values) of every row, and the classes found (natural order)."""
    kind = pa.string() if task == "classification" else pa.float64()
    names: dict[str, int] = {}
    parts, done = [], 0
    for batch in blocks(path, [target], {target: kind}, block_mb):
        col = batch.column(0)
        if col.null_count:
            line = done + int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0]) + 2
            raise DataError(f"{path}:{line}: the target column {target!r} is missing; drop or label that row")
        if task == "classification":
            coded = pc.dictionary_encode(col)
            local = np.array([names.setdefault(v, len(names)) for v in coded.dictionary.to_pylist()], dtype=np.int64)
            parts.append(local[coded.indices.to_numpy()])
        else:
            parts.append(col.to_numpy().astype(np.float32))
        done += len(col)
    y = np.concatenate(parts) if parts else np.zeros(0)
    if task != "classification":
        return y, []
    classes = sorted(names, key=natural_key)
    remap = np.array([classes.index(name) for name in names], dtype=np.int64)
    return remap[y], classes


class SplitWriter:
    """The shards of one split, each row sent to a seeded random shard, written a row group at a time."""

    def __init__(self, out: str, split: str, rows: int, rows_per_shard: int, schema: pa.Schema, seed: int) -> None:
        count = max(1, min(math.ceil(rows / rows_per_shard), MAX_OPEN))
        self.slot = np.random.default_rng(seed).permutation(rows) % count  # row k of the split -> its shard
        self.out, self.split, self.schema = out, split, schema
        self.buffers: list[list[tuple]] = [[] for _ in range(count)]
        self.writers: dict[int, Any] = {}
        self.rows = [0] * count
        self.seen = 0

    def add(self, x: list[float], y: Any, name: str) -> None:
        shard = int(self.slot[self.seen])
        self.seen += 1
        self.buffers[shard].append((x, y, name))
        if len(self.buffers[shard]) == ROW_GROUP:
            self.flush(shard)

    def flush(self, shard: int) -> None:
        rows = self.buffers[shard]
        if not rows:
            return
        if shard not in self.writers:
            handle = open_shard(self.out, self.file(shard))
            self.writers[shard] = (handle, pq.ParquetWriter(handle, self.schema))
        xs, ys, ids = zip(*rows, strict=True)
        self.writers[shard][1].write_table(pa.table({"x": xs, "y": ys, "id": ids}, schema=self.schema))
        self.rows[shard] += len(rows)
        rows.clear()

    def file(self, shard: int) -> str:
        return f"{self.split}/shard-{shard:05d}.parquet"

    def close(self) -> list[dict[str, Any]]:
        for shard in range(len(self.buffers)):
            self.flush(shard)
        for handle, writer in self.writers.values():
            writer.close()
            handle.close()
        return [{"file": self.file(s), "rows": n} for s, n in enumerate(self.rows) if n]


def write_table(
    out: str, path: Path, target: str, task: str, rows_per_shard: int, block_mb: float, seed: int, fractions: tuple
) -> dict[str, Any]:
    """Both passes; returns the index (without its format line)."""
    if not path.is_file():
        raise DataError(f"--table={str(path)!r} does not exist: give the path of a CSV file")
    with open(path, newline="") as f:
        header = [h.strip() for h in next(csv.reader(f), [])]
    if target not in header:
        raise DataError(f"--target={target!r} is not a column of {path}; columns: {', '.join(header)}")
    features = [h for h in header if h != target]
    y, classes = read_targets(path, target, task, block_mb)
    stratify = task == "classification"
    indices = split_indices(y, stratify=stratify, val_fraction=fractions[0], test_fraction=fractions[1], seed=seed,
                            classes=classes)  # fmt: skip
    where = np.empty(len(y), dtype=np.int8)
    for code, split in enumerate(SPLITS):
        where[indices[split]] = code
    columns = schema("table", task, 1)
    writers = [SplitWriter(out, s, len(indices[s]), rows_per_shard, columns, seed + i) for i, s in enumerate(SPLITS)]
    sums = np.zeros((3, len(features)))  # over the training rows: present count, sum, sum of squares
    done = 0
    for batch in blocks(path, features, dict.fromkeys(features, pa.float64()), block_mb):
        x = np.column_stack([batch.column(i).to_numpy(zero_copy_only=False) for i in range(len(features))])
        x = x.astype(np.float32)
        codes = where[done : done + len(x)]
        train = x[codes == 0].astype(np.float64)
        present = ~np.isnan(train)
        sums += [present.sum(0), np.where(present, train, 0).sum(0), np.where(present, train**2, 0).sum(0)]
        for r, (row, code) in enumerate(zip(x.tolist(), codes.tolist(), strict=True)):
            writers[code].add(row, y[done + r].item(), f"{path.name}:{done + r + 2}")
        done += len(x)
    count, total, total_sq = sums
    empty = [f for f, n in zip(features, count, strict=True) if n == 0]
    if empty:
        raise DataError(f"{path}: feature column(s) {empty} have no value in the training split")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq - count * mean**2, 0) / len(indices["train"])).clip(1e-6)
    splits = {}
    for split, writer in zip(SPLITS, writers, strict=True):
        shards = writer.close()
        counts = np.bincount(y[indices[split]], minlength=len(classes)).tolist() if stratify else None
        splits[split] = {"rows": len(indices[split]), "shards": shards, "class_counts": counts}
    stats: dict[str, Any] = {"impute": mean.tolist(), "mean": mean.tolist(), "std": std.tolist()}
    stats["input"] = {"dtype": "float32", "scale": 1.0, "features": features}
    if not stratify:
        stats["target_mean"], stats["target_std"] = (
            [float(y[indices["train"]].mean())],
            [float(max(y[indices["train"]].std(), 1e-6))],
        )
    return {
        "kind": "table", "input_shape": [len(features)], "task": task, "classes": classes if stratify else None,
        "target_names": [] if stratify else [target], "features": features, "stats": stats, "splits": splits,
    }  # fmt: skip
