"""Every lesson-05 check accepts a correct solution and rejects the stub and each plausible mistake,
naming the mistake.

The correct solutions here are written another way than the notebook's (loops, one-hot sums,
explicit formulas, another random draw), so a check that merely compared a function with itself
could not pass them all. The wrong answers are written as a learner would write them, as small
changes to a correct solution; each is rejected with the message that names it. The model checks
run on both zoo models with MLPs.
"""

import functools
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.checks import CheckFailed
from utils.checks import lesson05_steering as c

F = torch.nn.functional

# --- steering_vector ----------------------------------------------------------------------------


def steering_vector(x, y, target):
    onehot = F.one_hot(y).float()  # [n, class]
    means = (onehot.T @ x) / onehot.sum(0)[:, None]
    keep = [k for k in range(len(means)) if k != target]
    return means[target] - means[keep].sum(0) / len(keep)


def _means(x, y):
    return torch.stack([x[y == k].mean(0) for k in range(int(y.max()) + 1)])


STEERING_MISTAKES = {
    "target's mean itself": lambda x, y, t: x[y == t].mean(0),
    "mean of all the other rows": lambda x, y, t: x[y == t].mean(0) - x[y != t].mean(0),
    "target's own included": lambda x, y, t: _means(x, y)[t] - _means(x, y).mean(0),
    "mean of every row": lambda x, y, t: x[y == t].mean(0) - x.mean(0),
    "sign is flipped": lambda x, y, t: -steering_vector(x, y, t),
    "normalised the vector": lambda x, y, t: F.normalize(steering_vector(x, y, t), dim=0),
}


# --- add_vector ---------------------------------------------------------------------------------


def add_vector(vector, start, stop=None):
    def hook(act, hook):
        out = act.clone()
        end = act.shape[1] if stop is None else stop
        for p in range(start, end):
            out[:, p] = out[:, p] + vector
        return out

    return hook


def add_vector_in_place(vector, start, stop=None):
    def hook(act, hook):
        act[:, start:stop] += vector if vector.ndim == 1 else vector[:, None]

    return hook


def _adder(where=lambda act, start, stop: (slice(None), slice(start, stop)), per_row=True, sign=1):
    def add_vector(vector, start, stop=None):
        def hook(act, hook):
            v = vector[:, None] if per_row and vector.ndim == 2 else vector
            act = act.clone()
            act[where(act, start, stop)] += sign * v
            return act

        return hook

    return add_vector


def _range_loop(vector, start, stop=None):
    def hook(act, hook):
        v = vector if vector.ndim == 1 else vector[:, None][:, 0]
        for p in range(start, stop):
            act[:, p] += v
        return act

    return hook


ADD_MISTAKES = {
    "added at every position": lambda vector, start, stop=None: (
        lambda act, hook: act + (vector if vector.ndim == 1 else vector[:, None])
    ),
    "alone": _adder(where=lambda act, start, stop: (slice(None), start)),
    "added to batch rows": _adder(where=lambda act, start, stop: slice(start, stop)),
    "stops before position": _adder(where=lambda act, start, stop: (slice(None), slice(start, stop and stop + 1))),
    "the vector was subtracted": _adder(sign=-1),
    "vector[:, None]": _adder(per_row=False),
    "`stop` may be None": _range_loop,
    "a stop of None was read as -1": _adder(where=lambda act, start, stop: (slice(None), slice(start, stop or -1))),
    "should return a hook function": lambda vector, start, stop=None: None,
}


# --- greedy_continue ----------------------------------------------------------------------------


def greedy_continue(model, tokens, n_new):
    out = tokens.clone()
    for _ in range(n_new):
        logits = model(out)
        out = torch.cat([out, logits[:, -1:].argmax(-1)], dim=1)
    return out


def greedy_continue_with_generate_without_cache(model, tokens, n_new):
    return model.generate(tokens, max_new_tokens=n_new, do_sample=False, use_past_kv_cache=False, verbose=False)


