"""Checks for lesson 05, steering: ``check_<exercise>(your_function)``.

Each check runs the learner's function on fresh inputs (small synthetic problems whose answer is
known, fresh Storyworld stories, or the model itself on fresh prompts) and compares with a
reference written in ``utils.metrics.steering`` and ``utils.interventions.steering``. When an answer is wrong,
the check computes the common wrong answers the same way and names the mistake whose result the
learner's matches.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

import torch

from utils.checks.framework import (
    CheckFailed,
    call,
    call_own_generator,
    call_seeded,
    expect_close,
    expect_tensor,
    passed,
)
from utils.corpora import storyworld
from utils.corpora.emotions import stage_names
from utils.interventions.steering import feeling_free_positions as _feeling_free_positions
from utils.interventions.steering import story_prompts
from utils.metrics import steering as ref
from utils.seeds import LESSON_05_CHECKS


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


# --- the vector and the hook ------------------------------------------------------------------


def check_steering_vector(fn: Callable) -> None:
    """fn(x [n, d], y [n], target) -> [d]: the target's mean minus the mean of the other classes' means."""
    name = _name(fn, "steering_vector")
    g = torch.Generator().manual_seed(51)
    # 12 classes like the emotions, class 0 far more common than the others
    y = torch.cat([torch.zeros(300, dtype=torch.long), torch.arange(1, 12).repeat(12)])
    y = y[torch.randperm(len(y), generator=g)]
    x = torch.randn(len(y), 8, generator=g) + 3.0 + y[:, None] * torch.randn(1, 8, generator=g)
    for target in (2, 0):
        out = expect_tensor(call(fn, x, y, target, name=name), (8,), ["d_model"], name)
        means = torch.stack([x[y == k].mean(0) for k in range(12)])
        want = ref.steering_vector(x, y, target, 12)
        others = y != target
        hints = [
            (means[target], "that is the target's mean itself: subtract the mean of the other classes' means."),
            (means[target] - x[others].mean(0), "you subtracted the mean of all the other rows, which weighs each "
             "class by its size: average the other classes' means, so that each emotion counts once."),
            (means[target] - means.mean(0), "you subtracted the mean of all the class means, the target's own "
             "included: leave the target out of the mean you subtract."),
            (x[y == target].mean(0) - x.mean(0), "you subtracted the mean of every row: subtract the mean of the "
             "other classes' means."),
            (-want, "the sign is flipped: the target's mean minus the others', so that adding the vector moves "
             "towards the target."),
            (want / want.norm(), "you normalised the vector to length 1: return the difference itself (the lesson "
             "scales it later)."),
        ]  # fmt: skip
        expect_close(out, want, name, "vector", atol=1e-4, hints=hints)
    passed(name, "target mean minus the mean of the other classes' means")


def check_add_vector(fn: Callable) -> None:
    """fn(vector [d] or [batch, d], start, stop=None) -> a hook (act, hook) adding it at act[:, start:stop]."""
    name = _name(fn, "add_vector")
    g = torch.Generator().manual_seed(52)
    act = torch.randn(3, 7, 8, generator=g)
    one = torch.randn(8, generator=g)
    each = torch.randn(3, 8, generator=g)
    cases = [(one, 2, 5, "one vector, positions 2–4"), (one, 4, None, "one vector, position 4 on"),
             (each, 1, None, "a vector per batch row, position 1 on")]  # fmt: skip
    explain = {
        RuntimeError: "If that is a size mismatch, a vector per row, [batch, d_model], must become [batch, 1, "
        "d_model] to broadcast over the positions: vector[:, None].",
        TypeError: "`stop` may be None, meaning to the end: slice act[:, start:stop], which takes None as it is.",
    }
    for vector, start, stop, what in cases:
        hook = call(fn, vector, start, stop, name=name)
        if not callable(hook):
            raise CheckFailed(f"`{name}` should return a hook function (act, hook) -> act, not {type(hook).__name__}.")
        given = act.clone()
        out = call(hook, given, None, name="your hook", in_place_ok=True, explain=explain)
        out = given if out is None else out
        out = expect_tensor(out, act.shape, ["batch", "position", "d_model"], "your hook")
        want = act.clone()
        v = vector if vector.ndim == 1 else vector[:, None]
        want[:, start:stop] += v
        everywhere = act + v
        only_start = act.clone()
        only_start[:, start] += vector
        hints = [(everywhere, f"the vector was added at every position; add it only at positions {start}:{stop}.")]
        if vector.ndim == 1:
            hints.append((only_start, f"the vector was added at position {start} alone; add it at every position of "
                          f"act[:, {start}:{stop}] (a slice, not an index)."))  # fmt: skip
            rows = act.clone()
            rows[start:stop] += vector
            hints.append((rows, f"the vector was added to batch rows {start}:{stop}: positions are act's second "
                          f"dimension, act[:, {start}:{stop}]."))  # fmt: skip
        if stop is not None:
            past = act.clone()
            past[:, start : stop + 1] += v
            hints.append((past, f"the vector was added at position {stop} as well: act[:, {start}:{stop}] stops "
                          f"before position {stop}, as a Python slice does."))  # fmt: skip
        if stop is None:
            short = act.clone()
            short[:, start:-1] += v
            hints.append((short, "the last position was left out: a stop of None was read as -1, and act[:, start:-1] "
                          "stops before the last position. Slice act[:, start:stop], which takes None as 'to the "
                          "end'."))  # fmt: skip
        minus = act.clone()
        minus[:, start:stop] -= v
        hints.append((minus, "the vector was subtracted: add it."))
        expect_close(out, want, "your hook", f"activation ({what})", atol=1e-5, hints=hints)
    passed(name, "adds one vector or one per row, on the positions asked, nowhere else")


def _check_tokens(model, n: int = 4) -> torch.Tensor:
    """``n`` fresh prompts ("… Ann felt") of the most common length, BOS first, ``[n, position]``."""
    prompts = story_prompts(40, LESSON_05_CHECKS, named=False)
    ids = [
        [model.tokenizer.bos_token_id] + model.tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in prompts
    ]
    length = max(set(map(len, ids)), key=[len(r) for r in ids].count)
    return torch.tensor([r for r in ids if len(r) == length][:n], device=next(model.parameters()).device)


# Wrong ways to continue, each with how to reproduce it (the model, the tokens so far and the
# prompt's length -> the next tokens [batch, 1]) and what it gets wrong.
_GREEDY_MISTAKES = [
    (
        lambda model, x, n: model(x)[:, 0].argmax(-1, keepdim=True),
        "takes the prediction after the first position (BOS): take the argmax of the logits at the last position, "
        "logits[:, -1].",
    ),
    (
        lambda model, x, n: model(x[:, -1:])[:, -1].argmax(-1, keepdim=True),
        "feeds the model only the last token, so it predicts without any context: run the model on the whole "
        "sequence so far, model(x), at every step.",
    ),
    (
        lambda model, x, n: model(x[:, -n:])[:, -1].argmax(-1, keepdim=True),
        "feeds the model a window of the last n tokens, which drops the start of the sequence (BOS and the story's "
        "opening) after the first step: run the model on the whole sequence so far, model(x), at every step.",
    ),
    (
        lambda model, x, n: model(x[:, :n])[:, -1].argmax(-1, keepdim=True),
        "runs the model on the prompt alone at every step, so it appends the same token again and again: run it on "
        "the prompt and the tokens chosen so far, model(x) with x growing.",
    ),
]


_GREEDY_NEW = 12  # as many new tokens as the lesson generates


def check_greedy_continue(fn: Callable, model) -> None:
    """fn(model, tokens [batch, n], n_new) -> [batch, n + n_new]: greedy continuation.

    The function runs with torch's global generator seeded (and restored afterwards); a second
    run with another seed shows whether it samples. It runs three times: on the bare model, with a
    hook at the last layer's last position, which another copy of the model would not see, and
    with a hook at a middle layer on every position from the first new token on, which a
    key-value cache never applies (each cached step runs the model on one position, where
    act[:, n:] is empty).
    """
    name = _name(fn, "greedy_continue")
    tokens = _check_tokens(model)
    batch, n = tokens.shape
    n_new = _GREEDY_NEW

    def run(seed: int = LESSON_05_CHECKS):
        out = call_seeded(fn, model, tokens, n_new, seed=seed, name=name)
        if not isinstance(out, torch.Tensor):
            raise CheckFailed(f"`{name}` should return the token tensor [batch, n + n_new], not {type(out).__name__}.")
        if tuple(out.shape) == (batch, n_new):
            raise CheckFailed(f"`{name}` returns only the new tokens: return the prompt followed by them, "
                              "[batch, n + n_new] (torch.cat along the positions).")  # fmt: skip
        out = expect_tensor(out, (batch, n + n_new), ["batch", "position"], name, floating=False).cpu()
        if not torch.equal(out[:, :n], tokens.cpu()):
            raise CheckFailed(f"`{name}` should return the prompt followed by the new tokens; the first {n} differ.")
        return out

    # (hooks, the learner's tokens, greedy decoding's) on the bare model, at the last position, at the new ones
    conditions = _greedy_references(model, tokens, n_new)
    plain = conditions[0][1]
    runs = []
    for hooks, want in conditions:
        with model.hooks(fwd_hooks=hooks):
            runs.append((hooks, run(), want))
    if all(torch.equal(out, want) for _, out, want in runs):
        passed(name, "matches greedy decoding, with and without hooks on the model")
        return
    out, want = runs[0][1], runs[0][2]
    if not torch.equal(out, want):
        if not torch.equal(run(LESSON_05_CHECKS + 1), out):
            raise CheckFailed(f"`{name}` gives other tokens each time it runs: it samples. Take the argmax of the "
                              "logits at the last position (greedy), or pass do_sample=False.")  # fmt: skip
        for step, message in _GREEDY_MISTAKES:  # all() stops at the first run a mistake does not reproduce
            if all(_matches(model, tokens, n_new, hooks, out, step) for hooks, out, _ in runs):
                raise CheckFailed(f"`{name}` {message}")
        first = (out != want).any(0).nonzero()[0].item()
        if first == n:
            raise CheckFailed(f"`{name}`'s first new token is not the model's top prediction after the prompt: run "
                              "the model on the whole prompt, BOS included, and take the argmax of the logits at the "
                              "last position, logits[:, -1].")  # fmt: skip
        raise CheckFailed(
            f"`{name}` agrees with greedy decoding up to position {first}, then differs: each step must run the "
            "model on everything so far (the prompt and the tokens already chosen) and append the argmax at the "
            "last position."
        )
    if torch.equal(runs[1][1], runs[1][2]) and len(runs) > 2 and torch.equal(runs[2][1], plain):
        raise CheckFailed(f"`{name}` never applies a hook that adds a vector at the new positions: you used a "
                          "key-value cache (model.generate and model.hf_generate use one unless "
                          "use_past_kv_cache=False), whose steps each run the model on the newest position alone, so "
                          "act[:, start:stop] misses. Run model(x) on the whole sequence at every step.")  # fmt: skip
    raise CheckFailed(f"`{name}` ignores a hook put on the model around it: call the model you are given, model(x), "
                      "at every step, so that its hooks run (another copy of the model has none).")  # fmt: skip


# Greedy decoding under each of the check's hooks depends only on the model's weights and the fixed
# prompts, so it is computed once per model and weights (a second check, e.g. after a fix, reuses it).
_REFERENCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _greedy_references(model, tokens: torch.Tensor, n_new: int) -> list[tuple[list, torch.Tensor]]:
    """(hooks, greedy decoding's tokens) on the bare model, with a push at the last layer's last position,
    and with a push at a middle layer on the new positions (the first push that changes the tokens)."""
    with torch.no_grad():
        weights = float(sum(p.double().sum() for p in model.parameters()))
    key = (weights, tuple(tokens.shape), n_new)
    cached = _REFERENCES.setdefault(model, {})
    if key in cached:
        return cached[key]
    u = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(53)).to(tokens.device) * 60

    def push_last(act, hook):
        act[:, -1] += u.to(act.dtype)
        return act

    plain = _greedy(model, tokens, n_new).cpu()
    last = [(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", push_last)]
    with model.hooks(fwd_hooks=last):
        conditions = [([], plain), (last, _greedy(model, tokens, n_new).cpu())]
    for hook in _new_position_hooks(model, tokens):
        with model.hooks(fwd_hooks=[hook]):
            pushed = _greedy(model, tokens, n_new).cpu()
        if not torch.equal(pushed, plain):
            conditions.append(([hook], pushed))
            break
    cached[key] = conditions
    return conditions


def _matches(model, tokens, n_new, hooks, out, step) -> bool:
    with model.hooks(fwd_hooks=hooks):
        return torch.equal(out, _greedy(model, tokens, n_new, step).cpu())


def _new_position_hooks(model, tokens: torch.Tensor):
    """Hooks at a middle layer that push every position from the first new token on, stronger in turn."""
    n = tokens.shape[1]
    layer = model.cfg.n_layers // 2
    hook_name = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        # only the cache is read: the head unembeds the last position alone (the same activations)
        _, cache = model.run_with_cache(tokens, names_filter=hook_name, logits_to_keep=1)
    norm = cache[hook_name].norm(dim=-1).mean()
    u = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(LESSON_05_CHECKS)).to(tokens.device)
    for strength in (4.0, 8.0):
        v = u / u.norm() * norm * strength

        def push(act, hook, v=v):
            act[:, n:] += v.to(act.dtype)
            return act

        yield hook_name, push


def _greedy(model, tokens: torch.Tensor, n_new: int, step: Callable | None = None) -> torch.Tensor:
    """Greedy decoding; with ``step`` (model, tokens so far, prompt length -> next tokens), a learner's variant."""
    x, n = tokens, tokens.shape[1]
    with torch.no_grad():
        for _ in range(n_new):
            nxt = step(model, x, n) if step else model(x)[:, -1].argmax(-1, keepdim=True)
            x = torch.cat([x, nxt], 1)
    return x


# --- reading what a continuation expresses ------------------------------------------------------


def _circular(p: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    return torch.atan2(p @ angles.sin(), p @ angles.cos())


def check_decoded_angle(fn: Callable) -> None:
    """fn(loglik [n, 12], angles [12]) -> [n]: the posterior-weighted circular mean angle, NaN where nothing fits.

    The values are compared first, on the rows where every emotion fits, so that a wrong way of
    averaging is named whatever it does with the row where nothing fits; that row's NaN is tested
    last.
    """
    name = _name(fn, "decoded_angle")
    g = torch.Generator().manual_seed(54)
    angles = ref.ANGLES
    loglik = torch.randn(40, 12, generator=g) * 3
    loglik[5] = -math.inf  # a sentence no emotion can write
    loglik[6] = torch.tensor([-1.0, 0.5, -0.3] + [-math.inf] * 9)  # only three emotions can
    loglik[7] = torch.tensor([0.0] + [-50.0] * 10 + [0.0])  # split between 330° and 0°: the answer is near 345°
    out = expect_tensor(call(fn, loglik, angles, name=name), (40,), ["continuation"], name, floating=False)
    if not out.is_floating_point():
        raise CheckFailed(f"`{name}` returned dtype {out.dtype}; angles are floating-point numbers (radians).")
    out = out.detach().float().cpu()
    want = ref.decoded_angle(loglik, angles)
    fits = torch.isfinite(loglik).all(-1)  # rows where every emotion fits

    def matches(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # angles: compare on the circle
        return torch.cos(a - b) > 1 - 1e-4

    if not matches(out[fits], want[fits]).all():
        p = loglik.softmax(-1)
        mistakes = [
            (angles[loglik.argmax(-1)], "gives the angle of the single likeliest emotion: average all 12 angles on "
             "the circle, weighted by the posterior softmax(loglik)."),
            (p @ angles, "averages the angles as plain numbers, so 330° and 0° average to 165°: average the unit "
             "vectors (cos, sin) and take atan2 of the result."),
            (_circular(loglik, angles), "weights the angles by the log-likelihoods (or log-probabilities): turn "
             "them into probabilities first, softmax(loglik) over the 12 emotions."),
            (_circular(loglik.softmax(0), angles), "takes the softmax over the continuations (dim 0): take it over "
             "the 12 emotions of each row, softmax(loglik, dim=-1)."),
            (torch.atan2(p @ angles.cos(), p @ angles.sin()), "swaps the arguments of atan2: it takes (y, x), the "
             "sine part first, atan2(Σ p sin θ, Σ p cos θ)."),
        ]  # fmt: skip
        for wrong, message in mistakes:
            if matches(out[fits], wrong[fits]).all():
                raise CheckFailed(f"`{name}` {message}")
        if matches(torch.deg2rad(out[fits]), want[fits]).all():
            raise CheckFailed(f"`{name}` returns degrees: return radians, as atan2 gives them.")
        bad = (~matches(out[fits], want[fits])).nonzero()[0].item()
        raise CheckFailed(f"`{name}` gives {out[fits][bad].item():.3f} rad for a row where the posterior's circular "
                          f"mean is {want[fits][bad].item():.3f} rad.")  # fmt: skip
    if not matches(out[6], want[6]):
        zeroed = _circular(torch.where(torch.isfinite(loglik), loglik, torch.zeros(())).softmax(-1), angles)
        if matches(out[6], zeroed[6]):
            raise CheckFailed(f"`{name}` replaces -inf by 0, which gives the emotions that cannot write the text a "
                              "weight: leave -inf in, the softmax gives it probability 0.")  # fmt: skip
        raise CheckFailed(f"`{name}` gives {out[6].item():.3f} rad for a row where only three emotions fit (the "
                          f"others -inf, probability 0), expected {want[6].item():.3f} rad.")  # fmt: skip
    if not out[5].isnan():
        raise CheckFailed(f"`{name}` gives {out[5].item():.3f} for a row where every log-likelihood is -inf: return "
                          "NaN there (no emotion fits, so there is no angle to read).")  # fmt: skip
    passed(name, "the circular mean of the 12 angles under the posterior, NaN where nothing fits")


# --- side effects ---------------------------------------------------------------------------------


def _first_tokens(offsets, sentences, test=lambda a, b, start, end: a < end and b > start) -> list[int]:
    return [next(i for i, (a, b) in enumerate(offsets) if test(a, b, *s["span"])) for s in sentences]


# Wrong ways to find the positions: (text, offsets, sentences) -> positions, and what each gets wrong.
_FREE_MISTAKES = [
    (
        lambda text, offsets, sentences: [p + 1 for p in _first_tokens(offsets, sentences[1:])],
        "returns the positions of the sentences' first tokens (with BOS counted); return the positions that "
        "*predict* them, one earlier: with BOS at position 0, that is the first token's index among the text's "
        "tokens.",
    ),
    (
        lambda text, offsets, sentences: _first_tokens(offsets, sentences[1:], lambda a, b, start, end: a >= start),
        "takes the first token that starts inside the sentence, which misses the name's token: it begins with the "
        "space before the name, one character before the span. Take the first token that overlaps the span "
        "(a < end and b > start).",
    ),
    (
        lambda text, offsets, sentences: [p - 1 for p in _first_tokens(offsets, sentences[1:])],
        "is one position early: count BOS (position 0), so the token before the text's token i sits at position i.",
    ),
    (
        lambda text, offsets, sentences: _first_tokens(offsets, sentences),
        "includes position 0 (BOS), which predicts the opening sentence: start from the second sentence, after the "
        "story has begun (sentences[1:]).",
    ),
    (
        lambda text, offsets, sentences: _first_tokens(offsets, sentences[1:-1]),
        "leaves out the last sentence: take every sentence after the first, sentences[1:].",
    ),
    (
        lambda text, offsets, sentences: [s["span"][0] for s in sentences[1:]],
        "returns the sentences' first characters (their span starts): return token positions, the index of the "
        "first token that overlaps each sentence.",
    ),
]


def _free_cases(model) -> list[tuple[str, list[tuple[int, int]], list[dict]]]:
    """(text, offsets, sentences) of 10 fresh stories, and first a copy of the first in which one sentence
    follows a line break instead of a space."""
    docs = storyworld.sample_docs(seed=LESSON_05_CHECKS, n=10, family="narrative")
    first = docs[0]
    cut = first.annotations["sentences"][2]["span"][0] - 1
    texts = [first.text[:cut] + "\n" + first.text[cut + 1 :]] + [d.text for d in docs]
    cases = []
    for text, doc in zip(texts, [first] + docs):
        enc = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        cases.append((text, [tuple(o) for o in enc["offset_mapping"]], doc.annotations["sentences"]))
    return cases


def check_feeling_free_positions(fn: Callable, model) -> None:
    """fn(text, offsets, sentences) -> [position, ...]: the positions (BOS counted) that predict each
    sentence's first token, for every sentence after the opening.

    In the first story one sentence follows a line break instead of a space, so that its first
    token starts at the sentence's first letter: there a test for tokens inside the span finds the
    right token, and elsewhere it does not.
    """
    name = _name(fn, "feeling_free_positions")
    cases, outs = _free_cases(model), []
    for text, offsets, sentences in cases:
        out = call(fn, text, offsets, sentences, name=name)
        try:
            outs.append([int(p) for p in out])
        except (TypeError, ValueError):
            raise CheckFailed(f"`{name}` should return a list of positions (ints).") from None
    wants = [_feeling_free_positions(*case) for case in cases]
    if outs == wants:
        passed(name, f"the positions before each sentence of {len(cases) - 1} fresh stories")
        return
    for mistake, message in _FREE_MISTAKES:
        if all(mistake(*case) == got for case, got in zip(cases, outs)):
            raise CheckFailed(f"`{name}` {message}")
    (text, _, _), got, want = next((c, g, w) for c, g, w in zip(cases, outs, wants) if g != w)
    raise CheckFailed(f"`{name}` returns {got} for {text[:70]!r}…; expected {want}: for every sentence after "
                      "the first, the position just before its first token.")  # fmt: skip


def check_kl_divergence(fn: Callable) -> None:
    """fn(clean_logits [..., vocab], steered_logits [..., vocab]) -> [...]: KL(P_clean || P_steered)."""
    name = _name(fn, "kl_divergence")
    g = torch.Generator().manual_seed(55)
    clean = torch.randn(3, 5, 50, generator=g) * 2
    steered = clean + torch.randn(3, 5, 50, generator=g)
    out = call(fn, clean, steered, name=name)
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        raise CheckFailed(f"`{name}` returns one number: sum over the vocabulary only (the last dimension), so that "
                          "each position keeps its own divergence, [batch, position] (F.kl_div: reduction='none', "
                          "then .sum(-1)).")  # fmt: skip
    out = expect_tensor(out, (3, 5), ["batch", "position"], name)
    want = ref.kl_divergence(clean, steered)
    p, q = clean.softmax(-1), steered.softmax(-1)
    log_p, log_q = clean.log_softmax(-1), steered.log_softmax(-1)
    hints = [
        (ref.kl_divergence(steered, clean), "that is KL(P_steered ‖ P_clean); the lesson measures how far the steered "
         "prediction moved from the clean one: KL(P_clean ‖ P_steered) = Σ p_clean (log p_clean − log p_steered). "
         "(F.kl_div(input, target) takes the log-probabilities of the *second* distribution as its input.)"),
        ((p * (clean - steered)).sum(-1), "you subtracted raw logits; subtract log-probabilities (log_softmax), "
         "since logits carry an arbitrary constant per position."),
        ((p * (p - q)).sum(-1), "you subtracted probabilities; KL compares log-probabilities: Σ p (log p − log q)."),
        ((p * (log_p - log_q)).mean(-1), "you averaged over the vocabulary: KL sums over it, Σ p (log p − log q)."),
        ((log_p - log_q).sum(-1), "each term must be weighted by p_clean: Σ p_clean (log p_clean − log p_steered)."),
        ((p * (log_p - q)).sum(-1), "F.kl_div's first argument must be log-probabilities (log_softmax of the steered "
         "logits), not probabilities."),
    ]  # fmt: skip
    expect_close(out, want, name, "divergences", atol=1e-4, hints=hints)
    passed(name)


class _Stop(Exception):
    """Raised by a hook to end a run, carrying the activation it was given."""


def _final_stream(model, tokens: torch.Tensor) -> torch.Tensor:
    """The stream after the last layer, the hooks on the model acting, as the lesson's ``final_stream`` takes it."""

    def stop(act, hook):
        raise _Stop(act)

    try:
        with model.hooks(fwd_hooks=[(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", stop)]):
            model(tokens)
    except _Stop as e:
        return e.args[0]
    raise RuntimeError("the run did not reach the last layer's hook")


def _hooks_on(model) -> dict[str, int]:
    return {name: len(point.fwd_hooks) for name, point in model.hook_dict.items() if point.fwd_hooks}


def _remove_new_hooks(model, before: dict[str, int]) -> bool:
    """Take off the forward hooks put on since ``before``; whether there were any."""
    found = False
    for name, point in model.hook_dict.items():
        keep = before.get(name, 0)
        for handle in point.fwd_hooks[keep:]:
            handle.hook.remove()
            found = True
        del point.fwd_hooks[keep:]
    return found


def _left_on(model, tokens, stages, directions, strengths, score, *, start=1, stop=None, hook_names=None,
             scale=True, outside=False, accumulate=False) -> torch.Tensor:  # fmt: skip
    """The sweep, and with the keywords the learner's known mistakes: ``start=0`` adds at BOS too,
    ``stop=-1`` leaves the last position out, ``hook_names`` hooks other points than the stages',
    ``scale=False`` leaves the strength out, ``outside`` takes the stream after the hook came off,
    ``accumulate`` keeps every hook on."""
    names = hook_names or [stage_names(model.cfg.n_layers)[s] for s in stages]
    out = torch.zeros(len(stages), len(strengths))
    kept = []  # every hook so far, for the sweep that keeps them on
    for i, name in enumerate(names):
        for j, c in enumerate(strengths):
            v = (c if scale else 1) * directions[i]

            def hook(act, hook, v=v):
                act = act.clone()
                act[:, start:stop] += v[:, None].to(act.dtype)
                return act

            kept.append((name, hook))
            with model.hooks(fwd_hooks=kept if accumulate else [(name, hook)]):
                stream = None if outside else _final_stream(model, tokens)
            out[i, j] = score(_final_stream(model, tokens) if outside else stream)
    return out


def check_left_on_sweep(fn: Callable, model) -> None:
    """fn(model, tokens [doc, n], stages, directions [stage, doc, d], strengths, score) -> [stage, strength]:
    score(the stream after the last layer) with strength × each document's vector added after BOS at the stage.

    It runs on four fresh prompts with random directions, one per prompt, of the stream's norm at each
    stage; the stages come in an order of their own (the last but one, then 0 and 1), so that a loop over
    the list's indices is told apart from one over the stages. The score reads every position: the
    next-token loss where there is a next token, plus the entropy of the last position's prediction, so a
    sweep that leaves the last position unsteered scores differently.
    """
    name = _name(fn, "left_on_sweep")
    tokens = _check_tokens(model, 4)
    n_layers = model.cfg.n_layers
    stages = [n_layers - 1, 0, 1]
    strengths = [0.5, 1.0]
    names = stage_names(n_layers)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda h: h in names, logits_to_keep=1)
    g = torch.Generator().manual_seed(LESSON_05_CHECKS + 5)
    units = torch.randn(len(stages), len(tokens), model.cfg.d_model, generator=g)
    units = units / units.norm(dim=-1, keepdim=True)
    norms = torch.tensor([cache[names[s]][:, 1:].norm(dim=-1).mean().item() for s in stages])
    directions = (units * norms[:, None, None]).to(tokens.device)  # [stage, doc, d_model]
    d_model, d_vocab = model.cfg.d_model, model.cfg.d_vocab

    def score(stream) -> float:
        if not isinstance(stream, torch.Tensor) or stream.ndim != 3 or stream.shape[-1] != d_model:
            shape = tuple(stream.shape) if isinstance(stream, torch.Tensor) else type(stream).__name__
            if isinstance(stream, torch.Tensor) and stream.shape[-1] == d_vocab:
                raise CheckFailed(f"`{name}` gave the score logits, {shape}; give it the stream after the last "
                                  "layer, final_stream(model, tokens), [doc, position, d_model].")  # fmt: skip
            raise CheckFailed(
                f"`{name}` gave the score {shape}; give it the stream after the last layer, "
                f"final_stream(model, tokens), [doc, position, d_model] = {(*tokens.shape, d_model)}."
            )
        logp = model.unembed(model.ln_final(stream.to(tokens.device))).log_softmax(-1)
        loss = -logp[:, :-1].gather(-1, tokens[:, 1:, None]).mean()
        return (loss - (logp[:, -1].exp() * logp[:, -1]).sum(-1).mean()).item()  # + the last position's entropy

    before = _hooks_on(model)
    try:
        out = call(fn, model, tokens, stages, directions, strengths, score, name=name)
    finally:
        left = _remove_new_hooks(model, before)
    if left:
        raise CheckFailed(f"`{name}` leaves its hooks on the model, so each setting's vectors stay on for the "
                          "settings after it and the model stays steered; put each hook on for its own run alone, "
                          "inside `with model.hooks(fwd_hooks=[...]):`.")  # fmt: skip
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (len(strengths), len(stages)):
        raise CheckFailed(
            f"`{name}` returns [strength, stage] = {tuple(out.shape)}; return one row per stage and "
            f"one column per strength, [stage, strength] = {(len(stages), len(strengths))}."
        )
    out = expect_tensor(out, (len(stages), len(strengths)), ["stage", "strength"], name)
    with torch.no_grad():
        want = _left_on(model, tokens, stages, directions, strengths, score)
        hints = [
            (_left_on(model, tokens, stages, directions, strengths, score, accumulate=True), "each setting's hook "
             "stays on for the settings after it, so their vectors add up; put each hook on for its own run alone, "
             "inside `with model.hooks(fwd_hooks=[...]):`."),
            (_left_on(model, tokens, stages, directions, strengths, score, outside=True), "every setting gives the "
             "score without a vector: the stream was taken after the `with model.hooks(...)` block ended, when the "
             "hook was off; take final_stream(model, tokens) inside the block."),
            (_left_on(model, tokens, stages, directions, strengths, score, start=0), "the vector went in at BOS as "
             "well (position 0), which every later position reads; start at position 1, add_vector(..., 1)."),
            (_left_on(model, tokens, stages, directions, strengths, score, stop=-1), "the last position was left "
             "unsteered (a stop of -1 leaves it out); add the vector at every position after BOS, "
             "add_vector(..., 1) with no stop."),
            (_left_on(model, tokens, stages, directions, strengths, score, scale=False), "every strength gives "
             "the same score, the vector's at strength 1; scale the stage's vectors by the strength, "
             "c * directions[i]."),
            (_left_on(model, tokens, stages, directions, strengths, score,
                      hook_names=[names[i] for i in range(len(stages))]),
             "the sweep went over the stages 0, 1, 2, … (the positions in the list) instead of the stages in it; "
             "loop with for i, stage in enumerate(stages) and hook HOOKS[stage]."),
            (_left_on(model, tokens, stages, directions, strengths, score,
                      hook_names=[f"blocks.{s}.hook_resid_post" for s in stages]),
             "the vectors went in one stage late (stage s is the stream after layer s − 1); hook HOOKS[stage], "
             "which is blocks.0.hook_resid_pre for stage 0 and blocks.{s-1}.hook_resid_post after."),
        ]  # fmt: skip
    expect_close(out, want, name, "scores", atol=1e-4, rtol=1e-4, hints=hints)
    passed(name, f"{len(stages)} stages × {len(strengths)} strengths on fresh prompts, each setting's hook on for "
           "its own run")  # fmt: skip


# --- controls and the circle -------------------------------------------------------------------------


def check_random_like(fn: Callable) -> None:
    """fn(vector [d], seed) -> [d]: a random direction with the vector's norm, seeded.

    A direction is uniform when its entries are independent Gaussians: the check pools the
    entries of eight draws and rejects a fourth moment far from a Gaussian's (uniform entries,
    from torch.rand − 0.5, or random signs fill a cube, whose corners are over-represented;
    heavy-tailed entries, such as Laplace ones, lean towards the axes).
    """
    name = _name(fn, "random_like")
    g = torch.Generator().manual_seed(56)
    d = 256
    vector = torch.randn(d, generator=g) * 0.7 + 0.3
    outs = []
    for seed in range(8):
        out = expect_tensor(call_own_generator(fn, vector, seed, name=name), (d,), ["d_model"], name)
        if abs(out.norm().item() - vector.norm().item()) > 1e-3 * vector.norm().item():
            hint = (
                " (it has norm 1: scale the random direction to the vector's norm)"
                if abs(out.norm() - 1) < 1e-3
                else ""
            )
            raise CheckFailed(f"`{name}` returns norm {out.norm():.3f}; the vector's is {vector.norm():.3f}{hint}.")
        if (out > 0).all() or (out < 0).all():
            raise CheckFailed(
                f"`{name}`'s entries all have one sign: torch.rand draws from [0, 1), which points into one corner "
                "of the space, not in a uniformly random direction. Use torch.randn."
            )
        if torch.allclose(out.abs(), vector.abs(), atol=1e-5):
            raise CheckFailed(f"`{name}` flips the signs of the vector's own entries: every entry keeps its size, so "
                              "the result stays tied to the vector (it is one of the 2^d corners of the box the vector "
                              "spans) and is no random direction. Draw fresh Gaussian entries, torch.randn, and "
                              "rescale them.")  # fmt: skip
        if torch.allclose(out.abs().sort().values, vector.abs().sort().values, atol=1e-5):
            raise CheckFailed(f"`{name}` shuffles the vector's own entries: that keeps their distribution (here "
                              "their mean, so the result still leans along the all-ones direction) and is no random "
                              "direction. Draw fresh Gaussian entries, torch.randn, and rescale them.")  # fmt: skip
        cos = torch.nn.functional.cosine_similarity(out, vector, dim=0).item()
        if abs(cos) > 0.3:
            raise CheckFailed(f"`{name}`'s direction has cosine {cos:.2f} with the vector; a random direction in {d} "
                              "dimensions is nearly orthogonal to it (|cos| about 0.06): draw it afresh (torch.randn), "
                              "not from the vector itself.")  # fmt: skip
        if not torch.equal(out, call_own_generator(fn, vector, seed, name=name)):
            raise CheckFailed(f"`{name}` gives a different direction for the same seed: use a seeded generator.")
        outs.append(out)
    if torch.allclose(outs[0], outs[1]):
        raise CheckFailed(f"`{name}` gives the same direction for seeds 0 and 1.")
    entries = torch.stack(outs) / vector.norm() * math.sqrt(d)  # about unit variance
    excess_kurtosis = (entries.pow(4).mean() / entries.pow(2).mean().pow(2) - 3).item()
    # A Gaussian's excess kurtosis is 0: over these 2,048 entries it spread -0.25 to 0.30 (sd 0.11) across 200
    # seeds, so ±0.6 is over 5 sd away. A uniform's is -1.2, random signs' -2, a Laplace's +3.
    if excess_kurtosis > 0.6:
        raise CheckFailed(f"`{name}`'s entries are heavy-tailed (excess kurtosis {excess_kurtosis:.1f}; a Gaussian's "
                          "is 0): a few large entries dominate, so the direction leans towards the axes and is not "
                          "uniform. Draw the entries with torch.randn: independent Gaussians point in a uniformly "
                          "random direction.")  # fmt: skip
    if excess_kurtosis < -0.6:
        raise CheckFailed(f"`{name}`'s entries are spread evenly over an interval (or are ±1), not Gaussian: such "
                          "vectors fill a cube, whose corners are over-represented among their directions. Draw "
                          "the entries with torch.randn: independent Gaussians point in a uniformly random "
                          "direction.")  # fmt: skip
    passed(name, "the vector's norm, a uniformly random direction that depends only on the seed")


def check_circle_basis(fn: Callable) -> None:
    """fn(directions [12, d], angles [12]) -> (u [d], v [d]): the circle's plane, orthonormal."""
    name = _name(fn, "circle_basis")
    g = torch.Generator().manual_seed(57)
    d = 16
    axes = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    angles = ref.ANGLES
    # an ellipse tilted in the plane of axes 0 and 1, off-centre, with noise
    directions = (3 * torch.cos(angles)[:, None] * axes[0] + 1.5 * torch.sin(angles + 0.4)[:, None] * axes[1]
                  + 0.2 * torch.randn(12, d, generator=g))  # fmt: skip
    out = call(fn, directions, angles, name=name)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise CheckFailed(f"`{name}` should return a pair (u, v) of [d_model] vectors.")
    u = expect_tensor(out[0], (d,), ["d_model"], name + " (u)").detach().float().cpu()
    v = expect_tensor(out[1], (d,), ["d_model"], name + " (v)").detach().float().cpu()
    ru, rv = ref.circle_basis(directions, angles)
    cu = (torch.cos(angles)[:, None] * directions).sum(0)
    sv = (torch.sin(angles)[:, None] * directions).sum(0)

    def unit(w: torch.Tensor) -> torch.Tensor:
        return w / w.norm()

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return torch.allclose(a, b, atol=1e-4)

    su = unit(sv)  # the basis built the other way round: u from the sines, v from the cosines
    if (close(u, rv) and close(v, ru)) or (close(u, su) and close(v, unit(cu - (cu @ su) * su))):
        raise CheckFailed(f"`{name}`: u and v are swapped; u goes with cos θ (valence), v with sin θ (arousal).")
    if abs(u.norm() - 1) > 1e-4 or abs(v.norm() - 1) > 1e-4:
        raise CheckFailed(f"`{name}` returns vectors of norm {u.norm():.3f} and {v.norm():.3f}; normalise both.")
    if abs(u @ v) > 1e-4:
        if close(v, unit(sv)):
            raise CheckFailed(f"`{name}`: v is not orthogonal to u (u·v = {u @ v:.3f}). Remove v's part along u before "
                              "normalising it: v ← v − (v·u) u (Gram–Schmidt).")  # fmt: skip
        if close(v, unit(sv - (sv @ cu) * cu)):
            raise CheckFailed(f"`{name}`: v is not orthogonal to u (u·v = {u @ v:.3f}): you removed v's part along u "
                              "with u before normalising it. v − (v·u) u needs u of norm 1: normalise u "
                              "first.")  # fmt: skip
        if close(v, unit(sv + (sv @ ru) * ru)):
            raise CheckFailed(f"`{name}`: v is not orthogonal to u (u·v = {u @ v:.3f}): you added v's part along u. "
                              "Subtract it: v ← v − (v·u) u.")  # fmt: skip
        raise CheckFailed(f"`{name}`: u·v = {u @ v:.3f}; the two must be orthogonal.")
    if close(v, unit(sv)) and close(u, unit(cu - (cu @ unit(sv)) * unit(sv))):
        raise CheckFailed(f"`{name}` makes u orthogonal to v: keep u along Σ cos θₖ dₖ and remove from v its part "
                          "along u.")  # fmt: skip
    expect_close(u, ru, name + " (u)", "u", atol=1e-4, hints=[(-ru, "u points the wrong way: along Σ cos θₖ dₖ.")])
    expect_close(v, rv, name + " (v)", "v", atol=1e-4, hints=[(-rv, "v points the wrong way: along Σ sin θₖ dₖ.")])
    passed(name, "u along Σ cos θ d, v along Σ sin θ d made orthogonal to it, both of norm 1")


def check_next_word_probs(fn: Callable, model) -> None:
    """fn(model, tokens [batch, n], word_ids [k]) -> [batch, k]: P(next token = word) after the last position."""
    name = _name(fn, "next_word_probs")
    tokens = _check_tokens(model, 5)
    # The 12 emotion words after "felt" take almost all the probability; 12 other words do not.
    emotions = [model.tokenizer(" " + e, add_special_tokens=False)["input_ids"][0] for e in storyworld.EMOTIONS]
    others = torch.randperm(model.cfg.d_vocab, generator=torch.Generator().manual_seed(58))[:12].tolist()
    for words in (torch.tensor(emotions, device=tokens.device), torch.tensor(others, device=tokens.device)):
        _check_word_probs(fn, model, tokens, words, name)
    passed(name)


def _check_word_probs(fn: Callable, model, tokens: torch.Tensor, words: torch.Tensor, name: str) -> None:
    out = expect_tensor(call(fn, model, tokens, words, name=name), (len(tokens), len(words)), ["batch", "word"], name)
    with torch.no_grad():
        logits = model(tokens)[:, -1].float().cpu()
    words = words.cpu()  # the reference's logits are on the CPU
    want = logits.softmax(-1)[:, words]
    hints = [
        (logits[:, words].softmax(-1), "you took a softmax over the 12 words alone, which makes them sum to 1; take "
         "it over the whole vocabulary, then pick the 12 columns."),
        (logits.log_softmax(-1)[:, words], "those are log-probabilities: return probabilities."),
        (logits[:, words], "those are logits: apply a softmax over the vocabulary first."),
    ]  # fmt: skip
    with torch.no_grad():
        all_logits = model(tokens).float().cpu()
    hints += [
        (all_logits[:, 0].softmax(-1)[:, words], "that is the prediction after BOS (position 0); take the last "
         "position, logits[:, -1]."),
        (all_logits[:, -2].softmax(-1)[:, words], "that is the prediction one position before the last: take the "
         "last position, logits[:, -1], which predicts the token after the prompt."),
        (logits.sigmoid()[:, words], "you applied a sigmoid to each logit: the probabilities of the next token come "
         "from a softmax over the whole vocabulary."),
        (logits.softmax(0)[:, words], "you took the softmax over the batch (dim 0): take it over the vocabulary, "
         "softmax(dim=-1)."),
    ]  # fmt: skip
    expect_close(out, want, name, "probabilities", atol=1e-5, rtol=1e-3, hints=hints)
