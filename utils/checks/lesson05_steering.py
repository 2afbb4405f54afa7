"""Checks for lesson 05, steering: ``check_<exercise>(your_function)``.

Each check runs the learner's function on fresh inputs (small synthetic problems whose answer is
known, fresh Storyworld stories, or the model itself on fresh prompts) and compares with a
reference written in ``utils.metrics.steering`` and ``utils.steering``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from utils import storyworld
from utils.checks.framework import CheckFailed, as_number, call, expect_close, expect_tensor, passed
from utils.metrics import steering as ref
from utils.seeds import LESSON_05_CHECKS
from utils.steering import feeling_free_positions as _feeling_free_positions
from utils.steering import story_prompts


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
    for vector, start, stop, what in cases:
        hook = call(fn, vector, start, stop, name=name)
        if not callable(hook):
            raise CheckFailed(f"`{name}` should return a hook function (act, hook) -> act, not {type(hook).__name__}.")
        given = act.clone()
        out = call(hook, given, None, name="your hook", in_place_ok=True)
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
        expect_close(out, want, "your hook", f"activation ({what})", atol=1e-5, hints=hints)
    passed(name, "adds one vector or one per row, on the positions asked, nowhere else")


def check_greedy_continue(fn: Callable, model) -> None:
    """fn(model, tokens [batch, n], n_new) -> [batch, n + n_new]: greedy continuation."""
    name = _name(fn, "greedy_continue")
    prompts = [p for p in story_prompts(40, LESSON_05_CHECKS, named=False)]
    ids = [
        [model.tokenizer.bos_token_id] + model.tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in prompts
    ]
    n = max(set(map(len, ids)), key=[len(r) for r in ids].count)
    device = next(model.parameters()).device
    tokens = torch.tensor([r for r in ids if len(r) == n][:4], device=device)
    want = _greedy(model, tokens, 6)
    out = call(fn, model, tokens, 6, name=name)
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"`{name}` should return the token tensor [batch, n + n_new], not {type(out).__name__}.")
    out = expect_tensor(out, want.shape, ["batch", "position"], name, floating=False)
    if not torch.equal(out[:, :n].cpu(), tokens.cpu()):
        raise CheckFailed(f"`{name}` should return the prompt followed by the new tokens; the first {n} differ.")
    if not torch.equal(out.cpu(), want.cpu()):
        first = (out.cpu() != want.cpu()).any(0).nonzero()[0].item()
        if first == n:
            raise CheckFailed(f"`{name}`'s first new token is not the model's top prediction after the prompt: take "
                              "the argmax of the logits at the last position, logits[:, -1].")  # fmt: skip
        raise CheckFailed(
            f"`{name}` agrees with greedy decoding up to position {first}, then differs: each step must run the "
            "model on everything so far (the prompt and the tokens already chosen) and append the argmax at the "
            "last position."
        )
    # With a hook on, every step must see it (the learner's loop runs inside model.hooks).
    u = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(53)).to(device) * 60

    def push(act, hook):
        act[:, -1] += u.to(act.dtype)
        return act

    with model.hooks(fwd_hooks=[(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", push)]):
        want = _greedy(model, tokens, 4)
        out = call(fn, model, tokens, 4, name=name)
    if not torch.equal(torch.as_tensor(out).cpu(), want.cpu()):
        raise CheckFailed(f"`{name}` ignores a hook put on the model around it: call the model itself at every step "
                          "(model(x)), not a copy or model.generate.")  # fmt: skip
    passed(name, "matches greedy decoding, with and without a hook on the model")


def _greedy(model, tokens: torch.Tensor, n_new: int) -> torch.Tensor:
    x = tokens
    with torch.no_grad():
        for _ in range(n_new):
            x = torch.cat([x, model(x)[:, -1].argmax(-1, keepdim=True)], 1)
    return x


# --- reading what a continuation expresses ------------------------------------------------------


def check_decoded_angle(fn: Callable) -> None:
    """fn(loglik [n, 12], angles [12]) -> [n]: the posterior-weighted circular mean angle, NaN where nothing fits."""
    name = _name(fn, "decoded_angle")
    g = torch.Generator().manual_seed(54)
    angles = ref.ANGLES
    loglik = torch.randn(40, 12, generator=g) * 3
    loglik[5] = -math.inf  # a sentence no emotion can write
    loglik[6, 3:] = -math.inf  # only three emotions can
    loglik[7] = torch.tensor([0.0] + [-50.0] * 10 + [0.0])  # split between 330° and 0°: the answer is near 345°
    out = expect_tensor(call(fn, loglik, angles, name=name), (40,), ["continuation"], name, floating=False)
    if not out.is_floating_point():
        raise CheckFailed(f"`{name}` returned dtype {out.dtype}; angles are floating-point numbers (radians).")
    out = out.detach().float().cpu()
    want = ref.decoded_angle(loglik, angles)
    if not out[5].isnan():
        raise CheckFailed(f"`{name}` gives {out[5].item():.3f} for a row where every log-likelihood is -inf: return "
                          "NaN there (no emotion fits, so there is no angle to read).")  # fmt: skip
    keep = ~want.isnan()
    got, good = out[keep], want[keep]
    same = torch.cos(got - good) > 1 - 1e-4  # angles: compare on the circle
    if same.all():
        passed(name, "the circular mean of the 12 angles under the posterior, NaN where nothing fits")
        return
    argmax = angles[loglik[keep].argmax(-1)]
    p = loglik[keep].softmax(-1)
    if (torch.cos(got - argmax) > 1 - 1e-4).all():
        raise CheckFailed(f"`{name}` gives the angle of the single likeliest emotion; average all 12 angles on the "
                          "circle, weighted by the posterior softmax(loglik).")  # fmt: skip
    if torch.allclose(got, p @ angles, atol=1e-4):
        raise CheckFailed(f"`{name}` averages the angles as plain numbers, so 330° and 0° average to 165°: average "
                          "the unit vectors (cos, sin) and take atan2 of the result.")  # fmt: skip
    w = torch.where(torch.isfinite(loglik[keep]), loglik[keep], torch.zeros(()))
    if (torch.cos(got - torch.atan2(w @ angles.sin(), w @ angles.cos())) > 1 - 1e-4).all():
        raise CheckFailed(f"`{name}` weights the angles by the raw log-likelihoods; turn them into probabilities "
                          "first (softmax over the 12 emotions).")  # fmt: skip
    bad = (~same).nonzero()[0].item()
    raise CheckFailed(f"`{name}` gives {got[bad].item():.3f} rad for a row where the posterior's circular mean is "
                      f"{good[bad].item():.3f} rad.")  # fmt: skip


# --- side effects ---------------------------------------------------------------------------------


def check_feeling_free_positions(fn: Callable, model) -> None:
    """fn(text, offsets, sentences) -> [position, ...]: the positions (BOS counted) that predict each
    sentence's first token, for every sentence after the opening."""
    name = _name(fn, "feeling_free_positions")
    docs = storyworld.sample_docs(seed=LESSON_05_CHECKS, n=10, family="narrative")
    for doc in docs:
        enc = model.tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        sentences = doc.annotations["sentences"]
        out = call(fn, doc.text, offsets, sentences, name=name)
        try:
            got = [int(p) for p in out]
        except (TypeError, ValueError):
            raise CheckFailed(f"`{name}` should return a list of positions (ints).") from None
        want = _feeling_free_positions(doc.text, offsets, sentences)
        if got == want:
            continue
        if got == [p + 1 for p in want]:
            raise CheckFailed(f"`{name}` returns the positions of the sentences' first tokens; return the positions "
                              "that *predict* them, one earlier (with BOS counted, that is the first token's index "
                              "among the text's tokens).")  # fmt: skip
        if got == [p - 1 for p in want]:
            raise CheckFailed(f"`{name}` is one position early: count BOS (position 0), so the token before the "
                              "text's token i sits at position i.")  # fmt: skip
        if len(got) == len(want) + 1 and set(want) <= set(got):
            raise CheckFailed(f"`{name}` includes position 0 (BOS), which predicts the opening sentence: start from "
                              "the second sentence, after the story has begun.")  # fmt: skip
        raise CheckFailed(f"`{name}` returns {got} for {doc.text[:70]!r}…; expected {want}: for every sentence after "
                          "the first, the position just before its first token.")  # fmt: skip
    passed(name, f"the positions before each sentence of {len(docs)} fresh stories")