def _continue(context=lambda x, n: x, read=-1, sample=False, new_only=False, penalty=None):
    """A learner's ``greedy_continue`` with one part written as given."""

    def greedy_continue(model, tokens, n_new):
        x, n = tokens, tokens.shape[1]
        for _ in range(n_new):
            logits = model(context(x, n))[:, read]
            if penalty:  # a repetition penalty, as Hugging Face's generate has one
                seen = logits.gather(-1, x)
                logits = logits.scatter(-1, x, torch.where(seen > 0, seen / penalty, seen * penalty))
            if sample:
                nxt = torch.multinomial(logits.softmax(-1), 1)
            else:
                nxt = logits.argmax(-1, keepdim=True)
            x = torch.cat([x, nxt], 1)
        return x[:, n:] if new_only else x

    return greedy_continue


@functools.cache
def _loaded(path):
    from utils import load_model

    return load_model(Path(path).name, device="cpu")


def _another_copy(model, tokens, n_new):
    """Continues with another copy of the model, loaded afresh: the hooks are on the one it was given."""
    return greedy_continue(_loaded(model.cfg.model_name), tokens, n_new)


def _kv_cache(model, tokens, n_new):
    return model.generate(tokens, max_new_tokens=n_new, do_sample=False, verbose=False)


GREEDY_MISTAKES = {
    "takes the prediction after the first position (BOS)": _continue(read=0),
    "feeds the model only the last token": _continue(context=lambda x, n: x[:, -1:]),
    "a window": _continue(context=lambda x, n: x[:, -n:]),
    "the prompt alone": _continue(context=lambda x, n: x[:, :n]),
    "it samples": _continue(sample=True),
    "returns only the new tokens": _continue(new_only=True),
    "should return the token tensor": lambda model, tokens, n_new: greedy_continue(model, tokens, n_new).tolist(),
    "should return the prompt followed by the new tokens": lambda model, tokens, n_new: greedy_continue(
        model, tokens, n_new
    ).flip(1),
    "ignores a hook put on the model around it": _another_copy,
    "you used a key-value cache": _kv_cache,
    # a context that drops BOS changes the first prediction; a window of 16 tokens or a penalty on repeated
    # tokens, a later one
    "first new token is not the model's top prediction": _continue(context=lambda x, n: x[:, 1:]),
    "agrees with greedy decoding up to position": _continue(penalty=2.0),
    "then differs: each step must run the model on everything so far": _continue(context=lambda x, n: x[:, -16:]),
}


def test_each_wrong_continuation_differs_from_greedy_decoding_and_from_every_other(model):
    tokens = c._check_tokens(model)
    want = c._greedy(model, tokens, c._GREEDY_NEW)
    outs = [c._greedy(model, tokens, c._GREEDY_NEW, step) for step, _ in c._GREEDY_MISTAKES]
    for k, out in enumerate(outs):
        assert not torch.equal(out, want), k
        assert not any(torch.equal(out, other) for other in outs[:k]), k


def test_the_cache_test_has_a_hook_that_changes_the_continuation(model):
    tokens = c._check_tokens(model)
    assert len(c._greedy_references(model, tokens, c._GREEDY_NEW)) == 3  # the bare model and two hooks


def test_the_greedy_check_leaves_the_global_generator_alone(model, capsys):
    state = torch.get_rng_state()
    with pytest.raises(CheckFailed, match="it samples"):
        c.check_greedy_continue(GREEDY_MISTAKES["it samples"], model)
    c.check_greedy_continue(greedy_continue, model)
    assert "✓" in capsys.readouterr().out and torch.equal(state, torch.get_rng_state())


# --- decoded_angle ------------------------------------------------------------------------------


def _plain_softmax(loglik, angles):
    """The shortest correct answer: a row of -inf gives NaN through the softmax by itself."""
    p = loglik.softmax(-1)
    return torch.atan2(p @ angles.sin(), p @ angles.cos())


def decoded_angle(loglik, angles):
    out = []
    for row in loglik:
        if not torch.isfinite(row).any():
            out.append(math.nan)
            continue
        w = torch.exp(row - row.max())
        w = w / w.sum()
        out.append(math.atan2(float((w * angles.sin()).sum()), float((w * angles.cos()).sum())))
    return torch.tensor(out)


