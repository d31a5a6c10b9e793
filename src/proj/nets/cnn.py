"""A small VGG-style CNN with BatchNorm and dropout: the default net for small images such as 8x8 digits."""

from collections.abc import Sequence

from torch import Tensor, nn


class ConvBNReLU(nn.Sequential):
    """3x3 conv, BatchNorm, ReLU: a class of its own so that FSDP wrap and checkpointing policies can name it
    (configs/trainer/fsdp.yaml); its state_dict keys are those of the plain Sequential (0.weight, 1.bias, ...)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        # bias=False: the BatchNorm that follows has its own shift, a conv bias would be redundant.
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SmallCNN(nn.Module):
    """Stages of two 3x3 conv-BN-ReLU layers; every stage but the last halves the resolution."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        widths: Sequence[int] = (32, 64),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        in_channels = input_shape[0]
        self.stem = ConvBNReLU(in_channels, widths[0])
        layers: list[nn.Module] = []
        channels = widths[0]
        for i, width in enumerate(widths):
            layers += [ConvBNReLU(channels, width), ConvBNReLU(width, width)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_outputs)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self.stem(x)))
