"""The shard index: index.json beside the shards, written by `shard`, read by ShardDataModule.

    <url>/index.json                      what the shards hold (below)
    <url>/<split>/shard-00000.parquet     rows of: x (the sample's bytes), y (its target), id (its name)

index.json holds the format, the sample `kind` (image: an encoded image file; array: a tensor's raw bytes;
table: a row of float features with NaN where missing), `input_shape`, the task and classes (or target names),
the training statistics (`stats`, as a data module's checkpoint holds them), and for each split its shards with
their row counts and, for a classification, its class counts. Every path is relative to the index, so a shard
folder can be copied or uploaded whole. URLs go through fsspec: s3://, gs://, az://, https://, memory:// and
local paths alike (an object store needs its fsspec package, e.g. s3fs, and its credentials).
"""

from __future__ import annotations

import json
from typing import Any

import fsspec
import pyarrow as pa

from proj.data.errors import DataError

INDEX = "index.json"
FORMAT = "proj-shards/1"
KINDS = ("image", "array", "table")
SPLITS = ("train", "val", "test")


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def read_index(url: str) -> dict[str, Any]:
    """The index at `url`, checked: a missing folder or index is one line naming it."""
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise DataError(f"data.url={url!r} does not exist: give a shard folder written by `python -m proj shard`")
    if not fs.exists(join(path, INDEX)):
        raise DataError(
            f"data.url={url!r} holds no {INDEX}: it is not a shard folder written by `python -m proj shard` (or "
            "its upload is incomplete: the index is written last)"
        )
    with fs.open(join(path, INDEX)) as f:
        index = json.load(f)
    if index.get("format") != FORMAT or index.get("kind") not in KINDS:
        raise DataError(f"{join(url, INDEX)} is not a {FORMAT} index; write the shards again with this template")
    return index


def write_index(url: str, index: dict[str, Any]) -> None:
    """index.json, written once every shard is: what each split holds is printed."""
    for split, part in index["splits"].items():
        print(f"{split}: {part['rows']} samples in {len(part['shards'])} shard(s)")
    with fsspec.open(join(url, INDEX), "w") as f:
        json.dump({"format": FORMAT, **index}, f, indent=1)
    print(f"wrote {join(url, INDEX)}")


def schema(kind: str, task: str, targets: int) -> pa.Schema:
    """A shard's columns: x (an image file's or an array's bytes, or a table row's floats), y (a class index, or
    `targets` values), id."""
    x = pa.list_(pa.float32()) if kind == "table" else pa.binary()
    values = pa.list_(pa.float32()) if targets > 1 else pa.float32()
    y = pa.int64() if task == "classification" else values
    return pa.schema([("x", x), ("y", y), ("id", pa.string())])


def open_shard(url: str, name: str) -> Any:
    """A new shard file `name` (e.g. train/shard-00000.parquet) under url, its folder made, open for writing."""
    fs, path = fsspec.core.url_to_fs(join(url, name))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    return fs.open(path, "wb")
