"""The sequence nets ignore padding, learn from the order of steps, and export to ONNX with any batch and length."""

import pytest
import torch
from torch import nn

from proj.nets.sequence import SequenceCNN, SequenceGRU, SequenceTransformer

FEATURES = 3

# Tiny versions of each net: the checks below are about masking and export, not capacity.
TINY = {
    SequenceCNN: dict(widths=(8, 8)),
    SequenceGRU: dict(hidden=8),
    SequenceTransformer: dict(d_model=16, nhead=2, layers=2, dim_feedforward=32),
}
NETS = pytest.mark.parametrize("net_cls", list(TINY), ids=lambda cls: cls.__name__)


@pytest.fixture(autouse=True)
def one_thread():
    """Nets this small gain nothing from threads, and on a busy machine threads waiting for each other's cores made
    the training test ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(net_cls, num_outputs=4, **options) -> nn.Module:
    torch.manual_seed(0)
    return net_cls((FEATURES,), num_outputs, **{**TINY[net_cls], **options})


def padded_batch(lengths, extra=0, seed=1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sequences of the given lengths, zero-padded to the longest plus `extra` steps."""
    lengths = torch.tensor(lengths)
    values = torch.randn(
        len(lengths), int(lengths.max()) + extra, FEATURES, generator=torch.Generator().manual_seed(seed)
    )
    mask = torch.arange(values.shape[1])[None, :] < lengths[:, None]
    return values * mask[..., None], lengths


@NETS
def test_outputs_do_not_depend_on_the_padding(net_cls):
    net = tiny(net_cls).eval()
    values, lengths = padded_batch([7, 19, 29, 1])
    with torch.no_grad():
        batched = net(values, lengths)
        assert batched.shape == (4, 4)
        longer = net(nn.functional.pad(values, (0, 0, 0, 13)), lengths)  # 13 more padded steps
        alone = torch.cat([net(values[i : i + 1, :n], lengths[i : i + 1]) for i, n in enumerate(lengths.tolist())])
        mask = torch.arange(values.shape[1])[None, :] < lengths[:, None]
        explicit_mask = net(values, lengths, mask)
        noisy_padding = net(values + torch.randn_like(values) * ~mask[..., None], lengths)  # not even zeros matter
    for outputs in (longer, alone, explicit_mask, noisy_padding):
        torch.testing.assert_close(outputs, batched, atol=1e-5, rtol=0)


@NETS
def test_gradients_reach_the_first_layer_and_never_the_padding(net_cls):
    net = tiny(net_cls, dropout=0.1).train()
    values, lengths = padded_batch([4, 11, 9], extra=3)
    values.requires_grad_(True)
    net(values, lengths).square().sum().backward()
    first = next(net.parameters())  # the first layer's weight, whichever net
    assert first.grad is not None and first.grad.abs().sum() > 0
    mask = torch.arange(values.shape[1])[None, :] < lengths[:, None]
    assert (values.grad[~mask] == 0).all()  # exactly: padded values take no part in the output
    assert (values.grad.abs().sum(dim=(1, 2)) > 0).all()  # while every sequence's real steps do


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_gru_export_path_equals_the_packed_path(layers, bidirectional):
    net = tiny(SequenceGRU, layers=layers, bidirectional=bidirectional).eval()
    values, lengths = padded_batch([7, 1, 19, 12], extra=5)
    with torch.no_grad():
        packed, unpacked = net.final_states(values, lengths), net.final_states_unpacked(values, lengths)
    torch.testing.assert_close(unpacked, packed, atol=1e-5, rtol=0)


# Noise from torch's exporter itself: its GRU loop calls a deprecated check, and it names the shared batch Dim once.
@pytest.mark.filterwarnings("ignore:_check_is_size will be removed:FutureWarning")
@pytest.mark.filterwarnings("ignore:# The axis name. batch will not be used:UserWarning")
@NETS
def test_onnx_export_takes_any_batch_size_and_length(net_cls, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from torch.export import Dim

    net = tiny(net_cls).eval()
    path = tmp_path / "net.onnx"
    batch = Dim("batch", min=1)  # one Dim object for both inputs: values and lengths share the batch size
    torch.onnx.export(
        net,
        padded_batch([2, 3]),  # short example: the exporter traces a GRU step by step
        str(path),
        dynamo=True,
        external_data=False,
        input_names=["values", "lengths"],
        dynamic_shapes=({0: batch, 1: Dim("time", min=1)}, {0: batch}),
    )
    settings = ort.SessionOptions()
    settings.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"])
    for lengths in ([7, 19, 29], [3, 12], [1]):  # other batch sizes and lengths than the example's
        values, lengths = padded_batch(lengths)
        (onnx_out,) = session.run(None, {"values": values.numpy(), "lengths": lengths.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(onnx_out), net(values, lengths), atol=1e-4, rtol=0)


def adjacent_pair_task(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sequences of 5 to 30 one-hot steps: noise symbols 0 and 1, and one adjacent pair "2 then 3" (label 1) or
    "3 then 2" (label 0) somewhere. Both labels have the same symbols: only their order tells them apart."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 31, (n,), generator=g)
    symbols = torch.randint(0, 2, (n, 30), generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    start = (torch.rand(n, generator=g) * (lengths - 1)).long()  # the pair fits before the sequence's end
    rows = torch.arange(n)
    symbols[rows, start] = torch.where(labels == 1, 2, 3)
    symbols[rows, start + 1] = torch.where(labels == 1, 3, 2)
    mask = torch.arange(30)[None, :] < lengths[:, None]
    return nn.functional.one_hot(symbols, 4).float() * mask[..., None], lengths, labels


@NETS
def test_learns_a_task_where_only_the_order_of_steps_matters(net_cls):
    values, lengths, labels = adjacent_pair_task(200)
    torch.manual_seed(0)
    options = {**TINY[net_cls], "dropout": 0.0} | ({"layers": 1} if net_cls is SequenceTransformer else {})
    net = net_cls((4,), 2, **options)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        loss = nn.functional.cross_entropy(net(values, lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss < 0.05:
            break
    with torch.no_grad():
        accuracy = (net.eval()(values, lengths).argmax(dim=1) == labels).float().mean()
    assert accuracy >= 0.9
