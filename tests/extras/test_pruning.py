"""The pruning extra: gradual magnitude pruning while training, made permanent in the checkpoints."""

import pytest
import torch

from conftest import CONFIGS, DEFAULT, cli

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("default_run")]  # compared with the default run


def test_a_pruned_fit_saves_the_configured_sparsity_and_keeps_accuracy(in_tmp, default_run):
    pruned = cli("fit", "--config", DEFAULT, "--config", str(CONFIGS / "callbacks" / "pruning.yaml"),
                 "--trainer.enable_progress_bar=false")  # fmt: skip
    accuracy = float(pruned.trainer.callback_metrics["test/acc"])
    unpruned = float(default_run[1].trainer.callback_metrics["test/acc"])
    last = in_tmp / "logs" / "default" / "version_0" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["state_dict"]
    assert not [k for k in state if k.endswith(("_orig", "_mask"))]  # plain weights: permanent, loadable anywhere
    weights = [w for k, w in state.items() if k.startswith("net.") and k.endswith("weight") and w.ndim >= 2]
    sparsity = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)  # conv and linear
    print(f"pruned: sparsity {sparsity:.4f}, test accuracy {accuracy:.4f} (unpruned {unpruned:.4f})")
    assert sparsity == pytest.approx(0.6, abs=0.005)
    assert accuracy >= unpruned - 0.02  # within 2 points of the unpruned default run
