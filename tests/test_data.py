"""DataModules: splits, standardisation, resampling, augmentation, MixUp / CutMix, and every dataset's errors."""

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import TensorDataset

from proj.data import CIFAR10DataModule, CSVDataModule, DataError, DigitsDataModule, ImageFolderDataModule
from proj.data.augment import BatchMix, cutmix
from proj.data.image_files import ImageFiles
from proj.data.loaders import split_tensors
from proj.data.sampling import ClassBalancedSampler


def digits(**kwargs) -> DigitsDataModule:
    dm = DigitsDataModule(**kwargs)
    dm.setup()
    return dm


def as_training(dm, training: bool = True):
    dm.trainer = SimpleNamespace(training=training)  # what on_after_batch_transfer reads
    return dm


# --- splits and standardisation ---------------------------------------------------------------------------


def test_splits_are_seeded_stratified_and_disjoint():
    a, b = DigitsDataModule(), DigitsDataModule()
    y = load_digits().target
    sa, sb = a.split_indices(y), b.split_indices(y)
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert sum(len(v) for v in sa.values()) == len(y)
    assert len(set(sa["train"]) | set(sa["val"]) | set(sa["test"])) == len(y)
    # stratified: each class's share of the test split is within one sample of its share of the data
    for c in range(10):
        expected = (y == c).sum() * 0.2
        assert abs((y[sa["test"]] == c).sum() - expected) <= 1
    other = DigitsDataModule(split_seed=1).split_indices(y)
    assert not np.array_equal(sa["test"], other["test"])


def test_standardisation_statistics_come_from_the_training_split_alone():
    dm = digits()
    images = load_digits().images / 16.0
    train = images[dm.split_indices(load_digits().target)["train"]]
    assert dm.stats["mean"][0] == pytest.approx(train.mean(), rel=1e-9)
    assert dm.stats["std"][0] == pytest.approx(train.std(), rel=1e-9)
    assert dm.stats["mean"][0] != pytest.approx(images.mean(), rel=1e-4)  # not the statistics of all splits
    whole = torch.cat([b[0] for b in dm.train_dataloader()])
    whole = dm.normalize(whole * dm.scale)
    assert whole.mean().item() == pytest.approx(0.0, abs=1e-5) and whole.std().item() == pytest.approx(1.0, abs=1e-3)


def test_saved_statistics_are_used_when_a_checkpoint_restores_the_datamodule():
    dm = digits()
    saved = dm.state_dict()
    other = digits(split_seed=3)
    assert other.stats != saved
    other.load_state_dict(saved)
    assert other.stats == saved


# --- resampling -----------------------------------------------------------------------------------------


def class_counts(indices, labels) -> np.ndarray:
    return np.bincount(labels[list(indices)])


@pytest.fixture
def labels():
    return torch.tensor([0] * 50 + [1] * 10 + [2] * 5)


def test_oversample_draws_every_class_as_often_as_the_largest(labels):
    sampler = ClassBalancedSampler(labels, "oversample", seed=0)
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == 150
    assert class_counts(drawn, labels.numpy()).tolist() == [50, 50, 50]
    assert set(drawn) == set(range(65))  # every original sample is kept


def test_undersample_cuts_every_class_to_the_smallest(labels):
    drawn = list(ClassBalancedSampler(labels, "undersample", seed=0))
    assert class_counts(drawn, labels.numpy()).tolist() == [5, 5, 5]
    assert len(set(drawn)) == 15


def test_balanced_sampling_makes_classes_about_equally_likely(labels):
    sampler = ClassBalancedSampler(labels, "balanced", seed=0)
    drawn = [i for epoch in range(40) for i in (sampler.set_epoch(epoch), list(sampler))[1]]
    shares = class_counts(drawn, labels.numpy()) / len(drawn)
    assert np.allclose(shares, 1 / 3, atol=0.03)


def test_sampler_is_reproducible_per_epoch_and_changes_between_epochs(labels):
    a, b = ClassBalancedSampler(labels, "oversample", seed=0), ClassBalancedSampler(labels, "oversample", seed=0)
    a.set_epoch(3), b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)