def check_kl_divergence(fn: Callable) -> None:
    """fn(clean_logits [..., vocab], steered_logits [..., vocab]) -> [...]: KL(P_clean || P_steered)."""
    name = _name(fn, "kl_divergence")
    g = torch.Generator().manual_seed(55)
    clean = torch.randn(3, 5, 50, generator=g) * 2
    steered = clean + torch.randn(3, 5, 50, generator=g)
    out = expect_tensor(call(fn, clean, steered, name=name), (3, 5), ["batch", "position"], name)
    want = ref.kl_divergence(clean, steered)
    p, q = clean.softmax(-1), steered.softmax(-1)
    hints = [
        (ref.kl_divergence(steered, clean), "that is KL(P_steered ‖ P_clean); the lesson measures how far the steered "
         "prediction moved from the clean one: KL(P_clean ‖ P_steered) = Σ p_clean (log p_clean − log p_steered)."),
        ((clean.softmax(-1) * (clean - steered)).sum(-1), "you subtracted raw logits; subtract log-probabilities "
         "(log_softmax), since logits carry an arbitrary constant per position."),
        ((p * (p - q)).sum(-1), "you subtracted probabilities; KL compares log-probabilities: Σ p (log p − log q)."),
    ]  # fmt: skip
    expect_close(out, want, name, "divergences", atol=1e-4, hints=hints)
    if as_number(call(fn, clean[0, 0], clean[0, 0], name=name).abs().max()) > 1e-5:
        raise CheckFailed(f"`{name}` should be 0 where the two distributions are the same.")
    passed(name)


