"""Exercise checks: ``check_<exercise>(your_function)`` tells you what is wrong, in a sentence.

Each check runs the learner's function on fresh inputs, compares it with a reference and
prints one success line. Problems raise ``CheckFailed``, which Jupyter shows as a single
red message instead of a traceback. The checks for each lesson are in this module, in
lesson order; the helpers at the top are shared by all of them.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import torch

# ---------------------------------------------------------------------------------------
# Shared machinery


class CheckFailed(AssertionError):
    """An exercise check failed. Jupyter shows only the message."""

    def _render_traceback_(self) -> list[str]:  # IPython hook: no traceback, just the sentence
        return [f"\x1b[1;31m✗ {self.args[0]}\x1b[0m"]


def passed(name: str, detail: str = "") -> None:
    print(f"✓ {name} passed" + (f": {detail}" if detail else "."))


def call(fn: Callable, *args, name: str | None = None, **kwargs) -> Any:
    """Call the learner's function, turning its failures into clear sentences."""
    name = name or getattr(fn, "__name__", "your function")
    if not callable(fn):
        raise CheckFailed(f"pass the function itself, e.g. check(...)(my_fn), not {type(fn).__name__}")
    snapshot = [a.clone() for a in args if isinstance(a, torch.Tensor)]
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailed(f"`{name}` is still the stub: replace the `raise NotImplementedError(...)` "
                          f"line with your code, run the cell, then run this check again.") from None
    except CheckFailed:
        raise
    except Exception as e:  # the learner's bug: say what and where, briefly
        raise CheckFailed(f"`{name}` raised {type(e).__name__}: {_first_line(e)}") from None
    after = [a for a in args if isinstance(a, torch.Tensor)]
    for k, (before, now) in enumerate(zip(snapshot, after)):
        if before.shape != now.shape or not torch.equal(before, now):
            raise CheckFailed(f"`{name}` changed its input tensor (argument {k + 1}) in place. "
                              f"Work on a copy, or use out-of-place operations (x = x * 2, not x *= 2).")
    return out


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else "(no message)"


def expect_tensor(out: Any, shape: Sequence[int], dims: Sequence[str], name: str,
                  floating: bool = True) -> torch.Tensor:
    """Check type, shape (naming the dimension that is off), dtype and finiteness."""
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"`{name}` should return a torch.Tensor, but returned {type(out).__name__}.")
    shape = tuple(shape)
    if out.ndim != len(shape):
        raise CheckFailed(f"`{name}` returned a tensor with {out.ndim} dimensions {tuple(out.shape)}; "
                          f"expected {len(shape)}: [{', '.join(dims)}] = {shape}.")
    for k, (got, want, dim) in enumerate(zip(out.shape, shape, dims)):
        if got != want:
            raise CheckFailed(f"`{name}` returned shape {tuple(out.shape)}: dimension {k} ({dim}) is "
                              f"{got} but should be {want}. Expected [{', '.join(dims)}] = {shape}.")
    if floating and not out.is_floating_point():
        raise CheckFailed(f"`{name}` returned dtype {out.dtype}; expected a floating-point tensor "
                          f"(did an integer division or a comparison slip in?).")
    if floating and not torch.isfinite(out).all():
        bad = (~torch.isfinite(out)).sum().item()
        raise CheckFailed(f"`{name}` returned {bad} NaN or infinite value(s). Look for a division "
                          f"by zero, a log of zero, or a softmax over -inf everywhere.")
    return out


def expect_close(out: torch.Tensor, ref: torch.Tensor, name: str, what: str = "values",
                 atol: float = 1e-4, rtol: float = 1e-3, hints: Sequence[tuple[torch.Tensor, str]] = ()) -> None:
    """Compare with the reference; if a known wrong answer matches instead, say which."""
    out, ref = out.detach().float().cpu(), ref.detach().float().cpu()
    if torch.allclose(out, ref, atol=atol, rtol=rtol):
        return
    for wrong, message in hints:
        if wrong.shape == out.shape and torch.allclose(out, wrong.detach().float().cpu(), atol=atol, rtol=rtol):
            raise CheckFailed(f"`{name}`: {message}")
    err = (out - ref).abs()
    idx = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape)) if err.ndim else ()
    raise CheckFailed(f"`{name}` gives the wrong {what}: at index {list(idx)} you have "
                      f"{out[idx].item():.4g}, expected {ref[idx].item():.4g} "
                      f"({(err > atol + rtol * ref.abs()).float().mean().item():.0%} of entries differ).")


