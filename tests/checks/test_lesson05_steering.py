"""Every lesson-05 check accepts a correct solution and rejects the stub and each plausible mistake.

The correct solutions here are written another way than the notebook's (loops, one-hot sums,
explicit formulas, another random draw), so a check that merely compared a function with
itself could not pass them all. The model checks run on both zoo models with MLPs.
"""

import math

import pytest
import torch

from utils.checks import lesson05_steering as c

# --- correct solutions, written another way ---------------------------------------------------


def steering_vector(x, y, target):
    onehot = torch.nn.functional.one_hot(y).float()  # [n, class]
    means = (onehot.T @ x) / onehot.sum(0)[:, None]
    keep = [k for k in range(len(means)) if k != target]
    return means[target] - means[keep].sum(0) / len(keep)


def add_vector(vector, start, stop=None):
    def hook(act, hook):
        out = act.clone()
        end = act.shape[1] if stop is None else stop
        for p in range(start, end):
            out[:, p] = out[:, p] + vector
        return out

    return hook


def greedy_continue(model, tokens, n_new):
    out = tokens.clone()
    for _ in range(n_new):
        logits = model(out)
        out = torch.cat([out, logits[:, -1:].argmax(-1)], dim=1)
    return out


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


def feeling_free_positions(text, offsets, sentences):
    starts = [s["span"][0] for s in sentences[1:]]
    # the name's token begins with the space before the name
    return [next(i for i, (a, b) in enumerate(offsets) if b > start) for start in starts]


def kl_divergence(clean_logits, steered_logits):
    p = torch.softmax(clean_logits, -1)
    return (p * (torch.log(p) - torch.log_softmax(steered_logits, -1))).sum(-1)


def random_like(vector, seed):
    g = torch.Generator().manual_seed(1000 + seed)
    r = torch.rand(vector.shape, generator=g) - 0.5
    return r * vector.norm() / r.norm()


def circle_basis(directions, angles):
    u = torch.einsum("k,kd->d", angles.cos(), directions)
    v = torch.einsum("k,kd->d", angles.sin(), directions)
    u = u / u.norm()
    v = v - u * torch.dot(u, v)
    return u, v / v.norm()


def next_word_probs(model, tokens, word_ids):
    logp = model(tokens)[:, -1].log_softmax(-1)
    return torch.stack([logp[:, w].exp() for w in word_ids.tolist()], dim=1)


# --- plausible mistakes ----------------------------------------------------------------------


def _rows_of_others(x, y, target):
    return x[y == target].mean(0) - x[y != target].mean(0)


def _all_class_means(x, y, target):
    means = torch.stack([x[y == k].mean(0) for k in range(int(y.max()) + 1)])
    return means[target] - means.mean(0)


def _everywhere(vector, start, stop=None):
    return lambda act, hook: act + (vector if vector.ndim == 1 else vector[:, None])


def _only_start(vector, start, stop=None):
    def hook(act, hook):
        act[:, start] += vector
        return act

    return hook


def _first_position(model, tokens, n_new):
    x = tokens
    for _ in range(n_new):
        x = torch.cat([x, model(x)[:, 0].argmax(-1, keepdim=True)], 1)
    return x


def _prompt_only(model, tokens, n_new):
    """Runs the model once on the prompt and keeps appending the same prediction."""
    nxt = model(tokens)[:, -1].argmax(-1, keepdim=True)
    return torch.cat([tokens] + [nxt] * n_new, 1)


def _argmax_angle(loglik, angles):
    out = angles[loglik.argmax(-1)].clone()
    out[~torch.isfinite(loglik).any(-1)] = math.nan
    return out


def _plain_mean(loglik, angles):
    fits = torch.isfinite(loglik).any(-1)
    p = torch.where(fits[:, None], loglik, torch.zeros(())).softmax(-1)
    return torch.where(fits, p @ angles, torch.full((len(loglik),), math.nan))


def _no_nan(loglik, angles):
    p = torch.where(torch.isfinite(loglik), loglik, torch.full((), -1e9)).softmax(-1)
    return torch.atan2(p @ angles.sin(), p @ angles.cos())