def test_under_ddp_each_rank_gets_its_own_share_of_the_resampled_epoch(labels):
    # What Lightning does with a custom sampler when use_distributed_sampler is on (one wrapper per rank).
    shares = []
    for rank in range(2):
        wrapper = DistributedSamplerWrapper(
            ClassBalancedSampler(labels, "oversample", seed=0), num_replicas=2, rank=rank
        )
        wrapper.set_epoch(0)
        shares.append(list(wrapper))
    assert len(shares[0]) == len(shares[1]) == 75
    both = sorted(shares[0] + shares[1])
    assert both == sorted(ClassBalancedSampler(labels, "oversample", seed=0))  # together: exactly one epoch


def test_train_loader_uses_the_configured_sampler():
    dm = digits(sampler="undersample")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, ClassBalancedSampler)
    labels = torch.cat([y for _, y in loader])
    assert torch.bincount(labels).unique().numel() == 1  # every class equally often


def test_balanced_class_weights_match_scikit_learn():
    dm = digits(class_weights="balanced")
    y = dm.train_labels().numpy()
    assert dm.class_weights == pytest.approx(compute_class_weight("balanced", classes=np.arange(10), y=y).tolist())
    assert digits().class_weights is None


# --- augmentation on the device ---------------------------------------------------------------------------

AFFINE = {"degrees": 15.0, "translate": (0.1, 0.1), "p": 1.0}


def augmented_digits():
    import kornia.augmentation as K

    return digits(augment=[K.RandomAffine(**AFFINE)])


def test_training_batches_are_augmented_differently_on_each_pass():
    dm = as_training(augmented_digits())
    batch = next(iter(dm.val_dataloader()))
    first, _ = dm.on_after_batch_transfer(batch, 0)
    second, _ = dm.on_after_batch_transfer(batch, 0)
    assert not torch.allclose(first, second)
    assert first.device == batch[0].device  # augmented where the batch is


def test_validation_batches_are_never_augmented():
    dm = as_training(augmented_digits(), training=False)
    batch = next(iter(dm.val_dataloader()))
    first, _ = dm.on_after_batch_transfer(batch, 0)
    second, _ = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(first, second)
    assert torch.allclose(first, dm.normalize(batch[0] * dm.scale))


def test_each_sample_of_a_batch_gets_its_own_random_parameters():
    dm = as_training(augmented_digits())
    image = dm.splits["train"].tensors[0][:1]
    batch = (image.repeat(8, 1, 1, 1), torch.zeros(8, dtype=torch.long))
    out, _ = dm.on_after_batch_transfer(batch, 0)
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8  # eight copies, eight different results


def test_mixup_targets_are_the_mixing_weights():
    torch.manual_seed(0)
    x = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 1, 4, 4).contiguous()  # sample i is the constant i
    y = torch.arange(6)
    mixed, target = BatchMix(6, mixup_alpha=0.4)(x, y)
    assert torch.allclose(target.sum(1), torch.ones(6))
    # each image's value is the target-weighted mean of the constants it was mixed from
    assert torch.allclose(mixed[:, 0, 0, 0], target @ torch.arange(6.0), atol=1e-5)


def test_cutmix_targets_equal_the_pasted_area():
    torch.manual_seed(0)
    x = torch.zeros(16, 1, 8, 8)
    other = torch.ones(16, 1, 8, 8)
    mixed, kept = cutmix(x, other, torch.rand(16))
    assert torch.allclose(1 - mixed.mean((1, 2, 3)), kept)
    _, target = BatchMix(4, cutmix_alpha=1.0)(torch.randn(4, 3, 8, 8), torch.arange(4))
    assert torch.allclose(target.sum(1), torch.ones(4))


def test_the_loss_takes_soft_targets():
    from proj.models import Classifier
    from proj.nets import MLP

    model = Classifier(MLP, num_outputs=3, input_shape=(4,)).eval()
    x, soft = torch.randn(5, 4), torch.softmax(torch.randn(5, 3), -1)
    loss = model.training_step((x, soft), 0)
    expected = -(soft * model(x).log_softmax(-1)).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


# --- datasets that read local files ----------------------------------------------------------------------


