"""Activation checkpointing of a net's body blocks: each block keeps only its input during the forward pass and
recomputes the rest in the backward pass (torch.utils.checkpoint, non-reentrant): less memory, more compute.

A block is switched in place, by giving it a subclass of its own class (as FSDP2's fully_shard does), rather
than by wrapping it in another module: parameter names, state_dict keys (checkpoints, export, warm start),
parameter-group patterns and `isinstance(block, BasicBlock)` (FSDP wrap policies) all stay as they were.
"""

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache, partial

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class Checkpointed(nn.Module):
    """Put in front of a block's class: its forward runs under torch.utils.checkpoint while training."""

    def forward(self, *args: Tensor, **kwargs: object) -> Tensor:
        # Evaluation, inference and export (which traces the eval model) hold no activations for a backward pass:
        # they run the plain forward.
        if not (self.training and torch.is_grad_enabled()):
            return super().forward(*args, **kwargs)
        # Non-reentrant: it replays the forward's RNG state (the same dropout masks) and composes with
        # torch.compile and FSDP2. Eager recomputation must not move BatchNorm's running statistics a second
        # time; a compiled graph recomputes without the buffer updates by itself (and refuses a context_fn).
        if torch.compiler.is_compiling():
            return checkpoint(super().forward, *args, use_reentrant=False, **kwargs)
        contexts = partial(forward_and_recompute_contexts, self)
        return checkpoint(super().forward, *args, use_reentrant=False, context_fn=contexts, **kwargs)


def forward_and_recompute_contexts(module: nn.Module) -> tuple[AbstractContextManager, AbstractContextManager]:
    return nullcontext(), buffers_kept(module)


@contextmanager
def buffers_kept(module: nn.Module) -> Iterator[None]:
    """The module's buffers (BatchNorm's running mean, variance and batch count) as they were before: torch
    recomputes a checkpointed BatchNorm in training mode, which would update its running statistics twice."""
    saved = [buffer.clone() for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(module.buffers(), saved, strict=True):
                buffer.copy_(value)


@cache
def checkpointed_class(cls: type[nn.Module]) -> type[nn.Module]:
    return type(f"Checkpointed{cls.__name__}", (Checkpointed, cls), {})


NO_BLOCKS = "the net {} has no blocks in `net.body` to checkpoint (layers made of layers, such as ResNet's BasicBlock)"


def body_parts(net: nn.Module) -> list[nn.Module]:
    """The parts of `net.body` in order when it is a sequence of them (nn.Sequential, nn.ModuleList); none when it
    is one layer (a GRU, a Transformer encoder) or missing. What activation checkpointing and FSDP2 take apart."""
    body = getattr(net, "body", None)
    return list(body) if isinstance(body, nn.Sequential | nn.ModuleList) else []


def body_blocks(net: nn.Module) -> list[nn.Module]:
    """The blocks of `net.body` worth checkpointing: its parts made of layers (ResNet's BasicBlock, SmallCNN's
    ConvBNReLU). A single layer (a pooling, the MLP's Linear or BatchNorm) would keep as much as it saves."""
    return [block for block in body_parts(net) if next(block.children(), None) is not None]


def checkpoint_blocks(net: nn.Module) -> int:
    """Checkpoint each block of `net.body` in place; returns how many. Calling it again changes nothing."""
    blocks = body_blocks(net)
    for block in blocks:
        if not isinstance(block, Checkpointed):
            block.__class__ = checkpointed_class(type(block))
    return len(blocks)