def expect_number(out: Any, ref: float, name: str, what: str, tol: float) -> float:
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        out = out.item()
    if not isinstance(out, (int, float)) or isinstance(out, bool):
        raise CheckFailed(f"`{name}` should return a number, but returned {type(out).__name__}.")
    if not math.isfinite(out):
        raise CheckFailed(f"`{name}` returned {out}; expected a finite number.")
    if abs(out - ref) > tol:
        raise CheckFailed(f"`{name}` gives {what} = {out:.4g}; expected {ref:.4g} (within {tol:g}).")
    return float(out)


# ---------------------------------------------------------------------------------------
# Lesson 01: induction heads


def _random_pattern(n_heads: int = 3, n: int = 9, seed: int = 0) -> torch.Tensor:
    """A causal attention pattern ``[head, query, key]`` whose rows sum to 1."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_heads, n, n, generator=g) * 2
    scores = scores.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
    return scores.softmax(-1)


def ref_attention_pattern(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
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
    ref = ref_attention_pattern(q, k)
    sums = out.sum(-1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / 4
    mask = torch.ones(7, 7, dtype=torch.bool).triu(1)
    hints = [
        (scores.masked_fill(mask, float("-inf")).softmax(-2).nan_to_num(0.0),
         "your pattern rows don't sum to 1 — did you softmax over the query dimension instead of the key dimension?"),
        (torch.einsum("qhd,khd->hqk", q, k).masked_fill(mask, float("-inf")).softmax(-1),
         "close, but the scores must be divided by sqrt(d_head) before the softmax."),
        (scores.softmax(-1), "your pattern attends to later positions: apply the causal mask (key > query → -inf) before the softmax."),
    ]
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        expect_close(out, ref, name, "pattern", hints=hints[:1] or hints)
    if (out * mask).abs().max() > 1e-6:
        raise CheckFailed(f"`{name}`: {hints[2][1]}")
    expect_close(out, ref, name, "pattern", hints=hints)
    passed(name, "matches the model's own attention pattern computation")


def ref_previous_token_scores(pattern: torch.Tensor) -> torch.Tensor:
    """[head, query, key] -> [head]: mean attention from each position (from 1 on) to the one before."""
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)


def check_previous_token_scores(fn: Callable) -> None:
    name = getattr(fn, "__name__", "previous_token_scores")
    p = _random_pattern(seed=2)
    out = expect_tensor(call(fn, p, name=name), (3,), ["head"], name)
    hints = [(p.diagonal(offset=1, dim1=-2, dim2=-1).mean(-1) if p.shape[-1] > 1 else p[:, 0, 0],
              "you read the diagonal above the main one (offset=+1): for a causal pattern that is all zeros. "
              "Previous-token attention sits at [query i, key i-1], offset=-1."),
             (p.diagonal(dim1=-2, dim2=-1).mean(-1), "that is attention to the current token (the main diagonal), "
              "not to the previous one (offset=-1)."),
             (p.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1), "use the mean over positions, not the sum: a score should lie in [0, 1].")]
    expect_close(out, ref_previous_token_scores(p), name, "scores", hints=hints)
    passed(name)


def ref_duplicate_token_scores(pattern: torch.Tensor, period: int) -> torch.Tensor:
    """For ``BOS r r`` (len(r) = period): mean attention from each second-copy token to its first copy."""
    q = torch.arange(period + 1, 2 * period + 1)
    return pattern[:, q, q - period].mean(-1)


def ref_induction_scores(pattern: torch.Tensor, period: int) -> torch.Tensor:
    """For ``BOS r r``: mean attention from each second-copy token to the token after its first copy."""
    q = torch.arange(period + 1, 2 * period + 1)
    return pattern[:, q, q - period + 1].mean(-1)


def _check_repeat_score(fn: Callable, ref_fn: Callable, default: str, other: Callable, other_name: str) -> None:
    name = getattr(fn, "__name__", default)
    period = 6
    p = _random_pattern(n=2 * period + 1, seed=3)
    out = expect_tensor(call(fn, p, period, name=name), (3,), ["head"], name)
    hints = [(other(p, period), f"that is the {other_name} score: check which key each second-copy token should attend to."),
             (ref_fn(p, period) * period, "use the mean over the second copy's positions, not the sum.")]
    expect_close(out, ref_fn(p, period), name, "scores", hints=hints)
    period2 = 4  # a different period, so a hard-coded offset fails
    p2 = _random_pattern(n=2 * period2 + 1, seed=4)
    try:
        out2 = expect_tensor(call(fn, p2, period2, name=name), (3,), ["head"], name)
        expect_close(out2, ref_fn(p2, period2), name, f"scores for period {period2}")
    except CheckFailed as e:
        raise CheckFailed(f"{e.args[0]} This was with period {period2}: is the period hard-coded?") from None
    passed(name)


def check_duplicate_token_scores(fn: Callable) -> None:
    _check_repeat_score(fn, ref_duplicate_token_scores, "duplicate_token_scores", ref_induction_scores, "induction")


def check_induction_scores(fn: Callable) -> None:
    _check_repeat_score(fn, ref_induction_scores, "induction_scores", ref_duplicate_token_scores, "duplicate-token")


def check_repeated_tokens(fn: Callable, pool: Sequence[int], bos: int) -> None:
    """fn(pool, period, batch, seed) -> [batch, 1 + 2*period]: BOS, then r, then r again."""
    name = getattr(fn, "__name__", "repeated_tokens")
    out = call(fn, list(pool), 7, 5, 0, name=name)
    out = expect_tensor(out, (5, 15), ["batch", "position"], name, floating=False)
    if out.dtype not in (torch.int64, torch.int32):
        raise CheckFailed(f"`{name}` returned dtype {out.dtype}; token ids must be integers (torch.long).")
    if not (out[:, 0] == bos).all():
        raise CheckFailed(f"`{name}`: every sequence must start with the BOS token ({bos}).")
    if not torch.equal(out[:, 1:8], out[:, 8:15]):
        raise CheckFailed(f"`{name}`: positions 1..7 and 8..14 should be the same tokens (the second copy repeats the first).")
    allowed = set(int(t) for t in pool)
    if not set(out[:, 1:].flatten().tolist()) <= allowed:
        raise CheckFailed(f"`{name}`: draw tokens only from `pool`.")
    if len(set(tuple(r) for r in out[:, 1:8].tolist())) < 5:
        raise CheckFailed(f"`{name}`: the sequences in a batch should differ (draw each one at random).")
    if any(len(set(r)) < 7 for r in out[:, 1:8].tolist()):
        raise CheckFailed(f"`{name}`: draw distinct tokens within a sequence (sample without replacement), "
                          f"so that each token's previous occurrence is unambiguous.")
    again = call(fn, list(pool), 7, 5, 0, name=name)
    if not torch.equal(out, again):
        raise CheckFailed(f"`{name}`: the same seed should give the same tokens (use a torch.Generator seeded with `seed`).")
    passed(name)


def ref_per_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """logits [batch, pos, vocab], tokens [batch, pos] -> loss of predicting token t+1 at t: [batch, pos-1]."""
    logprobs = logits[:, :-1].log_softmax(-1)
    return -logprobs.gather(-1, tokens[:, 1:, None])[..., 0]


def check_per_token_loss(fn: Callable) -> None:
    name = getattr(fn, "__name__", "per_token_loss")
    g = torch.Generator().manual_seed(5)
    logits, tokens = torch.randn(2, 6, 11, generator=g), torch.randint(0, 11, (2, 6), generator=g)
    out = expect_tensor(call(fn, logits, tokens, name=name), (2, 5), ["batch", "position"], name)
    lp = logits.log_softmax(-1)
    hints = [(-lp[:, 1:].gather(-1, tokens[:, 1:, None])[..., 0],
              "off by one: the logits at position t predict the token at t+1, so pair logits[:, :-1] with tokens[:, 1:]."),
             (-lp[:, :-1].gather(-1, tokens[:, :-1, None])[..., 0],
              "off by one: you scored each position's own token; the logits at t predict token t+1."),
             (ref_per_token_loss(logits, tokens).neg(), "sign: the loss is the *negative* log-probability."),
             (-logits[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0], "take log_softmax of the logits before picking the token's entry.")]
    expect_close(out, ref_per_token_loss(logits, tokens), name, "losses", hints=hints)
    passed(name)


def check_ablate_head(fn: Callable) -> None:
    """fn(z, hook, head) -> z with that head's output zeroed; z is [batch, pos, head, d_head]."""
    name = getattr(fn, "__name__", "ablate_head")
    g = torch.Generator().manual_seed(6)
    z = torch.randn(2, 5, 4, 8, generator=g)
    hook = SimpleNamespace(name="blocks.1.attn.hook_z")
    out = call(fn, z, hook, 2, name=name)
    if out is None:
        raise CheckFailed(f"`{name}` returned None: return the edited activation (a hook's return value replaces it).")
    out = expect_tensor(out, z.shape, ["batch", "position", "head", "d_head"], name)
    ref = z.clone()
    ref[:, :, 2] = 0
    hints = [(z.clone().index_fill_(1, torch.tensor([2]), 0.0), "you zeroed position 2, not head 2: heads are dimension 2 of hook_z."),
             (z.clone().index_fill_(3, torch.tensor([2]), 0.0), "you zeroed component 2 of every head: heads are dimension 2 of hook_z.")]
    expect_close(out, ref, name, "activation", hints=hints)
    passed(name)