def write_cifar(root, n_train=20, n_test=10):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", n_train) for i in range(1, 6)), ("test_batch", n_test)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar_reads_the_pickle_folder_and_keeps_the_official_test_set(tmp_path):
    write_cifar(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), val_fraction=0.1)
    dm.prepare_data()
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [90, 10, 10]
    x = dm.splits["test"].tensors[0]
    assert x.dtype == torch.uint8 and x.shape == (10, 3, 32, 32)  # held compactly, scaled on the device
    assert len(dm.stats["mean"]) == 3


def test_cifar_batches_written_by_numpy_1_or_any_pickle_protocol_load(tmp_path):
    write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    official = pickle.dumps({b"data": np.ones((20, 3072), np.uint8), b"labels": [3] * 20}, protocol=2)
    (folder / "data_batch_1").write_bytes(official.replace(b"numpy._core.", b"numpy.core."))  # as numpy 1 wrote
    (folder / "data_batch_2").write_bytes(
        pickle.dumps({b"data": np.ones((20, 3072), np.uint8), b"labels": [3] * 20}, protocol=5)
    )
    x, y = CIFAR10DataModule(root=str(tmp_path)).read(("data_batch_1", "data_batch_2"))
    assert x.shape == (40, 3, 32, 32) and (x == 1).all() and (y == 3).all()


