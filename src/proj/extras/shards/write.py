"""`python -m proj shard`: a dataset as Parquet shards with their index, for ShardDataModule to stream.

    python -m proj shard --config configs/data/image_folder.yaml --out shards/images
    python -m proj shard --config configs/default.yaml --out shards/digits        # the bundled arrays
    python -m proj shard --table big.csv --target label --out s3://bucket/big     # a CSV of any size, in chunks

From a data config, the data module's own splits (stratified, seeded), statistics and classes are written: an
image folder's files as their original bytes (never decoded here), arrays as raw bytes. With --table, the CSV is
read twice in chunks of --chunk_rows (the target column, then the features), never whole: the splits are
stratified over the target, the statistics (mean imputation, mean and std per feature) summed over the training
rows. Rows are written in a seeded random order, so that a shard mixes the classes of a sorted file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from torch.utils.data import TensorDataset

from proj.cli.config_commands import ConfigCommandCLI, run_config_command
from proj.cli.parser import UsageError, run_function
from proj.data.errors import DataError
from proj.data.image_files import ImageFiles
from proj.data.splits import check_split_settings
from proj.extras.shards.index import SPLITS, open_shard, schema, write_index
from proj.extras.shards.table import write_table


def command(name: str, args: list[str]) -> Any:
    if any(a == "--table" or a.startswith("--table=") for a in args):  # a CSV alone: no fit config to build
        return run_function(name, shard_table, args, positional=False)
    return run_config_command(name, shard, args)


def shard(cli: ConfigCommandCLI, out: str, rows_per_shard: int = 1000) -> str:
    """Write the config's data as Parquet shards (its splits, statistics and classes), to stream with
    proj.extras.shards.ShardDataModule. A CSV of any size: `shard --table FILE --target COLUMN --out DIR`.

    Args:
        out: the shard folder to write: a path, or an fsspec URL (s3://bucket/name needs s3fs).
        rows_per_shard: samples per shard file (about 10 MB of 96x96 JPEGs at 1000).
    """
    check_rows(rows_per_shard)
    dm = cli.datamodule
    dm.setup("fit")
    return write_all(out, data_module_index(dm), lambda split: data_module_rows(dm, split), rows_per_shard)


def shard_table(
    table: str,
    target: str,
    out: str,
    task: Literal["classification", "regression"] = "classification",
    rows_per_shard: int = 100_000,
    block_mb: float = 16,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> str:
    """Write a CSV of any size as Parquet shards, read in blocks (never whole): a seeded split, stratified for a
    classification, and the training rows' statistics. Streamed by proj.extras.shards.ShardDataModule.

    Args:
        table: the CSV file: numeric feature columns (empty, NA or NaN where missing) and the target column.
        target: the column the model predicts.
        out: the shard folder to write: a path, or an fsspec URL (s3://bucket/name needs s3fs).
        task: classification (the target holds labels) or regression (numbers).
        rows_per_shard: rows per shard file.
        block_mb: megabytes of CSV read at a time.
        val_fraction, test_fraction, seed: the split of the rows.
    """
    check_rows(rows_per_shard)
    try:
        check_split_settings(val_fraction, test_fraction, 0, 0)
        index = write_table(
            out, Path(table), target, task, rows_per_shard, block_mb, seed, (val_fraction, test_fraction)
        )
    except DataError as err:
        # the split's checks name the data module's keys: here they are this command's options
        raise UsageError(re.sub(r"\bdata\.(val_fraction|test_fraction)", r"--\1", str(err))) from None
    write_index(out, index)
    return out


def check_rows(rows_per_shard: int) -> None:
    if rows_per_shard < 1:
        raise UsageError(f"--rows_per_shard={rows_per_shard} must be at least 1")


def data_module_index(dm: Any) -> dict[str, Any]:
    files = isinstance(dm.splits["train"], ImageFiles)
    if not files and not isinstance(dm.splits["train"], TensorDataset):
        raise UsageError(f"{type(dm).__name__}'s splits are neither files nor arrays: nothing to shard")
    if dm.task not in ("classification", "regression"):  # a shard's row holds one class index or target values
        raise UsageError(f"{type(dm).__name__}'s task is {dm.task}: shards hold classification or regression data")
    index = {
        "kind": "image" if files else "array",
        "input_shape": list(dm.input_shape),
        "task": dm.task,
        "classes": list(dm.classes) if dm.is_classification else None,
        "target_names": list(dm.target_names),
        "features": list(getattr(dm, "features", None) or []) or None,
        "stats": dm.stats,
    }
    if files:
        index["image"] = {"size": list(dm.image_size), "mode": dm.mode}
    return index


def data_module_rows(dm: Any, split: str) -> Any:
    """(x bytes, y, id) of each sample of a split, in the split's (seeded, shuffled) order."""
    data, ids = dm.splits[split], dm.sample_ids(split)
    if isinstance(data, ImageFiles):
        for path, label, name in zip(data.paths, data.labels.tolist(), ids, strict=True):
            yield Path(path).read_bytes(), label, name
    else:
        x, y = data.tensors
        for i in range(len(y)):
            yield x[i].numpy().tobytes(), y[i].tolist(), ids[i]


def write_all(out: str, index: dict[str, Any], rows: Any, rows_per_shard: int) -> str:
    """Each split's rows as shards under out/<split>/, then index.json: an index exists only beside whole shards."""
    splits = {}
    for split in SPLITS:
        shards, counts = write_split(out, split, rows(split), rows_per_shard, index)
        splits[split] = {"rows": sum(s["rows"] for s in shards), "shards": shards, "class_counts": counts}
    write_index(out, {**index, "splits": splits})
    return out


def write_split(out: str, split: str, rows: Any, rows_per_shard: int, index: dict[str, Any]):
    shards, counts, batch = [], np.zeros(len(index["classes"] or []), dtype=np.int64), []
    columns_of = schema(index["kind"], index["task"], len(index["target_names"]))

    def flush() -> None:
        name = f"{split}/shard-{len(shards):05d}.parquet"
        xs, ys, ids = zip(*batch, strict=True)
        with open_shard(out, name) as f:
            pq.write_table(pa.table({"x": xs, "y": ys, "id": ids}, schema=columns_of), f, row_group_size=256)
        shards.append({"file": name, "rows": len(batch)})
        batch.clear()

    for row in rows:
        batch.append(row)
        if index["task"] == "classification":
            counts[row[1]] += 1
        if len(batch) == rows_per_shard:
            flush()
    if batch:
        flush()
    if not shards:
        raise DataError(f"the {split} split is empty: nothing to write")
    return shards, counts.tolist() if index["task"] == "classification" else None
