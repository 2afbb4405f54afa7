"""Every lesson-03 check accepts a correct solution and rejects the stub and a plausible mistake.

The correct solutions here are written another way than the notebook's (string splitting,
loops, the course's batched ``patch_sweep``), so a check that merely compared a function with
itself could not pass them all. The model checks run on two zoo models: one with learned
positions and LayerNorm, one with rotary positions and RMSNorm.
"""

import re

import pytest
import torch

from utils.checks import lesson03_patching as c
from utils.sweeps import patch_sweep

# --- correct solutions ---------------------------------------------------------------


def exchange_names(text, a, b):
    words = re.split(r"(\W+)", text)
    return "".join(b if w == a else a if w == b else w for w in words)


def normalised_logit_diff(ld, clean, corrupted):
    return 1 - (clean - ld) / (clean - corrupted)


def attribution_scores(clean, corrupted, grad):
    return torch.einsum("bphd,bphd->h", clean - corrupted, grad)


def rank_correlation(x, y):
    n = len(x)
    rx = torch.empty(n)
    ry = torch.empty(n)
    rx[x.argsort()] = torch.arange(n, dtype=torch.float)
    ry[y.argsort()] = torch.arange(n, dtype=torch.float)
    return float(1 - 6 * ((rx - ry) ** 2).sum() / (n * (n**2 - 1)))


def ablate_except(z, keep, means):
    out = z.clone()
    for h in range(z.shape[2]):
        if not keep[h]:
            out[:, :, h] = means[:, h]
    return out


def act_patch_by_position(model, corrupted, clean_cache, metric, hook):
    n_pos = corrupted.shape[1]
    return torch.stack(
        [
            patch_sweep(
                model,
                corrupted,
                f"blocks.{l}.hook_{hook}",
                clean_cache[f"blocks.{l}.hook_{hook}"],
                torch.eye(n_pos, dtype=torch.bool),
                metric,
            )
            for l in range(model.cfg.n_layers)
        ]
    )


def act_patch_heads(model, corrupted, clean_cache, metric, kind):
    n_pos, H = corrupted.shape[1], model.cfg.n_heads
    mask = torch.zeros(H, n_pos, H, dtype=torch.bool)
    mask[torch.arange(H), :, torch.arange(H)] = True
    return _head_sweeps(model, corrupted, clean_cache, metric, kind, mask)


def _head_sweeps(model, corrupted, clean_cache, metric, kind, mask):
    """``[layer, patch]``: one sweep of ``mask`` (``[patch, position, head]``) over each layer's ``hook_{kind}``."""
    return torch.stack(
        [
            patch_sweep(
                model,
                corrupted,
                f"blocks.{l}.attn.hook_{kind}",
                clean_cache[f"blocks.{l}.attn.hook_{kind}"],
                mask,
                metric,
            )
            for l in range(model.cfg.n_layers)
        ]
    )


def path_patch(model, corrupted, clean_cache, corrupted_cache, senders, receivers, receiver_input, metric):
    """All senders at once: one copy of the batch per sender."""
    k, batch = len(senders), corrupted.shape[0]
    L = model.cfg.n_layers
    rep = corrupted.repeat(k, 1)

    def freeze(z, hook, layer):
        z = corrupted_cache[f"blocks.{layer}.attn.hook_z"].repeat(k, 1, 1, 1).view(k, batch, *z.shape[1:]).clone()
        for j, (sl, sh) in enumerate(senders):
            if sl == layer:
                z[j, :, :, sh] = clean_cache[f"blocks.{layer}.attn.hook_z"][:, :, sh]
        return z.view(k * batch, *z.shape[2:])

    kept = {}
    layers = sorted({l for l, _ in receivers})
    hooks = [(f"blocks.{l}.attn.hook_z", lambda z, hook, l=l: freeze(z, hook, l)) for l in range(L)]
    hooks += [
        (f"blocks.{l}.attn.hook_{receiver_input}", lambda a, hook, l=l: kept.__setitem__(l, a.clone())) for l in layers
    ]
    model.run_with_hooks(rep, fwd_hooks=hooks)

    def patch(act, hook, layer):
        act = act.clone()
        heads = [h for l, h in receivers if l == layer]
        act[:, :, heads] = kept[layer][:, :, heads]
        return act

    hooks = [(f"blocks.{l}.attn.hook_{receiver_input}", lambda a, hook, l=l: patch(a, hook, l)) for l in layers]
    logits = model.run_with_hooks(rep, fwd_hooks=hooks)
    return torch.stack([torch.as_tensor(metric(lg)) for lg in logits.view(k, batch, *logits.shape[1:])])


# --- plausible mistakes ------------------------------------------------------------------


def _all_positions(model, corrupted, clean_cache, metric, hook):
    """Patches the whole layer in every copy."""
    n_pos = corrupted.shape[1]
    return torch.stack(
        [
            patch_sweep(
                model,
                corrupted,
                f"blocks.{l}.hook_{hook}",
                clean_cache[f"blocks.{l}.hook_{hook}"],
                torch.ones(n_pos, n_pos, dtype=torch.bool),
                metric,
            )
            for l in range(model.cfg.n_layers)
        ]
    )


def _resid_post(model, corrupted, clean_cache, metric, hook):
    if hook != "resid_pre":
        return act_patch_by_position(model, corrupted, clean_cache, metric, hook)
    n_pos = corrupted.shape[1]
    return torch.stack(
        [
            patch_sweep(
                model,
                corrupted,
                f"blocks.{l}.hook_resid_post",
                clean_cache[f"blocks.{l}.hook_resid_post"],
                torch.eye(n_pos, dtype=torch.bool),
                metric,
            )
            for l in range(model.cfg.n_layers)
        ]
    )


