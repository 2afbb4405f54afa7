"""Checks for lesson 01, induction heads: ``check_<exercise>(your_function)``.

References come from ``utils.metrics`` (the same functions the model cards use), so the
lesson's scores and the cards' scores share one definition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from types import SimpleNamespace

import torch

from utils.checks.framework import (
    CheckFailed,
    as_number,
    call,
    expect_close,
    expect_number,
    expect_tensor,
    passed,
    random_pattern,
)
from utils.corpora import storyworld
from utils.metrics.common import device_of
from utils.metrics.heads import (
    composition_score,
    copying_score,
    duplicate_token_scores,
    full_ov_circuit,
    induction_scores,
    previous_token_scores,
)
from utils.metrics.loss import per_token_loss


def _attention_pattern(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q, k: [pos, head, d_head] -> pattern [head, query, key] (causal, scaled, softmax over keys)."""
    scores = torch.einsum("qhd,khd->hqk", q, k) / q.shape[-1] ** 0.5
    n = q.shape[0]
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1)


def check_attention_pattern(fn: Callable) -> None:
    name = getattr(fn, "__name__", "attention_pattern")
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(7, 3, 16, generator=g), torch.randn(7, 3, 16, generator=g)
    out = expect_tensor(call(fn, q, k, name=name), (3, 7, 7), ["head", "query", "key"], name)
    ref = _attention_pattern(q, k)
    sums = out.sum(-1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / 4
    mask = torch.ones(7, 7, dtype=torch.bool).triu(1)
    hints = [
        (
            scores.masked_fill(mask, float("-inf")).softmax(-2).nan_to_num(0.0),
            "your pattern rows don't sum to 1 — did you softmax over the query dimension instead of the key dimension?",
        ),
        (
            torch.einsum("qhd,khd->hqk", q, k).masked_fill(mask, float("-inf")).softmax(-1),
            "close, but the scores must be divided by sqrt(d_head) before the softmax.",
        ),
        (
            scores.softmax(-1),
            "your pattern attends to later positions: apply the causal mask (key > query → -inf) before the softmax.",
        ),
        (
            (scores / 4).masked_fill(mask, float("-inf")).softmax(-1),
            "divide by the square root of d_head, not by d_head itself.",
        ),
        (
            (torch.einsum("qhd,khd->hqk", q, k) / 48**0.5).masked_fill(mask, float("-inf")).softmax(-1),
            "scale by sqrt(d_head), the size of one head's query, not by sqrt(d_model) (all heads together).",
        ),
        (
            scores.masked_fill(mask, 0.0).softmax(-1),
            "masked scores set to 0 still get weight after the softmax: fill them with -inf instead.",
        ),
    ]
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        expect_close(out, ref, name, "pattern", hints=hints[:1])
    if (out * mask).abs().max() > 1e-6:
        zero_filled, message = hints[5]
        if torch.allclose(out.detach().float().cpu(), zero_filled, atol=1e-4):
            raise CheckFailed(f"`{name}`: {message}")
        raise CheckFailed(f"`{name}`: {hints[2][1]}")
    expect_close(out, ref, name, "pattern", hints=hints)
    passed(name, "matches a reference computation on random queries and keys (the model comes next)")


def check_previous_token_scores(fn: Callable) -> None:
    name = getattr(fn, "__name__", "previous_token_scores")
    p = random_pattern(seed=2)
    out = expect_tensor(call(fn, p, name=name), (3,), ["head"], name)
    hints = [
        (
            p.diagonal(offset=1, dim1=-2, dim2=-1).mean(-1) if p.shape[-1] > 1 else p[:, 0, 0],
            "you read the diagonal above the main one (offset=+1): for a causal pattern that is all zeros. "
            "Previous-token attention sits at [query i, key i-1], offset=-1.",
        ),
        (
            p.diagonal(dim1=-2, dim2=-1).mean(-1),
            "that is attention to the current token (the main diagonal), not to the previous one (offset=-1).",
        ),
        (
            p.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1),
            "use the mean over positions, not the sum: a score should lie in [0, 1].",
        ),
        (
            p.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1) / p.shape[-1],
            "average over the positions that have a previous token (1 onwards), not over all of them: "
            "position 0 has nothing before it.",
        ),
    ]
    expect_close(out, previous_token_scores(p), name, "scores", hints=hints)
    passed(name)


