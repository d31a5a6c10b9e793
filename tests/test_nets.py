"""Each net maps a batch of inputs to one logit per class, and says clearly when it is misconfigured."""

import pytest
import torch

from proj.nets import MLP, ResNet, SmallCNN


@pytest.mark.parametrize("net_cls", [SmallCNN, ResNet, MLP])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_logits_have_one_column_per_class(net_cls, shape):
    net = net_cls(shape, 7)
    out = net(torch.randn(4, *shape))
    assert out.shape == (4, 7)
    out.sum().backward()  # every parameter takes part in the forward pass
    assert all(p.grad is not None for p in net.parameters())


def test_nets_have_batchnorm_and_dropout_to_regularise():
    for net in (SmallCNN((1, 8, 8), 10), MLP((64,), 10)):
        kinds = {type(m).__name__ for m in net.modules()}
        assert {"Dropout"} <= kinds and kinds & {"BatchNorm1d", "BatchNorm2d"}


def test_resnet_depth_must_be_6n_plus_2():
    assert sum(isinstance(m, torch.nn.Conv2d) for m in ResNet((3, 32, 32), 10, depth=20).modules()) >= 19
    with pytest.raises(ValueError, match="depth=21 is not of the form 6n\\+2"):
        ResNet((3, 32, 32), 10, depth=21)