def _first_tokens(text, offsets, sentences):
    return [p + 1 for p in feeling_free_positions(text, offsets, sentences)]


def _with_opening(text, offsets, sentences):
    return [0] + feeling_free_positions(text, offsets, sentences)


def _reversed_kl(clean_logits, steered_logits):
    return kl_divergence(steered_logits, clean_logits)


def _logit_difference(clean_logits, steered_logits):
    return (clean_logits.softmax(-1) * (clean_logits - steered_logits)).sum(-1)


def _unit(vector, seed):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(vector.shape, generator=g)
    return r / r.norm()


def _perturbed(vector, seed):
    """The vector plus a little noise: random, but not a random direction."""
    g = torch.Generator().manual_seed(seed)
    r = vector + 0.3 * vector.norm() * torch.randn(vector.shape, generator=g) / math.sqrt(len(vector))
    return r * vector.norm() / r.norm()


def _uniform_entries(vector, seed):
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(vector.shape, generator=g)
    return r * vector.norm() / r.norm()


def _global_seed(vector, seed):
    torch.manual_seed(seed)
    r = torch.randn(vector.shape)
    return r * vector.norm() / r.norm()


def _unseeded_same(vector, seed):
    g = torch.Generator().manual_seed(0)
    r = torch.randn(vector.shape, generator=g)
    return r * vector.norm() / r.norm()


def _no_gram_schmidt(directions, angles):
    u = (angles.cos()[:, None] * directions).sum(0)
    v = (angles.sin()[:, None] * directions).sum(0)
    return u / u.norm(), v / v.norm()


def _swapped(directions, angles):
    u, v = circle_basis(directions, angles)
    return v, u


def _renormalised(model, tokens, word_ids):
    return model(tokens)[:, -1, word_ids].softmax(-1)


def _after_bos(model, tokens, word_ids):
    return model(tokens)[:, 0].softmax(-1)[:, word_ids]


CASES = {
    "steering_vector": (
        c.check_steering_vector,
        steering_vector,
        {"mean of all the other rows": _rows_of_others, "target's own included": _all_class_means},
    ),
    "add_vector": (
        c.check_add_vector,
        add_vector,
        {"at every position": _everywhere, "alone": _only_start},
    ),
    "decoded_angle": (
        c.check_decoded_angle,
        decoded_angle,
        {"single likeliest emotion": _argmax_angle, "plain numbers": _plain_mean, "return NaN": _no_nan},
    ),
    "kl_divergence": (
        c.check_kl_divergence,
        kl_divergence,
        {"KL(P_steered ‖ P_clean)": _reversed_kl, "raw logits": _logit_difference},
    ),
    "random_like": (
        c.check_random_like,
        random_like,
        {
            "has norm 1": _unit,
            "cosine": _perturbed,
            "same direction for seeds": _unseeded_same,
            "torch.rand": _uniform_entries,
            "global random generator": _global_seed,
        },
    ),
    "circle_basis": (
        c.check_circle_basis,
        circle_basis,
        {"Gram–Schmidt": _no_gram_schmidt, "swapped": _swapped},
    ),
}

MODEL_CASES = {
    "greedy_continue": (
        c.check_greedy_continue,
        greedy_continue,
        {"last position": _first_position, "then differs": _prompt_only},
    ),
    "feeling_free_positions": (
        c.check_feeling_free_positions,
        feeling_free_positions,
        {"*predict* them": _first_tokens, "position 0 (BOS)": _with_opening},
    ),
    "next_word_probs": (
        c.check_next_word_probs,
        next_word_probs,
        {"12 words alone": _renormalised, "after BOS": _after_bos},
    ),
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


def test_the_hook_check_accepts_a_hook_that_edits_in_place_and_returns_nothing(capsys):
    def in_place(vector, start, stop=None):
        def hook(act, hook):
            act[:, start:stop] += vector if vector.ndim == 1 else vector[:, None]

        return hook

    c.check_add_vector(in_place)
    assert "✓" in capsys.readouterr().out


def test_the_angle_check_accepts_the_plain_softmax_answer(capsys):
    c.check_decoded_angle(_plain_softmax)
    assert "✓" in capsys.readouterr().out
