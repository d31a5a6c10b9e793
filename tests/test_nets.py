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


def test_channels_last_and_compile_keep_the_outputs_and_the_checkpoint_keys():
    from proj.models import Classifier

    def classifier(**kwargs) -> Classifier:
        return Classifier(ResNet, num_outputs=10, input_shape=(3, 32, 32), **kwargs).eval()

    torch.manual_seed(0)
    plain, nhwc, compiled = classifier(), classifier(channels_last=True), classifier(compile=True)
    for model in (nhwc, compiled):
        model.load_state_dict(plain.state_dict())
        model.configure_model()  # what the Trainer calls on the device
        assert model.state_dict().keys() == plain.state_dict().keys()  # checkpoints load either way
    conv = next(m for m in nhwc.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(nhwc(x), plain(x), atol=1e-5)
    assert compiled.net._compiled_call_impl is not None  # compiled in place (its first call would compile: 20 s)