def decoded_angle_in_0_to_2pi(loglik, angles):
    return _plain_softmax(loglik, angles) % (2 * math.pi)


def _weights(w):
    return lambda loglik, angles: torch.atan2(w(loglik) @ angles.sin(), w(loglik) @ angles.cos())


def _no_nan(loglik, angles):
    p = torch.where(torch.isfinite(loglik), loglik, torch.full((), -1e9)).softmax(-1)
    return torch.atan2(p @ angles.sin(), p @ angles.cos())


ANGLE_MISTAKES = {
    "single likeliest emotion": lambda loglik, angles: angles[loglik.argmax(-1)],
    "plain numbers": lambda loglik, angles: loglik.softmax(-1) @ angles,
    "weights the angles by the log-likelihoods": _weights(lambda loglik: loglik),
    "(or log-probabilities)": _weights(lambda loglik: loglik.log_softmax(-1)),
    "softmax over the continuations (dim 0)": _weights(lambda loglik: loglik.softmax(0)),
    "swaps the arguments of atan2": lambda loglik, angles: torch.atan2(
        loglik.softmax(-1) @ angles.cos(), loglik.softmax(-1) @ angles.sin()
    ),
    "returns degrees": lambda loglik, angles: torch.rad2deg(_plain_softmax(loglik, angles)),
    "replaces -inf by 0": _weights(lambda loglik: torch.where(torch.isfinite(loglik), loglik, 0.0).softmax(-1)),
    "only three emotions fit": _weights(lambda loglik: torch.where(torch.isfinite(loglik), loglik, -1.0).softmax(-1)),
    "return NaN there": _no_nan,
    "rad for a row where the posterior's circular mean is": lambda loglik, angles: _plain_softmax(loglik, angles) + 0.1,
    "angles are floating-point numbers": lambda loglik, angles: loglik.argmax(-1),
}


# --- next_word_probs, feeling_free_positions, kl_divergence -------------------------------------


def next_word_probs(model, tokens, word_ids):
    logp = model(tokens)[:, -1].log_softmax(-1)
    return torch.stack([logp[:, w].exp() for w in word_ids.tolist()], dim=1)


WORD_MISTAKES = {
    "12 words alone": lambda model, tokens, words: model(tokens)[:, -1, words].softmax(-1),
    "log-probabilities": lambda model, tokens, words: model(tokens)[:, -1].log_softmax(-1)[:, words],
    "those are logits": lambda model, tokens, words: model(tokens)[:, -1, words],
    "after BOS": lambda model, tokens, words: model(tokens)[:, 0].softmax(-1)[:, words],
    "one position before the last": lambda model, tokens, words: model(tokens)[:, -2].softmax(-1)[:, words],
    "sigmoid": lambda model, tokens, words: model(tokens)[:, -1].sigmoid()[:, words],
    "softmax over the batch (dim 0)": lambda model, tokens, words: model(tokens)[:, -1].softmax(0)[:, words],
}


def feeling_free_positions(text, offsets, sentences):
    starts = [s["span"][0] for s in sentences[1:]]
    # the name's token begins with the space before the name
    return [next(i for i, (a, b) in enumerate(offsets) if b > start) for start in starts]


def feeling_free_positions_containing_the_first_letter(text, offsets, sentences):
    """The token that holds the sentence's first letter is its first token, whether or not a space leads it."""
    return [next(i for i, (a, b) in enumerate(offsets) if a <= s["span"][0] < b) for s in sentences[1:]]


def _last_tokens(text, offsets, sentences):
    return [max(i for i, (a, b) in enumerate(offsets) if a < s["span"][1]) for s in sentences[1:]]


def _shifted(by):
    return lambda text, offsets, sentences: [p + by for p in feeling_free_positions(text, offsets, sentences)]


def _starting_inside(text, offsets, sentences):
    return [next(i for i, (a, b) in enumerate(offsets) if a >= s["span"][0]) for s in sentences[1:]]


