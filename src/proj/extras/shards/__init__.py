"""Data beyond memory, one disk or one machine: `python -m proj shard` writes a data config's splits (an image
folder, the bundled arrays, a CSV) or a CSV of any size as Parquet shards with their index; `ShardDataModule`
streams them from a folder or an object-store URL, shuffled, split across ranks and nodes, with workers, and
resumable mid-epoch. Docs: docs/extras/shards.md."""

COMMANDS = {"shard": ("proj.extras.shards.write", "write a dataset as Parquet shards, to stream with ShardDataModule")}


def __getattr__(name: str):  # the data module is imported when a config names it, not by `python -m proj --help`
    if name == "ShardDataModule":
        from proj.extras.shards.datamodule import ShardDataModule

        return ShardDataModule
    raise AttributeError(name)