_PERIOD_ERRORS = {
    IndexError: "The check's patterns are short (period 6, then 4): compute the positions from the "
    "`period` argument, not from a global such as PERIOD or from a fixed length."
}


def _check_repeat_score(fn: Callable, ref_fn: Callable, default: str, other: Callable, other_name: str) -> None:
    name = getattr(fn, "__name__", default)
    period = 6
    p = random_pattern(n=2 * period + 1, seed=3)
    out = expect_tensor(call(fn, p, period, name=name, explain=_PERIOD_ERRORS), (3,), ["head"], name)
    hints = [
        (other(p, period), f"that is the {other_name} score: check which key each second-copy token should attend to."),
        (ref_fn(p, period) * period, "use the mean over the second copy's positions, not the sum."),
    ]
    expect_close(out, ref_fn(p, period), name, "scores", hints=hints)
    period2 = 4  # a different period, so a hard-coded offset fails
    p2 = random_pattern(n=2 * period2 + 1, seed=4)
    try:
        out2 = expect_tensor(call(fn, p2, period2, name=name, explain=_PERIOD_ERRORS), (3,), ["head"], name)
        expect_close(out2, ref_fn(p2, period2), name, f"scores for period {period2}")
    except CheckFailed as e:
        raise CheckFailed(f"{e.args[0]} This was with period {period2}: is the period hard-coded?") from None
    passed(name)


def check_duplicate_token_scores(fn: Callable) -> None:
    _check_repeat_score(fn, duplicate_token_scores, "duplicate_token_scores", induction_scores, "induction")


def check_induction_scores(fn: Callable) -> None:
    _check_repeat_score(fn, induction_scores, "induction_scores", duplicate_token_scores, "duplicate-token")


def check_repeated_tokens(fn: Callable, pool: Sequence[int], bos: int) -> None:
    """fn(pool, period, batch, seed, bos) -> [batch, 1 + 2*period]: ``bos``, then r, then r again.

    The BOS id is an argument because models differ (0 in the Storyworld zoo, 50256 in GPT-2):
    the check calls ``fn`` with ``bos`` and with another id, so a hard-coded BOS fails.
    Distinctness is tested where sampling with replacement cannot pass by luck: with a pool
    exactly as large as the period, every row must be a permutation of the pool, which 40 rows
    drawn with replacement are all together with probability below 10^-80.
    """
    name = getattr(fn, "__name__", "repeated_tokens")
    out = call(fn, list(pool), 7, 5, 0, bos, name=name)
    out = expect_tensor(out, (5, 15), ["batch", "position"], name, floating=False)
    if out.dtype not in (torch.int64, torch.int32):
        raise CheckFailed(f"`{name}` returned dtype {out.dtype}; token ids must be integers (torch.long).")
    if not (out[:, 0] == bos).all():
        raise CheckFailed(f"`{name}`: every sequence must start with the BOS token passed as `bos` ({bos}).")
    other_bos = bos + 1 if bos + 1 not in set(int(t) for t in pool) else max(int(t) for t in pool) + 1
    moved = call(fn, list(pool), 7, 5, 0, other_bos, name=name)
    moved = expect_tensor(moved, (5, 15), ["batch", "position"], name, floating=False)
    if not (moved[:, 0] == other_bos).all():
        raise CheckFailed(
            f"`{name}`: called with bos={other_bos}, the sequences did not start with {other_bos}: use the "
            f"`bos` argument rather than a fixed id (GPT-2's BOS is 50256, not 0)."
        )
    if not torch.equal(out[:, 1:8], out[:, 8:15]):
        raise CheckFailed(
            f"`{name}`: positions 1..7 and 8..14 should be the same tokens (the second copy repeats the first)."
        )
    allowed = set(int(t) for t in pool)
    if not set(out[:, 1:].flatten().tolist()) <= allowed:
        raise CheckFailed(f"`{name}`: draw tokens only from `pool`.")
    if len(set(tuple(r) for r in out[:, 1:8].tolist())) < 5:
        raise CheckFailed(f"`{name}`: the sequences in a batch should differ (draw each one at random).")
    without_replacement = (
        f"`{name}`: draw distinct tokens within a sequence (sample without replacement), so that each "
        f"token's previous occurrence is unambiguous."
    )
    small = sorted(allowed)[:7]
    tight = call(fn, small, 7, 40, 1, bos, name=name)
    tight = expect_tensor(tight, (40, 15), ["batch", "position"], name, floating=False)
    if any(sorted(r) != small for r in tight[:, 1:8].tolist()):
        raise CheckFailed(
            without_replacement + " With a pool of 7 tokens and period 7, every copy must use each token once; "
            "yours repeats some."
        )
    if any(len(set(r)) < 7 for r in out[:, 1:8].tolist()):
        raise CheckFailed(without_replacement)
    again = call(fn, list(pool), 7, 5, 0, bos, name=name)
    if not torch.equal(out, again):
        raise CheckFailed(
            f"`{name}`: the same seed should give the same tokens (use a torch.Generator seeded with `seed`)."
        )
    passed(name)


