"""Small helpers every measurement shares: the model's device and tokenizer, a no-grad forward, padding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

# The most logits one batch may hold (sequences × positions × vocabulary), 128 MiB in float32: a
# measurement that batches documents caps its batch by this, so that a model with a large vocabulary
# (SmolLM2's 49,152 tokens) runs smaller batches. No zoo batch (985 tokens, at most 64 × 256
# positions) comes near it.
LOGITS_PER_BATCH = 1 << 25


def device_of(model) -> torch.device:
    """The device a model's parameters live on."""
    return next(model.parameters()).device


def vocabulary_size(model) -> int | None:
    """The number of logits ``model`` gives per position (``cfg.d_vocab`` of a bridge,
    ``config.vocab_size`` of an HF model), or None when it does not say."""
    cfg = getattr(model, "cfg", None)
    if getattr(cfg, "d_vocab", None):
        return int(cfg.d_vocab)
    config = getattr(model, "config", None)
    return int(config.vocab_size) if getattr(config, "vocab_size", None) else None


def tokenizer_of(model):
    """The tokenizer ``model`` reads: its own, ``model.tokenizer`` (the course tokenizer for the zoo,
    SmolLM2's for SmolLM2). A model that carries none (a bare module) gets the course tokenizer when
    its vocabulary is that tokenizer's size, and is refused in one sentence otherwise: a text
    tokenized by another model's vocabulary would give numbers that mean nothing."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        return tokenizer
    from utils.corpora.tokenizer import load_tokenizer

    course = load_tokenizer()
    vocab = vocabulary_size(model)
    if vocab is not None and vocab != len(course):
        raise ValueError(
            f"this model carries no tokenizer and its vocabulary ({vocab:,} tokens) is not the course "
            f"tokenizer's ({len(course):,}): load it with utils.load_model, which gives it its own"
        )
    return course


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


def length_groups(
    lengths: Sequence[int], batch_tokens: int, max_members: int | None = None
) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` spans of ``lengths`` (already sorted, shortest first) to run as one padded
    batch each: a span grows while its padded size (members × the longest) stays within
    ``batch_tokens`` and it has fewer than ``max_members`` members (no limit when None), and
    always holds at least one sequence."""
    start = 0
    while start < len(lengths):
        stop = start + 1
        while (
            stop < len(lengths)
            and (max_members is None or stop - start < max_members)
            and (stop - start + 1) * lengths[stop] <= batch_tokens
        ):
            stop += 1
        yield start, stop
        start = stop


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative (ties half)."""
    pos, neg = scores[labels.bool()].double(), scores[~labels.bool()].double()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("AUROC needs both classes")
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)