FREE_MISTAKES = {
    "*predict* them": _shifted(1),
    "first token that starts inside the sentence": _starting_inside,
    "one position early": _shifted(-1),
    "position 0 (BOS)": lambda text, offsets, sentences: [0] + feeling_free_positions(text, offsets, sentences),
    "leaves out the last sentence": lambda text, offsets, sentences: feeling_free_positions(text, offsets, sentences)[
        :-1
    ],
    "sentences' first characters": lambda text, offsets, sentences: [s["span"][0] for s in sentences[1:]],
    "the position just before its first token": _last_tokens,
    "should return a list of positions": lambda text, offsets, sentences: None,
}


def kl_divergence(clean_logits, steered_logits):
    p = torch.softmax(clean_logits, -1)
    return (p * (torch.log(p) - torch.log_softmax(steered_logits, -1))).sum(-1)


def kl_divergence_with_kl_div(clean_logits, steered_logits):
    return F.kl_div(
        steered_logits.log_softmax(-1), clean_logits.log_softmax(-1), reduction="none", log_target=True
    ).sum(-1)


def _log_probs(clean, steered):
    return clean.softmax(-1), clean.log_softmax(-1), steered.softmax(-1), steered.log_softmax(-1)


KL_MISTAKES = {
    "KL(P_steered ‖ P_clean)": lambda clean, steered: kl_divergence(steered, clean),
    "raw logits": lambda clean, steered: (clean.softmax(-1) * (clean - steered)).sum(-1),
    "subtracted probabilities": lambda clean, steered: (
        clean.softmax(-1) * (clean.softmax(-1) - steered.softmax(-1))
    ).sum(-1),
    "averaged over the vocabulary": lambda clean, steered: (
        clean.softmax(-1) * (clean.log_softmax(-1) - steered.log_softmax(-1))
    ).mean(-1),
    "weighted by p_clean": lambda clean, steered: (clean.log_softmax(-1) - steered.log_softmax(-1)).sum(-1),
    "must be log-probabilities": lambda clean, steered: F.kl_div(
        steered.softmax(-1), clean.softmax(-1), reduction="none"
    ).sum(-1),
    "returns one number": lambda clean, steered: F.kl_div(
        steered.log_softmax(-1), clean.softmax(-1), reduction="batchmean"
    ),
    "gives the wrong divergences": lambda clean, steered: kl_divergence(clean, steered) * 2,
}


# --- left_on_sweep ------------------------------------------------------------------------------

final_stream = c._final_stream


def _hook_names(model):
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]


def _adds(v, start=1, stop=None):
    def hook(act, hook):
        act = act.clone()
        act[:, start:stop] += v[:, None]
        return act

    return hook


def left_on_sweep(model, tokens, stages, directions, strengths, score):
    rows = []
    for stage, unit in zip(stages, directions):
        row = []
        for c_ in strengths:
            with model.hooks(fwd_hooks=[(_hook_names(model)[stage], _adds(c_ * unit))]):
                stream = final_stream(model, tokens)
            row.append(score(stream))
        rows.append(row)
    return torch.tensor(rows)


def left_on_sweep_batched(model, tokens, stages, directions, strengths, score):
    """Every strength of a stage in one run: the documents repeated once per strength."""
    out = torch.zeros(len(stages), len(strengths))
    k, n = len(strengths), len(tokens)
    for i, stage in enumerate(stages):
        vectors = torch.cat([c_ * directions[i] for c_ in strengths])  # [strength × doc, d_model]
        with model.hooks(fwd_hooks=[(_hook_names(model)[stage], _adds(vectors))]):
            streams = final_stream(model, tokens.repeat(k, 1))
        for j in range(k):
            out[i, j] = score(streams[j * n : (j + 1) * n])
    return out


def left_on_sweep_with_add_hook(model, tokens, stages, directions, strengths, score):
    out = torch.zeros(len(stages), len(strengths))
    for i, stage in enumerate(stages):
        for j, c_ in enumerate(strengths):
            model.add_hook(_hook_names(model)[stage], _adds(c_ * directions[i]))
            out[i, j] = score(final_stream(model, tokens))
            model.reset_hooks()
    return out


