"""Plain torch networks. No Lightning in here: a net is built as `Net(input_shape, num_outputs, **options)`.

Every net names its parts `stem`, `body` and `head`, so parameter-group rules in the optim config
(`pattern: "net.head.*"`) work the same whichever net is chosen.
"""

from proj.nets.cnn import SmallCNN
from proj.nets.mlp import MLP
from proj.nets.resnet import ResNet
from proj.nets.sequence import SequenceCNN, SequenceGRU, SequenceTransformer
from proj.nets.text import TextEmbeddingBag, TextTransformer

__all__ = [
    "MLP",
    "ResNet",
    "SequenceCNN",
    "SequenceGRU",
    "SequenceTransformer",
    "SmallCNN",
    "TextEmbeddingBag",
    "TextTransformer",
]
