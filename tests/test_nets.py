"""Each net maps a batch of inputs to one logit per class, and says clearly when it is misconfigured."""

import copy
import math
from functools import partial

import pytest
import torch
from torch import nn

from proj.nets import MLP, ResNet, SmallCNN
from proj.nets.checkpointing import Checkpointed, body_blocks, checkpoint_blocks

from conftest import CONFIGS, DEFAULT, QUICK, cli, usage_error


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


class DropoutBlocks(nn.Module):
    """Dropout inside the checkpointed blocks: their recomputation must draw the forward's masks again."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.stem = nn.Flatten()
        features = math.prod(input_shape)
        layers = lambda: [nn.Linear(features, features), nn.BatchNorm1d(features), nn.ReLU(), nn.Dropout()]  # noqa: E731
        self.body = nn.Sequential(nn.Sequential(*layers()), nn.Sequential(*layers()))
        self.head = nn.Linear(features, num_outputs)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


def train_step(model, x, y):
    """One training forward / backward; returns the loss and how many numbers autograd kept outside checkpoints."""
    torch.manual_seed(1)  # the same dropout masks for both models
    held = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: held.append(t.numel()) or t, lambda t: t):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), sum(held)


@pytest.mark.parametrize(
    "net",
    [partial(SmallCNN, dropout=0.5), partial(ResNet, depth=8, dropout=0.5), DropoutBlocks],
    ids=["SmallCNN", "ResNet", "dropout_in_blocks"],
)
def test_activation_checkpointing_keeps_loss_gradients_batchnorm_stats_and_keys(net):
    from proj.models.base import TaskModule

    torch.manual_seed(0)
    plain = TaskModule(net, num_outputs=10, input_shape=(3, 8, 8))
    checkpointed = TaskModule(net, num_outputs=10, input_shape=(3, 8, 8), activation_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.configure_model()  # what the Trainer calls on the device
    assert all(isinstance(block, Checkpointed) for block in body_blocks(checkpointed.net))
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    (loss, held), (loss_ckpt, held_ckpt) = train_step(plain.train(), x, y), train_step(checkpointed.train(), x, y)
    assert held_ckpt < held / 2  # the blocks' activations are recomputed, not kept
    assert torch.allclose(loss_ckpt, loss, rtol=1e-6)
    params, params_ckpt = dict(plain.named_parameters()), dict(checkpointed.named_parameters())
    assert params.keys() == params_ckpt.keys()  # parameter-group patterns match alike
    for name, p in params.items():
        assert torch.allclose(params_ckpt[name].grad, p.grad, rtol=1e-5, atol=1e-7), name
    state, state_ckpt = plain.state_dict(), checkpointed.state_dict()
    assert state.keys() == state_ckpt.keys()  # checkpoints, exports and warm starts read the same keys
    for name, value in state.items():  # BatchNorm's running stats moved once, not again in the recomputation
        assert torch.allclose(state_ckpt[name].float(), value.float(), rtol=1e-6), name


def test_a_checkpointed_net_exports_and_evaluates_as_the_plain_one():
    from proj.models.deployable import Deployable

    torch.manual_seed(0)
    net = SmallCNN((1, 8, 8), 10)
    plain = copy.deepcopy(net).eval()
    assert checkpoint_blocks(net) == 4
    deployable = Deployable(net, 1 / 16, None, None, ndim=4).eval()
    x = torch.randint(0, 17, (3, 1, 8, 8)).float()
    # torch.export is the front end of the ONNX export (`proj export --format onnx`, dynamo=True).
    exported = torch.export.export(deployable, (x,))
    assert torch.allclose(exported.module()(x), plain(x / 16).softmax(-1), atol=1e-6)


def test_activation_checkpointing_reaches_the_net_from_the_config(in_tmp, capsys):
    flag = "--model.init_args.activation_checkpointing=true"
    run = cli("fit", "--config", DEFAULT, flag, *QUICK, "--trainer.max_epochs=1", "--test_after_fit=false")
    assert all(isinstance(block, Checkpointed) for block in body_blocks(run.model.net))
    saved = torch.load(in_tmp / "logs/default/version_0/checkpoints/last.ckpt", weights_only=True)
    assert saved["state_dict"].keys() == run.model.state_dict().keys()
    assert {f"net.{key}" for key in SmallCNN((1, 8, 8), 10).state_dict()} <= saved["state_dict"].keys()
    mlp = str(CONFIGS / "model" / "mlp.yaml")
    assert "activation_checkpointing" in usage_error(capsys, "fit", "--config", DEFAULT, "--config", mlp, flag)