def _sweep(hook_name=lambda model, i, stage: _hook_names(model)[stage], start=1, stop=None, scale=True, outside=False):
    def left_on_sweep(model, tokens, stages, directions, strengths, score):
        out = torch.zeros(len(stages), len(strengths))
        for i, stage in enumerate(stages):
            for j, c_ in enumerate(strengths):
                v = (c_ if scale else 1) * directions[i]
                with model.hooks(fwd_hooks=[(hook_name(model, i, stage), _adds(v, start, stop))]):
                    stream = None if outside else final_stream(model, tokens)
                out[i, j] = score(final_stream(model, tokens) if outside else stream)
        return out

    return left_on_sweep


def _hooks_kept(reset_at_the_end):
    def left_on_sweep(model, tokens, stages, directions, strengths, score):
        out = torch.zeros(len(stages), len(strengths))
        for i, stage in enumerate(stages):
            for j, c_ in enumerate(strengths):
                model.add_hook(_hook_names(model)[stage], _adds(c_ * directions[i]))
                out[i, j] = score(final_stream(model, tokens))
        if reset_at_the_end:
            model.reset_hooks()
        return out

    return left_on_sweep


def _transposed(model, tokens, stages, directions, strengths, score):
    return left_on_sweep(model, tokens, stages, directions, strengths, score).T


def _logits(model, tokens, stages, directions, strengths, score):
    out = torch.zeros(len(stages), len(strengths))
    for i, stage in enumerate(stages):
        for j, c_ in enumerate(strengths):
            with model.hooks(fwd_hooks=[(_hook_names(model)[stage], _adds(c_ * directions[i]))]):
                out[i, j] = score(model(tokens))
    return out


SWEEP_MISTAKES = {
    "leaves its hooks on the model": _hooks_kept(reset_at_the_end=False),
    "stays on for the settings after it": _hooks_kept(reset_at_the_end=True),
    "after the `with model.hooks(...)` block ended": _sweep(outside=True),
    "at BOS as well": _sweep(start=0),
    "the last position was left unsteered": _sweep(stop=-1),
    "every strength gives the same score": _sweep(scale=False),
    "the positions in the list": _sweep(hook_name=lambda model, i, stage: _hook_names(model)[i]),
    "one stage late": _sweep(hook_name=lambda model, i, stage: f"blocks.{stage}.hook_resid_post"),
    "returns [strength, stage]": _transposed,
    "gave the score logits": _logits,
}


# --- random_like, circle_basis ------------------------------------------------------------------


def random_like(vector, seed):
    g = torch.Generator().manual_seed(1000 + seed)
    r = torch.randn(vector.shape, generator=g)
    return r * vector.norm() / r.norm()


def random_like_with_numpy(vector, seed):
    r = torch.from_numpy(np.random.default_rng(seed).standard_normal(vector.shape[0])).float()
    return r / r.norm() * vector.norm()


def _random(draw, generator="own"):
    def random_like(vector, seed):
        if generator == "torch":
            torch.manual_seed(seed)
            r = draw(vector, None)
        elif generator == "numpy":
            np.random.seed(seed)
            r = torch.from_numpy(np.random.standard_normal(vector.shape[0])).float()
        elif generator == "fresh":
            g = torch.Generator()
            g.seed()
            r = draw(vector, g)
        elif generator == "fixed":
            r = draw(vector, torch.Generator().manual_seed(0))
        else:
            r = draw(vector, torch.Generator().manual_seed(seed))
        return r * vector.norm() / r.norm()

    return random_like


def _unit(vector, seed):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(vector.shape, generator=g)
    return r / r.norm()


def _perturbed(vector, seed):
    """The vector plus a little noise: random, but not a random direction."""
    g = torch.Generator().manual_seed(seed)
    return vector + 0.3 * vector.norm() * torch.randn(vector.shape, generator=g) / math.sqrt(len(vector))


def _laplace(vector, g):
    """Laplace entries, -sign(u) log(1 - 2|u|) for u uniform in (-0.5, 0.5): heavy tails, excess kurtosis 3."""
    u = torch.rand(vector.shape, generator=g) - 0.5
    return -u.sign() * torch.log1p(-2 * u.abs())


_GAUSS = lambda v, g: torch.randn(v.shape, generator=g)  # noqa: E731