class Payload:
    """Unpickling it runs Path.touch: a stand-in for any code a crafted data file could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickle_payload_in_a_cifar_batch_does_not_run(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "payload_ran"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": Payload(marker)}))
    with pytest.raises(DataError, match="refers to pathlib") as err:
        CIFAR10DataModule(root=str(tmp_path)).setup()
    assert not marker.exists()
    assert str(batch) in str(err.value) and "cifar-10-python.tar.gz" in str(err.value)


def test_a_truncated_cifar_batch_is_a_data_error_naming_it_not_a_checkpoint_refusal(tmp_path):
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:-500])
    with pytest.raises(DataError, match="is not a readable CIFAR batch") as err:
        CIFAR10DataModule(root=str(tmp_path)).setup()
    assert str(batch) in str(err.value) and not isinstance(err.value, pickle.UnpicklingError)


def test_missing_cifar_names_the_path_and_how_to_get_it(tmp_path):
    dm = CIFAR10DataModule(root=str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in str(err.value)
    assert "cifar-10-python.tar.gz" in str(err.value)


def write_images(root, per_class=4, size=(10, 12)):
    for c, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, colour).save(root / f"class_{c}" / f"{i}.png")


def test_image_folder_reads_resizes_and_labels_by_folder_lazily_or_in_memory_alike(tmp_path):
    write_images(tmp_path)
    folders = {
        in_memory: ImageFolderDataModule(
            root=str(tmp_path), image_size=(8, 8), val_fraction=0.25, test_fraction=0.25, in_memory=in_memory
        )
        for in_memory in (False, True)
    }
    for dm in folders.values():
        dm.setup()
    lazy, held = folders.values()
    assert lazy.num_classes == 2 and lazy.input_shape == (3, 8, 8) and lazy.classes == ["class_0", "class_1"]
    assert isinstance(lazy.splits["train"], ImageFiles) and isinstance(held.splits["train"], TensorDataset)
    for split in ("train", "val", "test"):
        (x, y), (held_x, held_y) = split_tensors(lazy.splits[split]), split_tensors(held.splits[split])
        assert x.dtype == torch.uint8 and x.shape == (len(y), 3, 8, 8)
        assert torch.equal(x, held_x) and torch.equal(y, held_y)  # the same samples, split the same way
        assert (x[y == 0][:, 0] == 255).all() and (x[y == 1][:, 2] == 255).all()  # red class 0, blue class 1
    assert lazy.stats["mean"] == pytest.approx(held.stats["mean"]) and lazy.stats["input"] == held.stats["input"]


def test_a_file_found_broken_in_training_is_skipped_counted_and_listed_with_the_run(tmp_path, monkeypatch, capsys):
    from conftest import DEFAULT, QUICK, cli, usage_error

    write_images(tmp_path / "images", per_class=6)
    bad = tmp_path / "images" / "class_1" / "half.png"
    Image.new("RGB", (10, 12), (0, 0, 255)).save(bad)
    bad.write_bytes(bad.read_bytes()[:-30])  # no IEND: check_files would name it; with the check off, training meets it
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", DEFAULT, *QUICK, "--trainer.max_epochs=1", "--data=proj.data.ImageFolderDataModule",
            "--data.root=images", "--data.image_size=[8, 8]", "--data.val_fraction=0.25", "--data.test_fraction=0.25",
            "--data.check_files=false"]  # fmt: skip
    assert "images/class_1/half.png cannot be read" in usage_error(capsys, *args)  # on_bad_file: fail, the default
    with pytest.warns(UserWarning, match="1 unreadable file"):
        cli(*args, "--data.on_bad_file=skip")  # version_0: the failed run above left no run directory
    run = tmp_path / "logs" / "default" / "version_0"
    assert {line.split("\t")[0] for line in (run / "skipped_files.txt").read_text().splitlines()} == {
        "images/class_1/half.png"
    }
    assert (run / "checkpoints" / "last.ckpt").is_file()  # the other images trained


def test_a_16_bit_grayscale_png_keeps_its_tones(tmp_path):
    write_images(tmp_path)
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)  # 0 .. 63000 of 65535
    Image.fromarray(ramp).save(tmp_path / "class_0" / "deep.png")  # PIL writes a 16-bit PNG, mode I;16
    with Image.open(tmp_path / "class_0" / "deep.png") as im:
        assert im.mode == "I;16"
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=(8, 8), grayscale=True)
    x = dm.read_images([tmp_path / "class_0" / "deep.png"])[0, 0]
    assert np.abs(x.astype(int) - np.round(ramp / 257)).max() <= 1  # was: 255 wherever the value exceeded 255
    rgb = ImageFolderDataModule(root=str(tmp_path), image_size=(8, 8)).read_images([tmp_path / "class_0" / "deep.png"])
    assert (rgb[0] == x).all()  # the same tones in all three channels


def test_hidden_folders_and_files_are_neither_classes_nor_samples(tmp_path):
    write_images(tmp_path)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / ".ipynb_checkpoints" / "0-checkpoint.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "class_0" / "._0.png")  # macOS resource-fork twin
    (tmp_path / ".cache").mkdir()
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=(8, 8))
    assert dm.classes == ["class_0", "class_1"] and dm.num_classes == 2
    assert len(dm.paths) == 8 and not any(Path(p).name.startswith(".") for p in dm.paths)


def test_a_corrupt_image_is_reported_by_path_before_training(tmp_path, monkeypatch):
    write_images(tmp_path)
    bad = tmp_path / "class_1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    monkeypatch.chdir(tmp_path)
    from conftest import DEFAULT, QUICK, cli

    result = cli(
        "--config", DEFAULT, *QUICK, "--data=proj.data.ImageFolderDataModule", f"--data.root={tmp_path}",
        "--data.image_size=[8, 8]", "--data.val_fraction=0.25", "--data.test_fraction=0.25", run=False,
    )  # fmt: skip
    with pytest.raises(DataError, match="is not an image") as err:
        result.trainer.fit(result.model, datamodule=result.datamodule)
    assert str(bad) in str(err.value)
    assert result.trainer.global_step == 0


CSV = """f1,f2,label
1.0,10,a
2.0,,b
,30,a
4.0,40,b
5.0,50,a
6.0,60,b
7.0,70,a
8.0,80,b
9.0,90,a
10.0,100,b
"""


def test_csv_imputes_missing_values_from_the_training_split(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    dm = CSVDataModule(path=str(path), target="label", val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    assert dm.num_classes == 2 and dm.input_shape == (2,) and dm.classes == ["a", "b"]
    train = dm.split_indices(dm.y)["train"]
    expected = np.nanmean(dm.x[train], axis=0)
    assert dm.stats["impute"] == pytest.approx(expected.tolist())
    all_x = torch.cat([dm.splits[s].tensors[0] for s in ("train", "val", "test")])
    assert not all_x.isnan().any()


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("f1,label\n1,a\nx,b\n", {"target": "label"}, "t.csv:3: column 'f1' holds 'x', not a number"),
        ("f1,label\n1,a\n2,b\n", {"target": "class"}, "data.target='class' is not a column"),
        ("f1,label\n1,a\n2,\n", {"target": "label"}, "t.csv:3: the target column 'label' is missing"),
    ],
)
def test_csv_errors_name_the_column_and_row(tmp_path, text, kwargs, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CSVDataModule(path=str(path), **kwargs)
