"""CIFAR-style ResNet (He et al. 2016, section 4.2): depth = 6n + 2, three stages of n basic blocks."""

from collections.abc import Sequence

from torch import Tensor, nn

from proj.nets.blocks import DropPath


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        # No parameters: checkpoints of a net with and without drop-path load into each other.
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.drop_path(self.bn2(self.conv2(out)))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """`depth` sets the number of blocks (20, 32, 44, 56, 110...), `width` the channels of the first stage.

    drop_path: stochastic depth (Huang et al. 2016): the residual branch of block i of n is dropped per sample
        with probability drop_path * i / (n - 1), rising from 0 at the first block to drop_path at the last
        (timm's rule): deep blocks are dropped most. 0 (default) is the plain ResNet.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        depth: int = 20,
        width: int = 16,
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"ResNet depth={depth} is not of the form 6n+2 (8, 14, 20, 32, 44, 56, 110...)")
        blocks_per_stage = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        layers: list[nn.Module] = []
        channels = width
        rates = [drop_path * i / max(3 * blocks_per_stage - 1, 1) for i in range(3 * blocks_per_stage)]
        for stage, stage_width in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, stage_width, stride, rates[len(layers)]))
                channels = stage_width
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_outputs)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self.stem(x)))
