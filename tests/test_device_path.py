"""The device-resident data path: every sample once per epoch, reproducible, sharded per rank, and trains."""

import torch

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
