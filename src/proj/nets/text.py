"""Networks over token ids: a bag of embeddings and a small Transformer encoder.

Both take the padded batch the text data module makes, `net(ids, lengths, mask)`: ids (batch, tokens) int64, 0
after each text's end (the tokenizer's [PAD]). `input_shape` is `(vocabulary size,)`: one step is one token id of
that vocabulary, so the size is linked from the data and never written in YAML.
"""

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from proj.nets.sequence import SequenceTransformer, padding_mask

PAD = 0  # the id of [PAD]: the text data module's tokenizer puts it first


class TextEmbeddingBag(nn.Module):
    """The mean of each text's token embeddings (nn.EmbeddingBag, [PAD] left out), dropout, a linear head: the
    fastText-style baseline, fast and strong on topic-like labels."""

    def __init__(self, input_shape: Sequence[int], num_outputs: int, dim: int = 64, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.EmbeddingBag(input_shape[-1], dim, mode="mean", padding_idx=PAD)
        self.body = nn.Sequential(nn.Dropout(dropout))
        self.head = nn.Linear(dim, num_outputs)

    def forward(self, ids: Tensor, lengths: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.head(self.body(self.stem(ids)))


class TextTransformer(SequenceTransformer):
    """SequenceTransformer with token embeddings as its stem: embeddings plus position codes, a pre-norm encoder
    with a key-padding mask, the mean over real tokens, a linear head."""

    def __init__(self, input_shape: Sequence[int], num_outputs: int, d_model: int = 64, **kwargs: Any) -> None:
        super().__init__((1,), num_outputs, d_model, **kwargs)  # nhead, layers, dim_feedforward, dropout
        self.stem = nn.Embedding(input_shape[-1], d_model, padding_idx=PAD)

    def forward(self, ids: Tensor, lengths: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = padding_mask(lengths, ids.shape[1]) if mask is None else mask
        return super().forward(ids, lengths, mask)
