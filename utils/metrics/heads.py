"""Attention heads: scores read off attention patterns, the sequences they are measured on,
and scores of the weight matrices behind them.

Patterns are ``[..., query, key]`` (any leading dimensions: head, or batch and head) and
rows sum to 1. On ``BOS r r`` sequences (``r`` a run of ``period`` distinct tokens) the
first copy sits at positions ``1 .. period`` and the second at ``period + 1 .. 2 * period``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache

import torch

from utils import seeds
from utils.corpora import storyworld
from utils.corpora.tokenizer import document_ends, load_tokenizer, word_id
from utils.metrics.common import device_of
from utils.metrics.loss import per_token_loss

# ---------------------------------------------------------------------------------------
# Scores read off a pattern


def previous_token_scores(pattern: torch.Tensor) -> torch.Tensor:
    """``[..., query, key]`` -> ``[...]``: mean attention from each position (from 1 on) to the one before."""
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)


def duplicate_token_scores(pattern: torch.Tensor, period: int) -> torch.Tensor:
    """On ``BOS r r``: mean attention from each second-copy token to the same token in the first copy."""
    q = torch.arange(period + 1, 2 * period + 1)
    return pattern[..., q, q - period].mean(-1)


def induction_scores(pattern: torch.Tensor, period: int) -> torch.Tensor:
    """On ``BOS r r``: mean attention from each second-copy token to the token after its first copy."""
    q = torch.arange(period + 1, 2 * period + 1)
    return pattern[..., q, q - period + 1].mean(-1)


# ---------------------------------------------------------------------------------------
# Sequences to measure them on


def _single_tokens(tokenizer, words) -> list[int]:
    """The token of ``" " + word`` for each of ``words`` that ``tokenizer`` keeps in one token, in order."""
    ids = []
    for w in words:
        one = tokenizer(" " + w, add_special_tokens=False)["input_ids"]
        if len(one) == 1:
            ids.append(one[0])
    return ids


def content_word_pool(tokenizer=None) -> list[int]:
    """Storyworld's content words as tokens: names, places, objects, emotions, list and rhyme
    words, behaviours and manners (``storyworld.CONTENT_WORDS``, each one token with its leading
    space in the course tokenizer, the default). With another tokenizer (``model.tokenizer``), the
    words it keeps in one token."""
    if tokenizer is None:
        tok = load_tokenizer()
        return sorted(word_id(w, tok) for w in storyworld.CONTENT_WORDS)
    return sorted(set(_single_tokens(tokenizer, storyworld.CONTENT_WORDS)))


@cache
def _course_word_pool() -> tuple[int, ...]:
    return tuple(sorted(_single_tokens(load_tokenizer(), storyworld.WORDS)))


def all_word_pool(tokenizer=None) -> tuple[int, ...]:
    """Every word Storyworld text uses, function words such as " the", " felt" and " said"
    included (``storyworld.WORDS``), as single tokens with their leading space, sorted: in the
    course tokenizer (the default, cached) or in ``tokenizer`` (the words it keeps in one token)."""
    if tokenizer is None:
        return _course_word_pool()
    return tuple(sorted(set(_single_tokens(tokenizer, storyworld.WORDS))))


def _unspaced(tokenizer, token: int) -> int | None:
    """The one token of ``token``'s word without its leading space, or None when that is several."""
    ids = tokenizer(tokenizer.decode([token]).lstrip(" "), add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def repeated_random_tokens(
    n: int,
    seed: int = seeds.RANDOM_TOKENS,
    min_period: int = 10,
    max_period: int = 60,
    pool: Sequence[int] | None = None,
    song_like: bool = False,
    tokenizer=None,
) -> list[tuple[list[int], int]]:
    """``n`` sequences ``[BOS] + r + r`` with ``r`` distinct random tokens from ``pool``
    (default: ``content_word_pool(tokenizer)``) and the period drawn per sequence; (ids, period)
    pairs. ``tokenizer`` is the model's (``model.tokenizer``; default the course's): it gives the
    BOS and the pool, so every id is one of the model's tokens.

    The pool's words carry a leading space, and no Storyworld document starts with one.
    ``song_like=True`` writes the very first word without its space, as a Storyworld song
    begins (the repeat keeps the space, as in a song). The pool is first narrowed to the words
    whose unspaced form is one token too; in the course tokenizer that is every word, so the
    sequences have the same words and periods as without ``song_like``.
    """
    rng = random.Random(seed)
    tok = tokenizer or load_tokenizer()
    pool = list(pool) if pool is not None else content_word_pool(tokenizer)
    unspaced = {}
    if song_like:
        unspaced = {t: _unspaced(tok, t) for t in pool}
        pool = [t for t in pool if unspaced[t] is not None]
    if len(pool) < max_period:
        raise ValueError(
            f"the pool has {len(pool)} tokens{' that stay one token without their space' if song_like else ''}, "
            f"fewer than the longest period ({max_period}): lower max_period or pass a larger pool"
        )
    bos = document_ends(tok)[0]
    out = []
    for _ in range(n):
        period = rng.randint(min_period, max_period)
        r = rng.sample(pool, period)
        start = [unspaced[r[0]]] if song_like else r[:1]
        out.append(([bos] + start + r[1:] + r, period))
    return out


def head_scores(model, seqs: list[tuple[list[int], int]]) -> dict:
    """Previous-token and induction scores per head ``[n_layers, n_heads]`` averaged over
    ``seqs`` (from :func:`repeated_random_tokens`), and the loss on each copy.

    ``loss_first_copy`` is the mean loss of predicting tokens ``1 .. period``;
    ``loss_second_copy`` that of ``period + 2 .. 2 * period`` (the second copy's first token
    cannot be copied yet); ``repeat_loss_drop`` is their difference.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    prev = torch.zeros(n_layers, n_heads)
    ind = torch.zeros(n_layers, n_heads)
    first, second = [], []
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
    for ids, period in seqs:
        x = torch.tensor([ids], device=device_of(model))
        with torch.no_grad():
            logits, cache = model.run_with_cache(x, names_filter=lambda n: n in names)
        nll = per_token_loss(logits, x)[0].cpu()  # nll[i] is the loss of predicting token i + 1
        first.append(nll[0:period].mean())
        second.append(nll[period + 1 : 2 * period].mean())
        for layer in range(n_layers):
            pattern = cache[names[layer]][0].float().cpu()  # [head, query, key]
            prev[layer] += previous_token_scores(pattern)
            ind[layer] += induction_scores(pattern, period)
    n = len(seqs)
    return {
        "prev_token_scores": (prev / n).tolist(),
        "induction_scores": (ind / n).tolist(),
        "loss_first_copy": torch.stack(first).mean().item(),
        "loss_second_copy": torch.stack(second).mean().item(),
        "repeat_loss_drop": (torch.stack(first) - torch.stack(second)).mean().item(),
    }


# ---------------------------------------------------------------------------------------
# Weight-matrix scores


def composition_score(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``‖left @ right‖_F / (‖left‖_F ‖right‖_F)``: how much of ``left``'s output ``right`` reads."""
    return (left @ right).norm() / (left.norm() * right.norm())


def full_ov_circuit(W_E: torch.Tensor, W_V: torch.Tensor, W_O: torch.Tensor, W_U: torch.Tensor) -> torch.Tensor:
    """``[source token, output token]``: the logits a head adds for each output token when it
    attends (fully) to a position holding the source token, ``W_E W_V W_O W_U``."""
    return W_E @ W_V @ W_O @ W_U


def copied_tokens(full_ov: torch.Tensor) -> torch.Tensor:
    """``[token]`` booleans: does attending to the token raise its own logit above every other?"""
    return full_ov.argmax(-1) == torch.arange(full_ov.shape[0], device=full_ov.device)


def random_composition_baseline(d_model: int, d_head: int, n: int = 50, seed: int = 0) -> float:
    """Mean :func:`composition_score` of two random rank-``d_head`` ``d_model × d_model``
    products (each a ``d_model × d_head`` times a ``d_head × d_model`` Gaussian matrix):
    the score two heads get when neither reads what the other writes."""
    g = torch.Generator().manual_seed(seed)

    def low_rank() -> torch.Tensor:
        return torch.randn(d_model, d_head, generator=g) @ torch.randn(d_head, d_model, generator=g)

    return torch.stack([composition_score(low_rank(), low_rank()) for _ in range(n)]).mean().item()


def copying_score(full_ov: torch.Tensor) -> float:
    """Share of rows ``[token, token]`` whose largest entry is on the diagonal: the OV circuit
    predicts the token the head attended to."""
    return (full_ov.argmax(-1) == torch.arange(full_ov.shape[0], device=full_ov.device)).float().mean().item()
