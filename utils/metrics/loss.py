"""Next-token loss: per token, per held-out document against the entropy floor, on song copies.

Conventions (the cards, the lessons and the tests use exactly these): a document is fed as
``[BOS] + tokens(text)`` and scored on predicting ``tokens(text) + [EOS]``, in the model's own
tokens (``model.tokenizer``); the logits at position ``t`` predict the token at ``t + 1``.
"""

from __future__ import annotations

import math

import torch

from utils.corpora import storyworld
from utils.corpora.tokenizer import encode_doc, token_spans
from utils.metrics.common import (
    LOGITS_PER_BATCH,
    device_of,
    forward_logits,
    length_groups,
    right_padded,
    tokenizer_of,
    vocabulary_size,
)


def per_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Loss of predicting each next token: logits ``[batch, pos, vocab]``, tokens ``[batch, pos]``
    -> ``[batch, pos - 1]``, where entry ``t`` is ``-log p(tokens[t + 1] | tokens[:t + 1])``."""
    logprobs = logits[:, :-1].float().log_softmax(-1)
    return -logprobs.gather(-1, tokens[:, 1:, None])[..., 0]


def mean_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The mean of :func:`per_token_loss` over every prediction: a scalar."""
    return per_token_loss(logits, tokens).mean()


def heldout_loss(model, docs: list[storyworld.Doc], batch: int = 64) -> dict:
    """Mean NLL per token over ``docs`` and the generator's entropy floor on the same tokens.

    Returns ``loss``, ``floor`` (``-Σ logprob / Σ tokens``, each document's exact
    log-probability under the generator), ``gap`` = loss - floor, its standard error over
    documents ``gap_se`` and the token count.

    The documents are tokenized by the model's own tokenizer, so "per token" means per token of
    that tokenizer (the floor too). At most ``batch`` documents run together, fewer when their
    logits would pass ``LOGITS_PER_BATCH`` (a large vocabulary).
    """
    tok = tokenizer_of(model)
    seqs = [encode_doc(d.text, tok) for d in docs]
    eot = seqs[0][0]
    count = 0
    doc_nll = [0.0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # less padding
    columns = vocabulary_size(model) or len(tok)
    spans = length_groups([len(seqs[i]) for i in order], max(1, LOGITS_PER_BATCH // columns), max_members=batch)
    for start, stop in spans:
        group = [seqs[i] for i in order[start:stop]]
        x = right_padded(group, eot)
        x = x.to(device_of(model))
        nll = per_token_loss(forward_logits(model, x), x).cpu()
        for r, i in enumerate(order[start:stop]):
            n = len(group[r]) - 1
            doc_nll[i] = nll[r, :n].sum().item()
            count += n
    total = math.fsum(doc_nll)
    floor = -math.fsum(d.logprob for d in docs) / count
    gap = total / count - floor
    # Standard error of the gap (a ratio of sums over documents), by the delta method.
    excess = [doc_nll[i] + d.logprob - gap * (len(seqs[i]) - 1) for i, d in enumerate(docs)]
    gap_se = math.sqrt(math.fsum(e * e for e in excess)) / count
    return {"loss": total / count, "floor": floor, "gap": gap, "gap_se": gap_se, "tokens": count}


def sequence_loss(model, seqs: list[list[int]], logprobs: list[float], batch: int = 256) -> dict:
    """Mean next-token loss on ``seqs`` (each ``[BOS] + tokens + [EOS]``) and the generator's exact
    floor, ``-Σ logprobs / Σ predictions`` (nats/token), for corpora whose every sequence knows its
    log-probability (countdown traces, belief stories).

    ``gap_se`` is the standard error of the gap over sequences (each sequence's excess loss, summed
    over its tokens, divided by the mean number of predictions per sequence).
    """
    per_seq = []
    dev = device_of(model)
    for start in range(0, len(seqs), batch):
        chunk = seqs[start : start + batch]
        x = right_padded(chunk, 0).to(dev)
        mask = torch.zeros(x.shape[0], x.shape[1] - 1, dtype=torch.bool)
        for r, seq in enumerate(chunk):
            mask[r, : len(seq) - 1] = True
        with torch.no_grad():
            logits = model(x[:, :-1]).float().cpu()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:].cpu(), reduction="none")
        per_seq += (nll * mask).sum(1).tolist()
    nll = torch.tensor(per_seq, dtype=torch.float64)
    lp = torch.tensor(logprobs, dtype=torch.float64)
    count = sum(len(seq) - 1 for seq in seqs)
    mean_len = count / len(seqs)
    loss, floor = nll.sum().item() / count, -lp.sum().item() / count
    gap_se = ((nll + lp) / mean_len).std().item() / len(seqs) ** 0.5
    return {"loss": loss, "floor": floor, "gap": loss - floor, "gap_se": gap_se, "tokens": count}


def song_copy_loss(model, docs: list[storyworld.Doc]) -> dict:
    """Mean NLL on the words of each held-out song's first copy and of its second copy.

    The in-distribution twin of the repeated-random-token test. The first word of each copy
    is left out: the first is predicted from BOS alone and the repeat's first word is the
    song's stopping decision, not something to copy. Tokens are the model's own: with a tokenizer
    that cuts a word in pieces, every piece counts (those of each copy's first word left out).
    """
    tok = tokenizer_of(model)
    first, second = [], []
    for d in docs:
        if d.family != "song":
            continue
        rep = d.annotations["repeats"][0]
        spans = token_spans(d.text, tok)
        ids = torch.tensor([encode_doc(d.text, tok)], device=device_of(model))
        nll = per_token_loss(forward_logits(model, ids), ids)[0].cpu()  # nll[i] predicts text token i
        words = [i for i, (a, b) in enumerate(spans) if any(ch.isalnum() for ch in d.text[a:b])]
        in_first = [i for i in words if rep["first"][0] <= spans[i][0] < rep["first"][1]]
        in_second = [i for i in words if spans[i][0] >= rep["repeat"][0] - 1]
        first += nll[_without_first_word(d.text, spans, in_first)].tolist()
        second += nll[_without_first_word(d.text, spans, in_second)].tolist()
    return {
        "song_loss_first_copy": sum(first) / len(first),
        "song_loss_second_copy": sum(second) / len(second),
        "song_tokens": len(first) + len(second),
    }


def _without_first_word(text: str, spans: list[tuple[int, int]], tokens: list[int]) -> list[int]:
    """``tokens`` (indices of a copy's word tokens, in order) without those of its first word: the
    first token and the pieces that continue it (the next tokens that do not start with a space)."""
    k = 1
    while k < len(tokens) and tokens[k] == tokens[k - 1] + 1 and not text[spans[tokens[k]][0]].isspace():
        k += 1
    return tokens[k:]