def check_per_token_loss(fn: Callable) -> None:
    name = getattr(fn, "__name__", "per_token_loss")
    g = torch.Generator().manual_seed(5)
    logits, tokens = torch.randn(2, 6, 11, generator=g), torch.randint(0, 11, (2, 6), generator=g)
    out = expect_tensor(call(fn, logits, tokens, name=name), (2, 5), ["batch", "position"], name)
    lp = logits.log_softmax(-1)
    hints = [
        (
            -lp[:, 1:].gather(-1, tokens[:, 1:, None])[..., 0],
            "off by one: the logits at position t predict the token at t+1, so pair logits[:, :-1] with tokens[:, 1:].",
        ),
        (
            -lp[:, :-1].gather(-1, tokens[:, :-1, None])[..., 0],
            "off by one: you scored each position's own token; the logits at t predict token t+1.",
        ),
        (per_token_loss(logits, tokens).neg(), "sign: the loss is the *negative* log-probability."),
        (
            -logits[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0],
            "take log_softmax of the logits before picking the token's entry.",
        ),
    ]
    expect_close(out, per_token_loss(logits, tokens), name, "losses", hints=hints)
    passed(name)


def check_ablate_head(fn: Callable) -> None:
    """fn(z, hook, head) -> z with that head's output zeroed; z is [batch, pos, head, d_head].

    Hook functions may edit the activation in place: TransformerLens (and the bridge) use
    the edited tensor whether the hook returns it or returns None, so both are accepted.
    """
    name = getattr(fn, "__name__", "ablate_head")
    n_heads = 5
    g = torch.Generator().manual_seed(6)
    for head in range(n_heads):  # every head, so a hook that ignores `head` (or uses -head) gives another tensor
        z = torch.randn(2, 5, n_heads, 8, generator=g) + 1.0
        arg = z.clone()
        hook = SimpleNamespace(name="blocks.1.attn.hook_z")
        out = call(fn, arg, hook, head, name=name, in_place_ok=True)
        if out is None:
            if torch.equal(arg, z):
                raise CheckFailed(
                    f"`{name}` returned None and left `z` unchanged: edit `z` in place or return the edited copy "
                    f"(a hook's return value replaces the activation)."
                )
            out = arg  # edited in place: the hook machinery reads the same tensor
        out = expect_tensor(out, z.shape, ["batch", "position", "head", "d_head"], name)
        ref = z.clone()
        ref[:, :, head] = 0
        mean_ablated = z.clone()
        mean_ablated[:, :, head] = z[:, :, head].mean((0, 1))
        kept_only = torch.zeros_like(z)
        kept_only[:, :, head] = z[:, :, head]
        hints = [
            (
                z.clone().index_fill_(1, torch.tensor([head]), 0.0),
                f"you zeroed a position (position {head}), not head {head}: heads are dimension 2 of hook_z.",
            ),
            (
                z.clone().index_fill_(3, torch.tensor([head]), 0.0),
                f"you zeroed component {head} of every head: heads are dimension 2 of hook_z.",
            ),
            (
                mean_ablated,
                "you replaced the head's output with its mean (mean ablation); this exercise zeroes it "
                "(mean ablation comes next, in the lesson's own code).",
            ),
            (kept_only, f"you kept head {head} and zeroed every other head: zero only the chosen head."),
        ]
        if head:
            hints.append(
                (
                    z.clone().index_fill_(2, torch.tensor([n_heads - head]), 0.0),
                    f"asked for head {head} of {n_heads}, you zeroed head {n_heads - head}, which is head -{head} "
                    "counted from the end: index with `head`, not `-head`.",
                )
            )
        hints += [
            (
                z.clone().index_fill_(2, torch.tensor([other]), 0.0),
                f"asked for head {head}, you zeroed head {other}: the hook must zero the head it is given, "
                "the argument `head`, not a fixed one.",
            )
            for other in range(n_heads)
            if other != head
        ]
        expect_close(out, ref, name, f"activation (head {head} of {n_heads})", hints=hints)
    passed(name, f"tried on each of {n_heads} heads; returning the edited tensor and editing in place are both fine")


