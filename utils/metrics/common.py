"""Small helpers every measurement shares: the model's device, a no-grad forward, padding."""

from __future__ import annotations

import torch


def device_of(model) -> torch.device:
    """The device a model's parameters live on."""
    return next(model.parameters()).device


def forward_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """Logits ``[batch, position, d_vocab]`` without gradients, from a bridge or an HF model."""
    from utils.models import logits_of

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
