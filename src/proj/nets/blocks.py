"""A net's blocks in depth order: what layer-wise lr decay scales (proj.optim.groups) and what the diagnose
extra's health monitor records per block.

The template's nets are `stem` -> `body` (a sequence of blocks) -> `head`; a net of your own is read by its
children, in the order they were assigned, which is their order in `forward` for a plain feed-forward net.
"""

from torch import Tensor, nn


def blocks(net: nn.Module) -> dict[str, nn.Module]:
    """The net's blocks in order: `stem`, each part of `body` (a sequence of them), `head`; else its children."""
    found: dict[str, nn.Module] = {}
    for name, child in net.named_children():
        if isinstance(child, nn.Sequential | nn.ModuleList) and name == "body":
            found.update({f"body.{i}": part for i, part in enumerate(child)})
        else:
            found[name] = child
    return found or {"net": net}


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016; timm's DropPath): in training, each sample's residual branch is
    dropped with probability `p` and the kept ones scaled by 1 / (1 - p), so the expected output is unchanged;
    in evaluation it is the identity. At p = 0 the net is exactly the net without it."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path={p} must be in [0, 1)")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p:.3g}"