def ref_composition_score(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """||left @ right||_F / (||left||_F ||right||_F)."""
    return (left @ right).norm() / (left.norm() * right.norm())


def check_composition_score(fn: Callable) -> None:
    name = getattr(fn, "__name__", "composition_score")
    g = torch.Generator().manual_seed(7)
    left, right = torch.randn(16, 16, generator=g), torch.randn(16, 16, generator=g)
    ref = ref_composition_score(left, right).item()
    out = expect_number(call(fn, left, right, name=name), ref, name, "the score", float("inf"))
    if abs(out - (left @ right).norm().item()) < 1e-3:
        raise CheckFailed(f"`{name}`: divide by the product of the two norms, so that the score does not depend on scale.")
    swapped = ((right @ left).norm() / (left.norm() * right.norm())).item()
    if abs(out - swapped) < 1e-5:
        raise CheckFailed(f"`{name}`: multiply in the order given, left @ right (the earlier head's output feeds the later head).")
    expect_number(out, ref, name, "the score", 1e-4)
    expect_number(call(fn, 3 * left, right, name=name), ref, name,
                  "the score when `left` is scaled by 3 (it should not change)", 1e-4)
    passed(name)


def _num(x) -> float:
    return x.item() if isinstance(x, torch.Tensor) and x.numel() == 1 else float(x) if isinstance(x, (int, float)) else float("nan")


def ref_copying_score(full_ov: torch.Tensor) -> float:
    """Fraction of rows whose largest entry is on the diagonal: the OV circuit predicts the token it saw."""
    return (full_ov.argmax(-1) == torch.arange(full_ov.shape[0])).float().mean().item()


def check_copying_score(fn: Callable) -> None:
    name = getattr(fn, "__name__", "copying_score")
    g = torch.Generator().manual_seed(8)
    m = torch.randn(20, 20, generator=g) + 3.0 * torch.eye(20) * (torch.rand(20, generator=g) > 0.3)[:, None]
    out = call(fn, m, name=name)
    ref = ref_copying_score(m)
    col = (m.argmax(0) == torch.arange(20)).float().mean().item()
    if abs(_num(out) - col) < 1e-6 and abs(col - ref) > 1e-6:
        raise CheckFailed(f"`{name}`: take the argmax over each row (dim=-1, the output token), not each column.")
    expect_number(out, ref, name, "the copying score", 1e-6)
    passed(name)


# ---------------------------------------------------------------------------------------
# Lesson 00: orientation

ORIENTATION_PROMPTS = ("Ann was in the park. Ann felt", "When Bob and Eve went to the school, Bob gave the kite to",
                       "Today Mia made a list: cup hat drum. Mia read the list again: cup")


def check_top_prediction(fn: Callable, model) -> None:
    """fn(model, text) -> the most likely next token, as a string."""
    name = getattr(fn, "__name__", "top_prediction")
    for text in ORIENTATION_PROMPTS:
        out = call(fn, model, text, name=name)
        with torch.no_grad():
            logits = model(model.to_tokens(text))[0]
        want = model.to_string(logits[-1].argmax())
        if isinstance(out, torch.Tensor) or isinstance(out, int):
            raise CheckFailed(f"`{name}` returned a token id ({int(out)}); return its text with model.to_string(id).")
        if not isinstance(out, str):
            raise CheckFailed(f"`{name}` should return a string, but returned {type(out).__name__}.")
        if out != want:
            first = model.to_string(logits[0].argmax())
            if out == first:
                raise CheckFailed(f"`{name}`: you read the prediction at the first position; the next token after "
                                  f"the whole text is predicted at the last position (logits[0, -1]).")
            raise CheckFailed(f"`{name}`({text!r}) gave {out!r}; the model's top prediction is {want!r}.")
    passed(name, "on " + ", ".join(repr(p[-12:]) for p in ORIENTATION_PROMPTS))


def ref_mean_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return ref_per_token_loss(logits, tokens).mean()


def check_mean_loss(fn: Callable) -> None:
    """fn(logits [batch, pos, vocab], tokens [batch, pos]) -> mean next-token loss (a scalar)."""
    name = getattr(fn, "__name__", "mean_loss")
    g = torch.Generator().manual_seed(11)
    logits, tokens = torch.randn(3, 8, 13, generator=g), torch.randint(0, 13, (3, 8), generator=g)
    out = call(fn, logits, tokens, name=name)
    if isinstance(out, torch.Tensor) and out.numel() != 1:
        raise CheckFailed(f"`{name}` returned shape {tuple(out.shape)}; average over every prediction to get one number.")
    ref = ref_mean_loss(logits, tokens).item()
    lp = logits.log_softmax(-1)
    wrong = {
        -lp.gather(-1, tokens[..., None]).mean().item(): "no shift: the logits at position t predict token t+1 "
                                                         "(use logits[:, :-1] with tokens[:, 1:]).",
        -logits[:, :-1].gather(-1, tokens[:, 1:, None]).mean().item(): "apply log_softmax to the logits first.",
        ref_per_token_loss(logits, tokens).sum().item(): "take the mean over predictions, not the sum.",
    }
    got = _num(out)
    for value, message in wrong.items():
        if math.isfinite(got) and abs(got - value) < 1e-4:
            raise CheckFailed(f"`{name}`: {message}")
    expect_number(out, ref, name, "the loss", 1e-4)
    passed(name)


def check_logits_from_residual(fn: Callable, model) -> None:
    """fn(model, resid [batch, pos, d_model]) -> logits [batch, pos, d_vocab], as the model computes them."""
    name = getattr(fn, "__name__", "logits_from_residual")
    tokens = model.to_tokens(ORIENTATION_PROMPTS[0])
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n == last)
    resid = cache[last]
    out = call(fn, model, resid, name=name)
    out = expect_tensor(out, logits.shape, ["batch", "position", "d_vocab"], name)
    with torch.no_grad():
        skipped = resid @ model.W_U + model.b_U
    expect_close(out, logits, name, "logits", atol=1e-3, hints=[
        (skipped, "apply the final LayerNorm (model.ln_final) before multiplying by W_U.")])
    passed(name, "your logits equal the model's")


def check_boost_hook(fn: Callable) -> None:
    """fn(resid, hook, direction, scale) -> resid with scale * direction added at the last position only."""
    name = getattr(fn, "__name__", "boost_hook")
    g = torch.Generator().manual_seed(12)
    resid, direction = torch.randn(2, 5, 8, generator=g), torch.randn(8, generator=g)
    out = call(fn, resid, SimpleNamespace(name="blocks.3.hook_resid_post"), direction, 2.5, name=name)
    if out is None:
        raise CheckFailed(f"`{name}` returned None: a hook's return value replaces the activation, so return it.")
    out = expect_tensor(out, resid.shape, ["batch", "position", "d_model"], name)
    ref = resid.clone()
    ref[:, -1] += 2.5 * direction
    expect_close(out, ref, name, "activation", hints=[
        (resid + 2.5 * direction, "you added the direction at every position; add it at the last position only (resid[:, -1])."),
        (resid.clone().index_add_(1, torch.tensor([0]), (2.5 * direction).expand(2, 1, 8)),
         "you added it at the first position; the last one is resid[:, -1]."),
        (resid.clone().index_add_(1, torch.tensor([4]), direction.expand(2, 1, 8)), "multiply the direction by `scale`.")])
    passed(name)
