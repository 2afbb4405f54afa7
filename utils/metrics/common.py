"""Small helpers every measurement shares: the model's device, a no-grad forward, padding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def device_of(model) -> torch.device:
    """The device a model's parameters live on."""
    return next(model.parameters()).device


def forward_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """Logits ``[batch, position, d_vocab]`` without gradients, from a bridge or an HF model."""
    from utils.model_zoo.models import logits_of

    with torch.no_grad():
        return logits_of(model, tokens)


def right_padded(seqs: list[list[int]], fill: int) -> torch.Tensor:
    """Sequences of different lengths as one ``[batch, longest]`` tensor, padded at the end.

    With causal attention the padding never affects the real positions before it.
    """
    x = torch.full((len(seqs), max(map(len, seqs))), fill)
    for r, s in enumerate(seqs):
        x[r, : len(s)] = torch.tensor(s)
    return x


def length_groups(lengths: Sequence[int], batch_tokens: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` spans of ``lengths`` (already sorted, shortest first) to run as one padded
    batch each: a span grows while its padded size (members × the longest) stays within
    ``batch_tokens``, and always holds at least one sequence."""
    start = 0
    while start < len(lengths):
        stop = start + 1
        while stop < len(lengths) and (stop - start + 1) * lengths[stop] <= batch_tokens:
            stop += 1
        yield start, stop
        start = stop