RANDOM_MISTAKES = {
    "has norm 1": _unit,
    "the vector's is": lambda vector, seed: (
        torch.randn(vector.shape, generator=torch.Generator().manual_seed(seed)) * vector.norm()
    ),
    "cosine": _random(lambda v, g: v + 0.3 * v.norm() * torch.randn(v.shape, generator=g) / math.sqrt(len(v))),
    "same direction for seeds 0 and 1": _random(_GAUSS, generator="fixed"),
    "all have one sign": _random(lambda v, g: torch.rand(v.shape, generator=g)),
    "uses (or reseeds) torch's global random generator": _random(_GAUSS, generator="torch"),
    "uses (or reseeds) NumPy's global random generator": _random(_GAUSS, generator="numpy"),
    "different direction for the same seed": _random(_GAUSS, generator="fresh"),
    "shuffles the vector's own entries": _random(lambda v, g: v[torch.randperm(len(v), generator=g)]),
    "flips the signs of the vector's own entries": _random(
        lambda v, g: v * (torch.randint(2, v.shape, generator=g) * 2.0 - 1)
    ),
    "spread evenly over an interval": _random(lambda v, g: torch.rand(v.shape, generator=g) - 0.5),
    "(or are ±1)": _random(lambda v, g: torch.randint(2, v.shape, generator=g) * 2.0 - 1),
    "heavy-tailed": _random(_laplace),
}


def circle_basis(directions, angles):
    u = torch.einsum("k,kd->d", angles.cos(), directions)
    v = torch.einsum("k,kd->d", angles.sin(), directions)
    u = u / u.norm()
    v = v - u * torch.dot(u, v)
    return u, v / v.norm()


def circle_basis_by_qr(directions, angles):
    """QR of [Σ cos θ d, Σ sin θ d] is Gram–Schmidt: its columns, signed to agree with the sums."""
    sums = torch.stack([angles.cos() @ directions, angles.sin() @ directions], 1)
    q, r = torch.linalg.qr(sums)
    q = q * torch.sign(torch.diagonal(r))
    return q[:, 0], q[:, 1]


def _sums(directions, angles):
    return (angles.cos()[:, None] * directions).sum(0), (angles.sin()[:, None] * directions).sum(0)


def _no_gram_schmidt(directions, angles):
    u, v = _sums(directions, angles)
    return u / u.norm(), v / v.norm()


def _from_sines_first(directions, angles):
    cu, sv = _sums(directions, angles)
    u = sv / sv.norm()
    v = cu - (cu @ u) * u
    return u, v / v.norm()


def _unnormalised_u(directions, angles):
    u, v = _sums(directions, angles)
    v = v - (v @ u) * u
    return u / u.norm(), v / v.norm()


def _added(directions, angles):
    u, v = _sums(directions, angles)
    u = u / u.norm()
    v = v + (v @ u) * u
    return u, v / v.norm()


def _u_orthogonalised(directions, angles):
    u, v = _sums(directions, angles)
    v = v / v.norm()
    u = u - (u @ v) * v
    return u / u.norm(), v


def _projection_once(directions, angles):
    u, v = _sums(directions, angles)
    v = v - (v @ u) / u.norm() * u
    return u / u.norm(), v / v.norm()


def _v_not_normalised(directions, angles):
    u, v = _sums(directions, angles)
    u = u / u.norm()
    return u, v - (v @ u) * u


CIRCLE_MISTAKES = {
    "Gram–Schmidt": _no_gram_schmidt,
    "should return a pair (u, v)": lambda d, a: torch.stack(circle_basis(d, a)),
    "u and v are swapped": lambda d, a: circle_basis(d, a)[::-1],
    "swapped; u goes with cos θ": _from_sines_first,
    "normalise u first": _unnormalised_u,
    "you added v's part along u": _added,
    "makes u orthogonal to v": _u_orthogonalised,
    "the two must be orthogonal": _projection_once,
    "normalise both": _v_not_normalised,
    "u points the wrong way": lambda d, a: (-circle_basis(d, a)[0], circle_basis(d, a)[1]),
    "v points the wrong way": lambda d, a: (circle_basis(d, a)[0], -circle_basis(d, a)[1]),
}


# --- every check ---------------------------------------------------------------------------------

