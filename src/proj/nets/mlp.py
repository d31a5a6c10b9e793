"""A multi-layer perceptron with BatchNorm and dropout, for flat (tabular) or small image inputs."""

import math
from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Dropout blocks; inputs of any shape are flattened first."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.stem = nn.Flatten()
        layers: list[nn.Module] = []
        features = math.prod(input_shape)
        for width in hidden:
            layers += [
                nn.Linear(features, width, bias=not batch_norm),
                nn.BatchNorm1d(width) if batch_norm else nn.Identity(),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
            ]
            features = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(features, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self.stem(x)))
