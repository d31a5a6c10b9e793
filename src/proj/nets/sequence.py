"""Networks for variable-length sequences: a 1-D CNN, a GRU and a Transformer encoder.

All three take the same inputs and give one logit per class for each sequence:

    net = SequenceGRU((features,), num_outputs)
    logits = net(values, lengths)  # values (batch, time, features), lengths (batch,) -> (batch, num_outputs)

`values` holds each sequence from step 0 to `lengths[i] - 1`, zero-padded after it. Each net ignores the padding:
a sequence gets the same logits whether it is padded to 20 steps or 50, alone or in a batch of longer ones.
`input_shape` is the shape of one time step, `(features,)`. As in the other nets, the parts are called `stem`,
`body` and `head`, so parameter-group rules such as "net.head.*" work whichever net is chosen.
"""

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import NamedTuple

import torch
from torch import Tensor, nn


class Padded(NamedTuple):
    """A batch of sequences as these nets take it: values (batch, time, features) zero after each end, lengths
    (batch,) and mask (batch, time), True on real steps. The model calls `net(*padded)`."""

    values: Tensor
    lengths: Tensor
    mask: Tensor


def padding_mask(lengths: Tensor, time: int) -> Tensor:
    """(batch, time) bool mask, True on the real steps of each sequence, False on its padding."""
    return torch.arange(time, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x (batch, time, channels) over the real steps only; padded steps do not dilute it."""
    mask = mask[..., None].to(x.dtype)
    return (x * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Max of x (batch, time, channels) over the real steps only (every sequence has at least one)."""
    return x.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)


class MaskedConv1d(nn.Module):
    """Conv over time, ReLU and dropout, then padded steps set back to exactly zero.

    Why the mask: the conv's bias makes padded steps non-zero, and the next conv, reaching past a sequence's end,
    would mix them into its last real steps. Zeroing them keeps every real step equal to what the unpadded sequence
    gives (a 'same' conv pads with zeros too). No BatchNorm: its batch statistics would count the padding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding="same")
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (batch, channels, time), mask (batch, 1, time)."""
        return self.drop(self.act(self.conv(x))) * mask


class SequenceCNN(nn.Module):
    """Masked 1-D convolutions over time, then the mean and the max over the real steps, then a linear head."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        widths: Sequence[int] = (64, 64),
        kernel_size: int = 5,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.stem = MaskedConv1d(input_shape[-1], widths[0], kernel_size, dropout)
        self.body = nn.ModuleList(
            MaskedConv1d(channels, width, kernel_size, dropout) for channels, width in pairwise(widths)
        )
        # Mean and max pooled features side by side: the mean says "how much overall", the max "was it anywhere".
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * widths[-1], num_outputs))

    def forward(self, values: Tensor, lengths: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = padding_mask(lengths, values.shape[1]) if mask is None else mask
        conv_mask = mask[:, None, :].to(values.dtype)  # (batch, 1, time): broadcasts over channels
        # Zero the padding first too: no assumption on what the caller padded with, and no gradient reaches it.
        x = self.stem(values.transpose(1, 2) * conv_mask, conv_mask)
        for block in self.body:
            x = block(x, conv_mask)
        x = x.transpose(1, 2)  # back to (batch, time, channels)
        return self.head(torch.cat([masked_mean(x, mask), masked_max(x, mask)], dim=-1))


def reversal_index(lengths: Tensor, time: int) -> Tensor:
    """(batch, time) step indices that reverse each sequence within its own length; padded steps stay in place.

    With length 3 and time 5 the index is [2, 1, 0, 3, 4]: [a, b, c, 0, 0] becomes [c, b, a, 0, 0]. Using it twice
    gives the original order back.
    """
    steps = torch.arange(time, device=lengths.device)[None, :]
    lengths = lengths[:, None]
    return torch.where(steps < lengths, lengths - 1 - steps, steps)


def take_steps(x: Tensor, index: Tensor) -> Tensor:
    """x (batch, time, features) reordered along time by index (batch, steps): out[b, t] = x[b, index[b, t]]."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