# --- controls and the circle -------------------------------------------------------------------------


def check_random_like(fn: Callable) -> None:
    """fn(vector [d], seed) -> [d]: a random direction with the vector's norm, seeded."""
    name = _name(fn, "random_like")
    g = torch.Generator().manual_seed(56)
    vector = torch.randn(256, generator=g) * 0.7 + 0.3
    outs = []
    for seed in (0, 1):
        state = torch.get_rng_state()
        out = expect_tensor(call(fn, vector, seed, name=name), (256,), ["d_model"], name)
        if not torch.equal(state, torch.get_rng_state()):
            torch.set_rng_state(state)
            raise CheckFailed(
                f"`{name}` uses (or reseeds) torch's global random generator: draw from your own "
                "torch.Generator().manual_seed(seed), so the direction depends on the seed alone and other code's "
                "randomness is left alone."
            )
        if abs(out.norm().item() - vector.norm().item()) > 1e-3 * vector.norm().item():
            hint = (
                " (it has norm 1: scale the random direction to the vector's norm)"
                if abs(out.norm() - 1) < 1e-3
                else ""
            )
            raise CheckFailed(f"`{name}` returns norm {out.norm():.3f}; the vector's is {vector.norm():.3f}{hint}.")
        cos = torch.nn.functional.cosine_similarity(out, vector, dim=0).item()
        if (out > 0).all() or (out < 0).all():
            raise CheckFailed(
                f"`{name}`'s entries all have one sign: torch.rand draws from [0, 1), which points into one corner "
                "of the space, not in a uniformly random direction. Use torch.randn."
            )
        if abs(cos) > 0.3:
            raise CheckFailed(f"`{name}`'s direction has cosine {cos:.2f} with the vector; a random direction in 256 "
                              "dimensions is nearly orthogonal to it (|cos| about 0.06): draw it afresh (torch.randn), "
                              "not from the vector itself.")  # fmt: skip
        if not torch.equal(out, call(fn, vector, seed, name=name)):
            raise CheckFailed(f"`{name}` gives a different direction for the same seed: use a seeded generator.")
        outs.append(out)
    if torch.allclose(outs[0], outs[1]):
        raise CheckFailed(f"`{name}` gives the same direction for seeds 0 and 1.")
    passed(name, "the vector's norm, a direction that depends only on the seed")


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
    u = expect_tensor(out[0], (d,), ["d_model"], name + " (u)")
    v = expect_tensor(out[1], (d,), ["d_model"], name + " (v)")
    ru, rv = ref.circle_basis(directions, angles)
    sv = (torch.sin(angles)[:, None] * directions).sum(0)
    if torch.allclose(u, rv, atol=1e-4) or torch.allclose(v, ru, atol=1e-4):
        raise CheckFailed(f"`{name}`: u and v are swapped; u goes with cos θ (valence), v with sin θ (arousal).")
    if abs(u.norm() - 1) > 1e-4 or abs(v.norm() - 1) > 1e-4:
        raise CheckFailed(f"`{name}` returns vectors of norm {u.norm():.3f} and {v.norm():.3f}; normalise both.")
    if abs(u @ v) > 1e-4:
        if torch.allclose(v, sv / sv.norm(), atol=1e-4):
            raise CheckFailed(f"`{name}`: v is not orthogonal to u (u·v = {u @ v:.3f}). Remove v's part along u before "
                              "normalising it: v ← v − (v·u) u (Gram–Schmidt).")  # fmt: skip
        raise CheckFailed(f"`{name}`: u·v = {u @ v:.3f}; the two must be orthogonal.")
    expect_close(u, ru, name + " (u)", "u", atol=1e-4, hints=[(-ru, "u points the wrong way: along Σ cos θₖ dₖ.")])
    expect_close(v, rv, name + " (v)", "v", atol=1e-4, hints=[(-rv, "v points the wrong way: along Σ sin θₖ dₖ.")])
    passed(name, "u along Σ cos θ d, v along Σ sin θ d made orthogonal to it, both of norm 1")


