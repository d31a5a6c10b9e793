"""The device-resident data path: every sample once per epoch, reproducible, sharded per rank, and trains."""

import torch
from lightning.pytorch import Callback

from proj.data.device import DeviceBatches
from proj.data.sampling import ClassBalancedSampler

from conftest import DEFAULT, QUICK, cli


def test_each_epoch_is_a_seeded_permutation_that_changes_between_epochs():
    x, y = torch.arange(100.0).view(100, 1), torch.arange(100)
    batches = DeviceBatches(x, y, batch_size=16, seed=3)
    first = torch.cat([b for _, b in batches])
    assert sorted(first.tolist()) == list(range(100)) and len(batches) == 7
    assert torch.equal(first, torch.cat([b for _, b in DeviceBatches(x, y, 16, seed=3)]))  # same seed, same order
    batches.set_epoch(1)
    assert not torch.equal(first, torch.cat([b for _, b in batches]))


def test_ranks_get_disjoint_equal_shares():
    x, y = torch.zeros(10, 1), torch.arange(10)
    shares = [torch.cat([b for _, b in DeviceBatches(x, y, 4, seed=0, rank=r, world_size=3)]) for r in range(3)]
    assert [len(s) for s in shares] == [4, 4, 4]  # padded like DistributedSampler
    assert set(torch.cat(shares).tolist()) == set(range(10))


def test_resampling_sampler_drives_the_device_path():
    y = torch.tensor([0] * 30 + [1] * 5)
    batches = DeviceBatches(torch.zeros(35, 1), y, 8, order=ClassBalancedSampler(y, "oversample"))
    labels = torch.cat([b for _, b in batches])
    assert torch.bincount(labels).tolist() == [30, 30]


def test_a_fit_on_the_device_path_learns(in_tmp):
    result = cli("fit", "--config", DEFAULT, *QUICK, "--trainer.max_epochs=3", "--trainer.limit_train_batches=null",
                 "--data.init_args.device_resident=true")  # fmt: skip
    assert isinstance(result.datamodule.train_dataloader(), DeviceBatches)
    assert float(result.trainer.callback_metrics["test/acc"]) > 0.8


class SeeBatches(Callback):
    """The training batches as the model receives them, with the labels that identify them."""

    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch)


def test_device_path_feeds_the_model_what_the_dataloader_path_does(in_tmp):
    # Without augmentation the device path scales and standardises the split once, not every batch: a batch
    # must still be, sample for sample, what the DataLoader path's per-batch transform gives.
    seen = SeeBatches()
    result = cli("--config", DEFAULT, *QUICK, "--data.init_args.device_resident=true", run=False)
    result.trainer.callbacks.append(seen)
    result.trainer.fit(result.model, datamodule=result.datamodule)
    dm = result.datamodule
    assert dm.prepared
    x, y = dm.splits["train"].tensors
    dm.prepared = False  # the per-batch transform, as the DataLoader path applies it
    expected = dm.on_after_batch_transfer((x, y), 0)[0].flatten(1)
    for xb, yb in seen.batches:  # each sample is, bit for bit, a transformed training sample with its label
        same = (expected[None] == xb.flatten(1)[:, None]).all(-1) & (y[None] == yb[:, None])
        assert same.any(1).all()