class SequenceGRU(nn.Module):
    """A GRU over the real steps of each sequence (packed); the head reads its final hidden state(s).

    When bidirectional, the head reads both directions' final states: the forward one has read the whole sequence
    up to its last real step, the backward one down to step 0.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden: int = 64,
        layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.stem = nn.Identity()  # the GRU reads the raw features: nothing to do per step
        # The GRU's own dropout acts between its layers only, so it is off with one layer (torch warns otherwise).
        self.body = nn.GRU(
            input_shape[-1],
            hidden,
            num_layers=layers,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
            batch_first=True,
        )
        directions = 2 if bidirectional else 1
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(directions * hidden, num_outputs))

    def forward(self, values: Tensor, lengths: Tensor, mask: Tensor | None = None) -> Tensor:
        """`mask` is accepted for a common interface but not needed: `lengths` says where each sequence ends."""
        x = self.stem(values)
        # Packing skips the padding at no cost, but torch.export (behind ONNX export) cannot trace it: a packed
        # sequence's per-step batch sizes depend on the values in `lengths`, not on shapes. So an export takes the
        # unpacked path, which gives the same result (tests check it) by running over the padding and ignoring it.
        if torch.compiler.is_exporting():
            return self.head(self.final_states_unpacked(x, lengths))
        return self.head(self.final_states(x, lengths))

    def final_states(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The last layer's final hidden state(s), (batch, directions * hidden), from a packed run over real steps."""
        # Packing takes the lengths on the CPU (on a GPU this waits for them); enforce_sorted=False sorts for us.
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h_n = self.body(packed)  # (layers * directions, batch, hidden), back in the input's batch order
        directions = 2 if self.body.bidirectional else 1
        return torch.cat(list(h_n[-directions:]), dim=-1)

    def final_states_unpacked(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The same as `final_states`, without packing: what ONNX export runs.

        The forward direction runs over the padded batch: steps after a sequence's end come after its last real
        output, so they cannot change it; we read the output at step length - 1. The backward direction runs over
        each sequence flipped within its length (padding still at the end) and is flipped back, so its output at
        step 0 has read the sequence from its last real step down. Layers run one at a time, since a layer above
        needs both directions' outputs of the one below.
        """
        # Indices are made once, from the input's time length, never from the GRU's output: torch 2.13's exporter
        # gives the GRU output a fixed time length (pytorch#191855), and a shape read from it would freeze the export.
        flip = reversal_index(lengths, x.shape[1])
        last = (lengths - 1)[:, None]
        for layer in range(self.body.num_layers):
            forward_out = self._run_direction(x, layer, reverse=False)
            outputs, finals = [forward_out], [take_steps(forward_out, last)[:, 0]]  # the last layer's finals are kept
            if self.body.bidirectional:
                backward_out = take_steps(self._run_direction(take_steps(x, flip), layer, reverse=True), flip)
                outputs.append(backward_out)
                finals.append(backward_out[:, 0])
            x = torch.cat(outputs, dim=-1)
            if layer < self.body.num_layers - 1:  # the dropout nn.GRU applies between layers
                x = nn.functional.dropout(x, self.body.dropout, self.training)
        return torch.cat(finals, dim=-1)

    def _run_direction(self, x: Tensor, layer: int, reverse: bool) -> Tensor:
        """One layer, one direction of the GRU (its own weights) over x (batch, time, features), in time order."""
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.body.bias else [])
        weights = [getattr(self.body, name + suffix) for name in names]
        h0 = x.new_zeros(1, x.shape[0], self.body.hidden_size)
        # torch.gru is the function nn.GRU itself calls: (input, hx, weights, has_biases, num_layers, dropout,
        # train, bidirectional, batch_first).
        out, _ = torch.gru(x, h0, weights, self.body.bias, 1, 0.0, False, False, True)
        return out


def sinusoidal_positions(time: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(time, dim) sine and cosine position codes ("Attention is all you need"), made for any length on the fly.

    Computed rather than stored in a fixed-size table: no maximum length, and an ONNX export stays dynamic in time.
    """
    position = torch.arange(time, device=device, dtype=dtype)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=dtype) * (-math.log(10000.0) / dim))
    angle = position * frequency  # (time, dim / 2)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)  # sin, cos interleaved


class SequenceTransformer(nn.Module):
    """Linear projection plus position codes, a pre-norm Transformer encoder that never attends to padding, the mean
    over the real steps, a linear head."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        d_model: int = 64,
        nhead: int = 4,
        layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"d_model={d_model} must be even: position codes come in sine and cosine pairs")
        self.stem = nn.Linear(input_shape[-1], d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True, norm_first=True)
        # Pre-norm layers leave their output unnormalised: a final LayerNorm does it. enable_nested_tensor=False:
        # nested tensors (an eval-only speed-up that drops the padding) do not support norm_first, and torch warns.
        self.body = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, num_outputs))

    def forward(self, values: Tensor, lengths: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = padding_mask(lengths, values.shape[1]) if mask is None else mask
        x = self.stem(values)
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        x = self.body(x, src_key_padding_mask=~mask)  # True in the key padding mask means "do not attend here"
        return self.head(masked_mean(x, mask))