def check_next_word_probs(fn: Callable, model) -> None:
    """fn(model, tokens [batch, n], word_ids [k]) -> [batch, k]: P(next token = word) after the last position."""
    name = _name(fn, "next_word_probs")
    prompts = story_prompts(40, LESSON_05_CHECKS, named=False)
    ids = [
        [model.tokenizer.bos_token_id] + model.tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in prompts
    ]
    n = max(set(map(len, ids)), key=[len(r) for r in ids].count)
    device = next(model.parameters()).device
    tokens = torch.tensor([r for r in ids if len(r) == n][:5], device=device)
    # The 12 emotion words after "felt" take almost all the probability; 12 other words do not.
    emotions = [model.tokenizer(" " + e, add_special_tokens=False)["input_ids"][0] for e in storyworld.EMOTIONS]
    others = torch.randperm(model.cfg.d_vocab, generator=torch.Generator().manual_seed(58))[:12].tolist()
    for words in (torch.tensor(emotions), torch.tensor(others)):
        _check_word_probs(fn, model, tokens, words, name)
    passed(name)


def _check_word_probs(fn: Callable, model, tokens: torch.Tensor, words: torch.Tensor, name: str) -> None:
    out = expect_tensor(call(fn, model, tokens, words, name=name), (len(tokens), len(words)), ["batch", "word"], name)
    with torch.no_grad():
        logits = model(tokens)[:, -1].float().cpu()
    want = logits.softmax(-1)[:, words]
    hints = [
        (logits[:, words].softmax(-1), "you took a softmax over the 12 words alone, which makes them sum to 1; take "
         "it over the whole vocabulary, then pick the 12 columns."),
        (logits.log_softmax(-1)[:, words], "those are log-probabilities: return probabilities."),
        (logits[:, words], "those are logits: apply a softmax over the vocabulary first."),
    ]  # fmt: skip
    with torch.no_grad():
        first = model(tokens)[:, 0].float().cpu().softmax(-1)[:, words]
    hints.append((first, "that is the prediction after BOS (position 0); take the last position, logits[:, -1]."))
    expect_close(out, want, name, "probabilities", atol=1e-5, rtol=1e-3, hints=hints)