# The check's own repeated sequences for the ablation loop: two short periods, four rows each, a seed of its own.
ABLATION_PERIODS, ABLATION_BATCH, ABLATION_SEED = (6, 10), 4, 11


def _ablation_runs(model) -> dict[int, torch.Tensor]:
    """{period: [batch, 1 + 2·period]}: the model's BOS, then ``period`` distinct song words (those that are one
    token with their leading space, as the lesson's pool), then the same words again."""
    ids = [model.to_tokens(" " + w, prepend_bos=False)[0] for w in storyworld.SONG_WORDS]
    words = torch.tensor([int(i[0]) for i in ids if len(i) == 1])
    bos = model.tokenizer.bos_token_id
    g = torch.Generator().manual_seed(ABLATION_SEED)
    runs = {}
    for period in ABLATION_PERIODS:
        rows = [words[torch.randperm(len(words), generator=g)[:period]] for _ in range(ABLATION_BATCH)]
        runs[period] = torch.stack([torch.cat([torch.tensor([bos]), r, r]) for r in rows]).to(device_of(model))
    return runs


def _copy_losses(model, runs: dict[int, torch.Tensor], fwd_hooks=()) -> tuple[float, float]:
    """(first-copy loss, second-copy loss from its second token), each averaged over the periods, with the hooks on."""
    pairs = []
    with torch.no_grad():
        for period, x in runs.items():
            loss = per_token_loss(model.run_with_hooks(x, fwd_hooks=list(fwd_hooks)), x).mean(0)
            pairs.append((loss[:period].mean().item(), loss[period + 1 :].mean().item()))
    first, second = torch.tensor(pairs, dtype=torch.float64).mean(0).tolist()
    return first, second