CASES = {
    "steering_vector": (c.check_steering_vector, steering_vector, STEERING_MISTAKES),
    "add_vector": (c.check_add_vector, add_vector, ADD_MISTAKES),
    "decoded_angle": (c.check_decoded_angle, decoded_angle, ANGLE_MISTAKES),
    "kl_divergence": (c.check_kl_divergence, kl_divergence, KL_MISTAKES),
    "random_like": (c.check_random_like, random_like, RANDOM_MISTAKES),
    "circle_basis": (c.check_circle_basis, circle_basis, CIRCLE_MISTAKES),
}

MODEL_CASES = {
    "greedy_continue": (c.check_greedy_continue, greedy_continue, GREEDY_MISTAKES),
    "feeling_free_positions": (c.check_feeling_free_positions, feeling_free_positions, FREE_MISTAKES),
    "next_word_probs": (c.check_next_word_probs, next_word_probs, WORD_MISTAKES),
    "left_on_sweep": (c.check_left_on_sweep, left_on_sweep, SWEEP_MISTAKES),
}


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_check_accepts_a_correct_solution_and_rejects_the_stub_and_each_mistake(exercise, prove_check):
    check, solution, wrong = CASES[exercise]
    with torch.no_grad():
        prove_check(check, solution, wrong)


@pytest.mark.parametrize("exercise", sorted(MODEL_CASES))
def test_model_check_accepts_a_correct_solution_and_rejects_the_stub_and_mistakes(exercise, model, prove_check):
    check, solution, wrong = MODEL_CASES[exercise]
    with torch.no_grad():
        prove_check(check, solution, wrong, model)


@pytest.mark.parametrize(
    "check,solution",
    [
        (c.check_add_vector, add_vector_in_place),
        (c.check_decoded_angle, _plain_softmax),
        (c.check_decoded_angle, decoded_angle_in_0_to_2pi),
        (c.check_kl_divergence, kl_divergence_with_kl_div),
        (c.check_random_like, random_like_with_numpy),
        (c.check_circle_basis, circle_basis_by_qr),
    ],
    ids=lambda f: getattr(f, "__name__", ""),
)
def test_checks_accept_correct_solutions_written_another_way(check, solution, capsys):
    with torch.no_grad():
        check(solution)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize(
    "check,solution",
    [
        (c.check_greedy_continue, greedy_continue_with_generate_without_cache),
        (c.check_feeling_free_positions, feeling_free_positions_containing_the_first_letter),
        (c.check_left_on_sweep, left_on_sweep_batched),
        (c.check_left_on_sweep, left_on_sweep_with_add_hook),
    ],
    ids=lambda f: getattr(f, "__name__", ""),
)
def test_model_checks_accept_correct_solutions_written_another_way(check, solution, model, capsys):
    with torch.no_grad():
        check(solution, model)
    assert "✓" in capsys.readouterr().out


def test_each_wrong_way_to_find_the_positions_gives_its_own_answer(model):
    """On the check's stories each wrong answer differs from the reference and from every other."""
    cases = c._free_cases(model)
    outs = [[mistake(*case) for case in cases] for mistake, _ in c._FREE_MISTAKES]
    outs.append([c._feeling_free_positions(*case) for case in cases])
    assert all(a != b for k, a in enumerate(outs) for b in outs[:k])


def test_the_random_check_leaves_every_global_generator_as_it_was():
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    for message in ("torch's global", "NumPy's global"):
        wrong = next(f for m, f in RANDOM_MISTAKES.items() if message in m)
        with pytest.raises(CheckFailed, match="global random generator"):
            c.check_random_like(wrong)
    assert torch.equal(states[0], torch.get_rng_state())
    assert (states[1] == np.random.get_state()[1]).all() and states[2] == random.getstate()


def test_the_sweep_check_takes_off_the_hooks_a_wrong_sweep_leaves_on(model):
    with pytest.raises(CheckFailed, match="leaves its hooks on the model"):
        c.check_left_on_sweep(SWEEP_MISTAKES["leaves its hooks on the model"], model)
    assert not any(point.fwd_hooks for point in model.hook_dict.values())