def _whole_layer(model, corrupted, clean_cache, metric, kind):
    n_pos, H = corrupted.shape[1], model.cfg.n_heads
    return _head_sweeps(model, corrupted, clean_cache, metric, kind, torch.ones(H, n_pos, H, dtype=torch.bool))


def _clean_inputs(model, corrupted, clean_cache, corrupted_cache, senders, receivers, receiver_input, metric):
    """Skips step 1: the receivers' inputs straight from the clean run."""
    return c._direct_patch(model, corrupted, clean_cache, receivers, receiver_input, metric).expand(len(senders))


def _no_freezing(model, corrupted, clean_cache, corrupted_cache, senders, receivers, receiver_input, metric):
    """Step 1 without freezing the other heads."""
    layers = sorted({l for l, _ in receivers})
    out = []
    for sl, sh in senders:
        kept = {}

        def sender(z, hook, sl=sl, sh=sh):
            z = z.clone()
            z[:, :, sh] = clean_cache[f"blocks.{sl}.attn.hook_z"][:, :, sh]
            return z

        def keep(a, hook, layer, kept=kept):
            kept[layer] = a.clone()

        def patch(act, hook, layer, kept=kept):
            act = act.clone()
            heads = [h for l, h in receivers if l == layer]
            act[:, :, heads] = kept[layer][:, :, heads]
            return act

        hooks = [(f"blocks.{sl}.attn.hook_z", sender)]
        hooks += [(f"blocks.{l}.attn.hook_{receiver_input}", lambda a, hook, l=l: keep(a, hook, l)) for l in layers]
        model.run_with_hooks(corrupted, fwd_hooks=hooks)
        hooks = [(f"blocks.{l}.attn.hook_{receiver_input}", lambda a, hook, l=l: patch(a, hook, l)) for l in layers]
        out.append(torch.as_tensor(metric(model.run_with_hooks(corrupted, fwd_hooks=hooks))))
    return torch.stack(out)


CASES = {
    "exchange_names": (
        c.check_exchange_names,
        exchange_names,
        {
            "in one pass": lambda t, a, b: t.replace(a, b).replace(b, a),
            "whole words only": lambda t, a, b: t.replace(a, "\0").replace(b, a).replace("\0", b),
        },
    ),
    "normalised_logit_diff": (
        c.check_normalised_logit_diff,
        normalised_logit_diff,
        {
            "logit difference itself": lambda ld, clean, corrupted: ld.clone(),
            "divide by (clean − corrupted)": lambda ld, clean, corrupted: ld - corrupted,
            "sign is flipped": lambda ld, clean, corrupted: (corrupted - ld) / (clean - corrupted),
            "0 at the clean run": lambda ld, clean, corrupted: (ld - clean) / (clean - corrupted),
        },
    ),
    "attribution_scores": (
        c.check_attribution_scores,
        attribution_scores,
        {
            "sign is flipped": lambda cl, co, g: attribution_scores(co, cl, g),
            "*change* of the activation": lambda cl, co, g: (cl * g).sum((0, 1, 3)),
            "do not average": lambda cl, co, g: ((cl - co) * g).mean((0, 1, 3)),
        },
    ),
    "rank_correlation": (
        c.check_rank_correlation,
        rank_correlation,
        {
            "Pearson's correlation": lambda x, y: torch.corrcoef(torch.stack([x, y]))[0, 1],
            "not the ranks": lambda x, y: torch.corrcoef(torch.stack([x.argsort().float(), y.argsort().float()]))[0, 1],
        },
    ),
    "ablate_except": (
        c.check_ablate_except,
        ablate_except,
        {
            "swap the two": lambda z, keep, means: ablate_except(z, ~keep, means),
            "not by zero": lambda z, keep, means: ablate_except(z, keep, torch.zeros_like(means)),
            "its own mean": lambda z, keep, means: ablate_except(z, keep, means.mean(0).expand_as(means)),
        },
    ),
}

MODEL_CASES = {
    "act_patch_by_position": (
        c.check_act_patch_by_position,
        act_patch_by_position,
        {"same score at every position": _all_positions, "hook_resid_post": _resid_post},
    ),
    "act_patch_heads": (
        c.check_act_patch_heads,
        act_patch_heads,
        {"every head of a layer the same score": _whole_layer},
    ),
    "path_patch": (
        c.check_path_patch,
        path_patch,
        {"every sender gives the same score": _clean_inputs, "path-patching scores": _no_freezing},
    ),
}


@pytest.fixture(scope="module", params=["storyworld-4l", "storyworld-llama"])
def model(request):
    from utils import load_model

    m = load_model(request.param, device="cpu")
    m.enable_compatibility_mode()
    with torch.no_grad():
        yield m


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_check_accepts_a_correct_solution_and_rejects_the_stub_and_each_mistake(exercise, prove_check):
    check, solution, wrong = CASES[exercise]
    prove_check(check, solution, wrong)


@pytest.mark.parametrize("exercise", sorted(MODEL_CASES))
def test_model_check_accepts_a_correct_solution_and_rejects_the_stub_and_mistakes(exercise, model, prove_check):
    check, solution, wrong = MODEL_CASES[exercise]
    prove_check(check, solution, wrong, model)