def check_share_lost_by_head(fn: Callable, model) -> None:
    """fn(losses, n_layers, n_heads, ablate) -> [layer, head]: the share of the in-context loss drop lost when each
    head alone is knocked out by ``ablate`` at ``blocks.{layer}.attn.hook_z``.

    The check gives the loop a ``losses`` of its own, on fresh repeated song words (periods 6 and 10, a seed of the
    check's), and keeps the hooks of every call. Its ``ablate`` replaces a head's output by the head's
    mean over those sequences, so a loop that zeroes heads by itself, instead of calling ``ablate``, gives other
    numbers.
    """
    name = getattr(fn, "__name__", "share_lost_by_head")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    runs = _ablation_runs(model)
    names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    with torch.no_grad():
        caches = [model.run_with_cache(x, names_filter=lambda n: n in names)[1] for x in runs.values()]
    means = {l: torch.stack([c[names[l]].mean((0, 1)) for c in caches]).mean(0) for l in range(L)}

    def ablate(z: torch.Tensor, hook, head: int) -> torch.Tensor:
        z = z.clone()
        z[:, :, head] = means[int(hook.name.split(".")[1])][head]
        return z

    def zero(z: torch.Tensor, hook, head: int) -> torch.Tensor:
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    calls: list[list] = []

    def losses(fwd_hooks=()) -> tuple[float, float]:
        calls.append(list(fwd_hooks))  # a copy: a list the loop changes later is kept as it was for this run
        return _copy_losses(model, runs, fwd_hooks)

    explain = {
        TypeError: "If it is `head` that is missing: the model calls a hook with the activation and the hook point "
        "alone, so give each run's hook its head first, partial(ablate, head=h).",
    }
    out = call(fn, losses, L, H, ablate, name=name, explain=explain)
    if not calls:
        raise CheckFailed(
            f"`{name}` never called the `losses` it was given, so it measured other sequences than the check's; "
            "take every measurement with the argument `losses` (not a global such as losses_over_periods or "
            "knocked_out)."
        )
    most = max(len(hooks) for hooks in calls)
    if most > 1:
        raise CheckFailed(
            f"`{name}`: the hooks pile up: one run had {most} heads ablated at once, because one list of hooks "
            "grows through the loop and keeps the earlier heads ablated; give each run a new list holding only "
            "that head's hook, [(f'blocks.{l}.attn.hook_z', partial(ablate, head=h))]."
        )
    if isinstance(out, (list, tuple)):
        raise CheckFailed(
            f"`{name}` returned a {type(out).__name__}; return one tensor [layer, head] (fill a torch.zeros(n_layers, "
            "n_heads), or torch.tensor the nested list)."
        )
    if isinstance(out, torch.Tensor) and L != H and tuple(out.shape) == (H, L):
        raise CheckFailed(
            f"`{name}` returned shape {tuple(out.shape)}, [head, layer]; rows should be layers and columns heads, "
            f"[layer, head] = {(L, H)}."
        )
    out = expect_tensor(out, (L, H), ["layer", "head"], name)
    first, second = _copy_losses(model, runs)
    after = torch.tensor(
        [[_copy_losses(model, runs, [(names[l], partial(ablate, head=h))]) for h in range(H)] for l in range(L)],
        dtype=torch.float64,
    )  # [layer, head, (first, second)]
    zeroed = torch.tensor(
        [[_copy_losses(model, runs, [(names[l], partial(zero, head=h))])[1] for h in range(H)] for l in range(L)],
        dtype=torch.float64,
    )
    f, s, drop = after[..., 0], after[..., 1], first - second
    ref = (s - second) / drop
    hints = [
        (
            s,
            "these are the second copy's losses with each head ablated, not the share of the drop lost; subtract "
            "the second copy's loss without hooks and divide by the drop, (s - second) / (first - second), with "
            "first and second from one call of losses without hooks.",
        ),
        (
            s - second,
            "this is how much the second copy's loss rose, in nats, not the share of the drop it took back; divide "
            "by the drop without hooks, first - second.",
        ),
        (
            (s - second) / (f - second),
            "you divided by the drop in the ablated run, its own first copy's loss minus second; divide by the "
            "drop measured once without hooks, first - second from losses([]), the same for every head.",
        ),
        (
            (f - first) / drop,
            "you read the first copy's loss; copying shows in the second copy's loss, the second of the two "
            "numbers losses returns.",
        ),
        (
            (second - s) / drop,
            "sign: a head whose removal raises the second copy's loss should lose a positive share; compute "
            "(after - before) / (first - second).",
        ),
        (
            (zeroed - second) / drop,
            "you zeroed each head instead of calling the hook you were given; build each run's hook from the "
            "argument `ablate`, partial(ablate, head=h) (the lesson passes zeroing and mean ablation in turn).",
        ),
    ]
    expect_close(out, ref, name, "shares", atol=1e-3, rtol=1e-3, hints=hints)
    plain, single = sum(not hooks for hooks in calls), sum(len(hooks) == 1 for hooks in calls)
    passed(
        name,
        f"your loop made {single} runs with one head ablated and {plain} without hooks; "
        f"its {L * H} shares match the check's",
    )


