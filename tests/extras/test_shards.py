"""The shards extra: `shard` writes a data module's splits (or a CSV, in blocks) as Parquet shards; ShardDataModule
streams them shuffled, split across ranks, with workers, and resumes mid-epoch where an uninterrupted run is."""

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from proj.data import CSVDataModule, DataError, DigitsDataModule
from proj.extras.shards import ShardDataModule
from proj.extras.shards.stream import StreamLoader, handed_out

from conftest import CONFIGS, DEFAULT, QUICK, ROOT, cli, cli_in, usage_error
from helpers import digits_as_png_folder, kill_at

pytestmark = pytest.mark.xdist_group("shards")  # the module's shards are written once, on one worker

IMAGES = ["--data=proj.data.ImageFolderDataModule", "--data.image_size=[8, 8]", "--data.grayscale=true"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """400 digits as PNGs, and as image shards of 50 rows (280 training images); the digits arrays as shards."""
    work = tmp_path_factory.mktemp("shards")
    digits_as_png_folder(work / "png", count=400)
    cli_in(work, "shard", "--config", DEFAULT, *IMAGES, "--data.root=png", "--out=images", "--rows_per_shard=50")
    cli_in(work, "shard", "--config", DEFAULT, "--out=digits", "--rows_per_shard=300")
    return work


def test_the_streamed_splits_hold_the_data_modules_samples_and_statistics(shards):
    digits = DigitsDataModule()
    digits.setup()
    stream = ShardDataModule(url=str(shards / "digits"), batch_size=64)
    stream.setup()
    assert stream.stats == digits.stats and stream.classes == digits.classes  # JSON keeps a float's every digit
    for split in ("val", "test"):  # in order: what predictions.csv lists
        x, y = stream.splits[split].stack()
        assert torch.equal(x, digits.splits[split].tensors[0]) and torch.equal(y, digits.splits[split].tensors[1])
        assert stream.sample_ids(split) == digits.sample_ids(split)
    x, y = stream.splits["train"].stack()
    assert sorted(map(bytes, x.numpy())) == sorted(map(bytes, digits.splits["train"].tensors[0].numpy()))
    assert stream.train_labels().bincount().tolist() == digits.train_labels().bincount().tolist()


def test_an_object_store_url_is_read_through_fsspec(shards):
    import fsspec

    memory = fsspec.filesystem("memory")
    for path in (shards / "digits").rglob("*"):
        if path.is_file():
            memory.pipe(f"/digits/{path.relative_to(shards / 'digits')}", path.read_bytes())
    stream = ShardDataModule(url="memory://digits", batch_size=64)
    stream.setup()
    digits = DigitsDataModule()
    digits.setup()
    assert torch.equal(stream.splits["test"].stack()[1], digits.splits["test"].tensors[1])


def test_a_loader_resumed_from_its_state_with_workers_continues_with_the_next_batches(shards):
    def loader():
        dm = ShardDataModule(url=str(shards / "images"), batch_size=32, shuffle_window=96)
        dm.setup()
        return StreamLoader(dm.stream("train", train=True), epoch_of=lambda: 1, num_workers=2)

    straight = list(loader())
    assert len(straight) == 9  # 280 images, batches of 32: windows of 3 batches, read by workers 0, 1, 0
    for done in (4, 5, 7):  # batches handed out before the interruption
        resumed = loader()
        resumed.load_state_dict({"epoch": 1, "batches": done})
        again = list(resumed)
        assert len(again) == 9 - done and all(
            torch.equal(a[0], b[0]) for a, b in zip(straight[done:], again, strict=True)
        )
    assert handed_out([6, 3], 5) == ([3, 2], 1) and handed_out([6, 3], 8) == ([5, 3], 1)  # worker 1 ran dry at 6


def test_two_ranks_see_every_training_sample_exactly_once_and_the_same_number_of_batches(shards):
    epochs = []
    for rank in (0, 1):
        dm = ShardDataModule(url=str(shards / "images"), batch_size=32, shuffle_window=96)
        dm.setup()
        stream = dm.stream("train", train=True)
        stream.rank, stream.world_size = rank, 2
        stream.per_rank = 140
        epochs.append([x for x, _ in stream])
    assert len(epochs[0]) == len(epochs[1]) == 5
    seen = Counter(hashlib.sha1(x.numpy().tobytes()).hexdigest() for epoch in epochs for batch in epoch for x in batch)
    dm = ShardDataModule(url=str(shards / "images"), batch_size=32)
    dm.setup()
    everything = Counter(hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in dm.splits["train"].stack()[0])
    assert seen == everything


def test_a_damaged_sample_in_a_shard_is_named_by_its_file_and_row(shards, tmp_path):
    import shutil

    import pyarrow as pa

    shutil.copytree(shards / "images", tmp_path / "images")
    shard = tmp_path / "images" / "test" / "shard-00000.parquet"
    table = pq.read_table(shard)
    damaged = table.column("x").to_pylist()
    damaged[3] = b"\x89PNG not an image"
    pq.write_table(table.set_column(0, "x", pa.array(damaged, pa.binary())), shard)
    stream = ShardDataModule(url=str(tmp_path / "images"), batch_size=32)
    stream.setup()
    with pytest.raises(DataError, match=r"test/shard-00000.parquet row 3 cannot be decoded"):
        stream.splits["test"].stack()


RUN = [
    "fit", "--config", DEFAULT, "--config", str(CONFIGS / "data" / "shards.yaml"), "--data.num_workers=2",
    "--data.batch_size=32", "--data.shuffle_window=96", "--data.mixup_alpha=0.2",
    '--data.sample_augment=[{"class_path": "kornia.augmentation.RandomResizedCrop", '
    '"init_args": {"size": [8, 8], "scale": [0.6, 1.0]}}]',
    "--trainer.max_epochs=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false", "--test_after_fit=false",
]  # fmt: skip
LAST = Path("logs/default/version_0/checkpoints/last.ckpt")


@pytest.mark.slow
def test_a_streamed_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights_bitwise(shards, tmp_path):
    url = f"--data.url={shards / 'images'}"
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    straight.mkdir(), stopped.mkdir()
    cli_in(straight, *RUN, url)
    # In this process (tests/test_preemption.py checks the status of a process of its own): KillAt signals this
    # process, and `python -m proj` raises the SystemExit its status would be.
    with pytest.raises(SystemExit) as preempted:
        cli_in(stopped, *RUN, url, kill_at(epoch=1, batch=4, signal="SIGTERM"))
    assert preempted.value.code == 143
    assert torch.load(stopped / LAST, weights_only=True)["global_step"] == 9 + 5  # mid-epoch 1, after batch 4
    cli_in(stopped, "fit", "--resume", str(LAST.parent.parent))
    a, b = (torch.load(d / LAST, weights_only=True)["state_dict"] for d in (straight, stopped))
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_ranks_stream_disjoint_halves_of_each_epoch(shards, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = ["fit", "--config", DEFAULT, "--config", str(CONFIGS / "data" / "shards.yaml"), "--data.batch_size=32",
            f"--data.url={shards / 'images'}", "--trainer.strategy=ddp", "--trainer.devices=2",
            "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--test_after_fit=false",
            '--trainer.callbacks+={"class_path": "helpers.RecordSeen"}']  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "proj", *args], cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = (json.loads((tmp_path / f"seen_rank{r}.json").read_text()) for r in (0, 1))
    assert len(first) == len(second) == 140
    dm = ShardDataModule(url=str(shards / "images"), batch_size=32)
    dm.setup()
    stored = [hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in dm.splits["train"].stack()[0]]
    assert Counter(first + second) == Counter(stored)  # each of the 280 training images once


def test_a_csv_larger_than_a_block_is_sharded_in_blocks_and_learns_like_a_baseline(tmp_path, monkeypatch):
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    data = load_breast_cancer()
    order = np.argsort(data.target, kind="stable")  # sorted by class: every shard must still mix both
    x, y = data.data[order], data.target[order]
    x[::7, 3] = np.nan  # missing values, filled with the training mean
    header = ",".join(f"f{i}" for i in range(x.shape[1])) + ",label\n"
    rows = "".join(
        ",".join("" if np.isnan(v) else f"{v:.6g}" for v in r) + f",{'BM'[t]}\n" for r, t in zip(x, y, strict=True)
    )
    (tmp_path / "big.csv").write_text(header + rows)  # about 100 KB: ten blocks of 10 KB
    monkeypatch.chdir(tmp_path)
    cli("shard", "--table=big.csv", "--target=label", "--out=table", "--rows_per_shard=100", "--block_mb=0.01")
    index = json.loads((tmp_path / "table" / "index.json").read_text())
    assert index["classes"] == ["B", "M"] and len(index["splits"]["train"]["shards"]) == 4
    in_memory = CSVDataModule(path="big.csv", target="label")  # the same split, statistics computed in memory
    in_memory.setup()
    for key in ("impute", "mean", "std"):
        assert index["stats"][key] == pytest.approx(in_memory.stats[key], rel=1e-4), key
    for shard in index["splits"]["train"]["shards"]:
        assert set(pq.read_table(tmp_path / "table" / shard["file"]).column("y").to_pylist()) == {0, 1}

    streamed = ["--config", str(CONFIGS / "data" / "shards.yaml"), "--data.url=table", "--data.num_workers=0"]
    mlp = ["--model.init_args.net=proj.nets.MLP", "--trainer.max_epochs=15", *QUICK[2:]]
    fitted = cli("fit", "--config", DEFAULT, *streamed, *mlp)
    accuracy = float(fitted.trainer.callback_metrics["test/acc"])
    train, test = (in_memory.splits[s].tensors for s in ("train", "test"))
    mean, std = torch.tensor(in_memory.stats["mean"]), torch.tensor(in_memory.stats["std"])
    baseline = LogisticRegression(max_iter=2000).fit((train[0] - mean) / std, train[1])
    assert accuracy >= baseline.score((test[0] - mean) / std, test[1]) - 0.04


@pytest.mark.parametrize(
    ("option", "named"),
    [("--test_fraction=1.5", "--test_fraction=1.5 must lie strictly between 0 and 1"),
     ("--val_fraction=0.01", "--val_fraction: a stratified split of 8 samples of 2 classes would hold out 1")],
)  # fmt: skip
def test_a_bad_table_split_names_the_shard_option(in_tmp, capsys, option, named):
    (in_tmp / "t.csv").write_text("a,label\n" + "".join(f"{i},{'xy'[i % 2]}\n" for i in range(10)))
    error = usage_error(capsys, "shard", "--table=t.csv", "--target=label", "--out=o", option)
    assert named in error, error
    assert not (in_tmp / "o" / "index.json").exists()


@pytest.mark.parametrize(
    ("url", "more", "named"),
    [
        ("{shards}/nowhere", [], "data.url='{shards}/nowhere' does not exist"),
        ("memory://nowhere", [], "data.url='memory://nowhere' does not exist"),
        ("{shards}/png", [], "data.url='{shards}/png' holds no index.json"),  # a folder, but not of shards
        ("{shards}/digits", ["--data.sampler=oversample"], "data.sampler='oversample' draws samples by index"),
        ("{shards}/digits", ['--data.sample_augment=[{"class_path": "kornia.augmentation.RandomHorizontalFlip"}]'],
         "data.sample_augment augments images; these shards hold array samples"),
    ],
    ids=["missing folder", "missing url", "folder without index", "sampler", "sample_augment of arrays"],
)  # fmt: skip
def test_a_bad_shard_url_or_setting_is_one_line_before_training(shards, in_tmp, capsys, url, more, named):
    url = url.format(shards=shards)
    args = ["fit", "--config", DEFAULT, "--config", str(CONFIGS / "data" / "shards.yaml"), f"--data.url={url}"]
    error = usage_error(capsys, *args, *more, *QUICK)
    assert named.format(shards=shards) in error, error
    assert not list(in_tmp.rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("config", "named"),
    [("../experiment/digits_multilabel.yaml", "task is multilabel: shards hold classification or regression data"),
     ("japanese_vowels.yaml", "splits are neither files nor arrays: nothing to shard")],
)  # fmt: skip
def test_data_shards_cannot_hold_is_refused_in_one_line(in_tmp, capsys, config, named):
    error = usage_error(capsys, "shard", "--config", DEFAULT, "--config", str(CONFIGS / "data" / config), "--out=o")
    assert named in error, error
    assert not (in_tmp / "o" / "index.json").exists()
