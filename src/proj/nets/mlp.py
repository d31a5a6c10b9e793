"""A multi-layer perceptron with BatchNorm and dropout, for flat (tabular) or small image inputs."""

import math
from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class MLP(nn.Module):
    """Linear -> BatchNorm -> activation -> Dropout blocks; inputs of any shape are flattened first.

    activation: relu by default; sigmoid and tanh saturate, and a deep stack of them without BatchNorm is the
    classic case of vanishing gradients (docs/extras/diagnose.md shows one); leaky_relu units cannot die."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.2,
        batch_norm: bool = True,
        activation: Literal["relu", "leaky_relu", "gelu", "tanh", "sigmoid"] = "relu",
    ) -> None:
        super().__init__()
        self.stem = nn.Flatten()
        layers: list[nn.Module] = []
        features = math.prod(input_shape)
        for width in hidden:
            layers += [
                nn.Linear(features, width, bias=not batch_norm),
                nn.BatchNorm1d(width) if batch_norm else nn.Identity(),
                ACTIVATIONS[activation](),
                nn.Dropout(dropout),
            ]
            features = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(features, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self.stem(x)))