def check_full_ov_circuit(fn: Callable) -> None:
    """fn(W_E, W_V, W_O, W_U) -> [source token, output token]."""
    name = getattr(fn, "__name__", "full_ov_circuit")
    g = torch.Generator().manual_seed(9)
    n_tokens, d_model, d_head = 11, 8, 3
    W_E, W_U = torch.randn(n_tokens, d_model, generator=g), torch.randn(d_model, n_tokens, generator=g)
    W_V, W_O = torch.randn(d_model, d_head, generator=g), torch.randn(d_head, d_model, generator=g)
    args = (W_E, W_V, W_O, W_U)
    out = call(fn, *args, name=name)
    out = expect_tensor(out, (n_tokens, n_tokens), ["source token", "output token"], name)
    ref = full_ov_circuit(*args)
    hints = [
        (
            ref.T,
            "your matrix is transposed: rows should be the token attended to (through W_E), "
            "columns the output token whose logit changes (through W_U).",
        ),
        (
            W_E @ W_V @ W_V.T @ W_U,
            "the value's result leaves the head through W_O, not through W_V transposed.",
        ),
    ]
    expect_close(out, ref, name, "circuit", atol=1e-3, hints=hints)
    passed(name)


def check_composition_score(fn: Callable) -> None:
    name = getattr(fn, "__name__", "composition_score")
    g = torch.Generator().manual_seed(7)
    left, right = torch.randn(16, 16, generator=g), torch.randn(16, 16, generator=g)
    ref = composition_score(left, right).item()
    out = expect_number(call(fn, left, right, name=name), ref, name, "the score", float("inf"))
    if abs(out - (left @ right).norm().item()) < 1e-3:
        raise CheckFailed(
            f"`{name}`: divide by the product of the two norms, so that the score does not depend on scale."
        )
    swapped = ((right @ left).norm() / (left.norm() * right.norm())).item()
    if abs(out - swapped) < 1e-5:
        raise CheckFailed(
            f"`{name}`: multiply in the order given, left @ right (the earlier head's output feeds the later head)."
        )
    expect_number(out, ref, name, "the score", 1e-4)
    expect_number(
        call(fn, 3 * left, right, name=name),
        ref,
        name,
        "the score when `left` is scaled by 3 (it should not change)",
        1e-4,
    )
    passed(name)


def check_copying_score(fn: Callable) -> None:
    name = getattr(fn, "__name__", "copying_score")
    g = torch.Generator().manual_seed(8)
    m = torch.randn(20, 20, generator=g) + 3.0 * torch.eye(20) * (torch.rand(20, generator=g) > 0.3)[:, None]
    for row in (0, 1, 2):  # three rows whose own token comes second, just behind another
        other = (row + 7) % 20
        m[row, row] = m[row].max() + 1.0
        m[row, other] = m[row, row] + 0.01
    out = call(fn, m, name=name)
    ref = copying_score(m)
    col = (m.argmax(0) == torch.arange(20)).float().mean().item()
    if abs(as_number(out) - col) < 1e-6 and abs(col - ref) > 1e-6:
        raise CheckFailed(f"`{name}`: take the argmax over each row (dim=-1, the output token), not each column.")
    top2 = (m.topk(2, dim=-1).indices == torch.arange(20)[:, None]).any(-1).float().mean().item()
    if abs(as_number(out) - top2) < 1e-6 and abs(top2 - ref) > 1e-6:
        raise CheckFailed(
            f"`{name}`: you counted rows whose own token is among the top few; count only rows where it is the "
            "largest entry, the argmax."
        )
    expect_number(out, ref, name, "the copying score", 1e-6)
    passed(name)
