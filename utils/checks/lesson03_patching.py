"""Checks for lesson 03, activation and path patching: ``check_<exercise>(your_function)``.

The sweep checks run the model on a few fresh clean and corrupted prompts and compare with
TransformerLens's own ``patching.get_act_patch_*`` functions, which patch one site per
forward pass; path patching is compared with a slow reference that patches one sender at a
time.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from utils.checks.framework import CheckFailed, as_number, call, expect_close, expect_tensor, passed
from utils.ioi_pairs import exchange_names, patching_pairs
from utils.seeds import LESSON_03_CHECKS


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


# --- corrupted prompts and the metric -------------------------------------------------


def check_exchange_names(fn: Callable) -> None:
    """fn(text, a, b) -> the text with every whole-word a and b exchanged."""
    name = _name(fn, "exchange_names")
    cases = [
        ("When Ann and Bob went to the park, Bob gave the kite to", "Ann", "Bob"),
        ("As Leo and Gail walked to the garden after lunch, Leo threw the coat to", "Gail", "Leo"),
        ("While Al and Alma were at the beach, Alma passed the cup to", "Al", "Alma"),
    ]
    for text, a, b in cases:
        out = call(fn, text, a, b, name=name)
        if not isinstance(out, str):
            raise CheckFailed(f"`{name}` should return the new text, a str, not {type(out).__name__}.")
        want = exchange_names(text, a, b)
        if out == want:
            continue
        if out in (text.replace(a, b).replace(b, a), text.replace(b, a).replace(a, b)):
            raise CheckFailed(
                f"`{name}`: replacing {a} by {b} and then {b} by {a} turns both names into one. "
                "Exchange them in one pass (or through a placeholder)."
            )
        if a in b or b in a:
            raise CheckFailed(
                f"`{name}({text!r}, {a!r}, {b!r})` gives {out!r}; expected {want!r}. Replace whole words only: "
                f"{a!r} is part of {b!r}."
            )
        raise CheckFailed(f"`{name}({text!r}, {a!r}, {b!r})` gives {out!r}; expected {want!r}.")
    passed(name)


def check_normalised_logit_diff(fn: Callable) -> None:
    """fn(logit_diff [...], clean: float, corrupted: float) -> [...]: 0 at corrupted, 1 at clean."""
    name = _name(fn, "normalised_logit_diff")
    g = torch.Generator().manual_seed(31)
    ld = torch.randn(6, generator=g) * 4
    clean, corrupted = 3.5, -2.0
    out = expect_tensor(call(fn, ld, clean, corrupted, name=name), (6,), ["patch"], name)
    ref = (ld - corrupted) / (clean - corrupted)
    hints = [
        (ld, "that is the logit difference itself: rescale it so the corrupted run gives 0 and the clean run 1."),
        (ld - corrupted, "divide by (clean − corrupted), so that the clean run gives 1."),
        (ld / clean, "subtract the corrupted logit difference first, so that the corrupted run gives 0."),
        (-ref, "the sign is flipped: patching in everything from the clean run should give +1."),
        ((ld - clean) / (clean - corrupted), "that is 0 at the clean run: the corrupted run should give 0."),
        ((corrupted - ld) / (clean - corrupted), "the sign is flipped: the clean run should give +1."),
    ]
    expect_close(out, ref, name, "scores", hints=hints)
    ends = call(fn, torch.tensor([corrupted, clean]), clean, corrupted, name=name)
    expect_close(ends, torch.tensor([0.0, 1.0]), name, "scores of the corrupted and clean runs")
    passed(name, "0 for the corrupted run, 1 for the clean run")


# --- activation patching sweeps ---------------------------------------------------------


def _fresh(model, n: int = 4):
    """Clean and corrupted prompts, the clean cache and the normalised metric, on the model's device."""
    device = next(model.parameters()).device
    pairs = patching_pairs(model, n=n, seed=LESSON_03_CHECKS).to(device)
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(pairs.clean)
        corrupted_logits = model(pairs.corrupted)

    def ld(logits):
        final = logits[:, -1]
        return (final.gather(-1, pairs.answers[:, None]) - final.gather(-1, pairs.distractors[:, None])).mean()

    clean, corrupted = ld(clean_logits).item(), ld(corrupted_logits).item()

    def metric(logits):
        return (ld(logits) - corrupted) / (clean - corrupted)

    return pairs, cache, metric


# A reference sweep depends only on the model's weights and the fixed check prompts, so it is
# computed once per model and weights (a second check, e.g. after a fix, reuses it).
_REFERENCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _reference(model, key: str, compute: Callable[..., torch.Tensor], *args) -> torch.Tensor:
    with torch.no_grad():
        weights = float(sum(p.double().sum() for p in model.parameters()))
    cached = _REFERENCES.setdefault(model, {})
    if (key, weights) not in cached:
        cached[(key, weights)] = compute(*args).cpu()
    return cached[(key, weights)]


def check_act_patch_by_position(fn: Callable, model) -> None:
    """fn(model, corrupted, clean_cache, metric, hook) -> [layer, position], against get_act_patch_*."""
    from transformer_lens import patching

    name = _name(fn, "act_patch_by_position")
    pairs, cache, metric = _fresh(model)
    L, n_pos = model.cfg.n_layers, pairs.clean.shape[1]
    references = {
        "resid_pre": patching.get_act_patch_resid_pre,
        "attn_out": patching.get_act_patch_attn_out,
    }
    if not model.cfg.attn_only:
        references["mlp_out"] = patching.get_act_patch_mlp_out
    for hook, tl in references.items():
        with torch.no_grad():
            out = call(
                fn,
                model,
                pairs.corrupted,
                cache,
                metric,
                hook,
                name=name,
                explain={KeyError: f"Read the clean activation from `clean_cache[f'blocks.{{layer}}.hook_{hook}']`."},
            )
            out = expect_tensor(out, (L, n_pos), ["layer", "position"], name)
            ref = _reference(model, hook, tl, model, pairs.corrupted, cache, metric)
        hints = []
        if hook == "resid_pre":
            after_last = torch.zeros(1, n_pos)
            after_last[0, -1] = 1.0  # after the last layer only the final position reaches the logits
            hints.append(
                (
                    torch.cat([ref[1:], after_last]),
                    "that looks like `hook_resid_post`: patch the stream *before* each layer.",
                )
            )
        if torch.allclose(out.float().cpu(), out.float().cpu()[:, :1].expand_as(out), atol=1e-4):
            raise CheckFailed(
                f"`{name}` gives the same score at every position of a layer: patch one position per "
                "copy of the batch (copy j gets the clean activation at position j only)."
            )
        expect_close(out, ref, name, f"scores ({hook})", atol=2e-3, rtol=1e-2, hints=hints)
    passed(name, "matches patching.get_act_patch_" + ", get_act_patch_".join(references))


def check_act_patch_heads(fn: Callable, model) -> None:
    """fn(model, corrupted, clean_cache, metric, kind) -> [layer, head], against get_act_patch_attn_head_*_all_pos."""
    from transformer_lens import patching

    name = _name(fn, "act_patch_heads")
    pairs, cache, metric = _fresh(model)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    references = {
        "z": patching.get_act_patch_attn_head_out_all_pos,
        "q": patching.get_act_patch_attn_head_q_all_pos,
        "k": patching.get_act_patch_attn_head_k_all_pos,
        "v": patching.get_act_patch_attn_head_v_all_pos,
    }
    for kind, tl in references.items():
        with torch.no_grad():
            out = call(fn, model, pairs.corrupted, cache, metric, kind, name=name)
            out = expect_tensor(out, (L, H), ["layer", "head"], name)
            ref = _reference(model, "head_" + kind, tl, model, pairs.corrupted, cache, metric)
        if torch.allclose(out.float().cpu(), out.float().cpu()[:, :1].expand_as(out), atol=1e-4):
            raise CheckFailed(
                f"`{name}` gives every head of a layer the same score: in copy j patch head j only "
                "(the head dimension of `hook_{kind}` is the third: [batch, position, head, d_head])."
            )
        expect_close(out, ref, name, f"scores (hook_{kind})", atol=2e-3, rtol=1e-2)
    passed(name, "matches patching.get_act_patch_attn_head_{out,q,k,v}_all_pos")


# --- path patching --------------------------------------------------------------------------


def _path_patch_one(model, corrupted, clean_cache, corrupted_cache, sender, receivers, receiver_input, metric):
    """The slow reference: one sender, two forward passes."""
    L = model.cfg.n_layers
    sl, sh = sender

    def freeze(z, hook, layer):
        z = corrupted_cache[f"blocks.{layer}.attn.hook_z"].clone()
        if layer == sl:
            z[:, :, sh] = clean_cache[f"blocks.{sl}.attn.hook_z"][:, :, sh]
        return z

    kept = {}

    def keep(act, hook, layer):
        kept[layer] = act.clone()

    layers = sorted({l for l, _ in receivers})
    hooks = [(f"blocks.{l}.attn.hook_z", lambda z, hook, l=l: freeze(z, hook, l)) for l in range(L)]
    hooks += [(f"blocks.{l}.attn.hook_{receiver_input}", lambda a, hook, l=l: keep(a, hook, l)) for l in layers]
    model.run_with_hooks(corrupted, fwd_hooks=hooks)

    def patch(act, hook, layer):
        act = act.clone()
        for l, h in receivers:
            if l == layer:
                act[:, :, h] = kept[layer][:, :, h]
        return act

    hooks = [(f"blocks.{l}.attn.hook_{receiver_input}", lambda a, hook, l=l: patch(a, hook, l)) for l in layers]
    return metric(model.run_with_hooks(corrupted, fwd_hooks=hooks))


def _path_patch_reference(model, corrupted, clean_cache, corrupted_cache, senders, receivers, receiver_input, metric):
    return torch.stack(
        [
            torch.as_tensor(
                _path_patch_one(model, corrupted, clean_cache, corrupted_cache, s, receivers, receiver_input, metric)
            )
            for s in senders
        ]
    ).cpu()


def check_path_patch(fn: Callable, model) -> None:
    """fn(model, corrupted, clean_cache, corrupted_cache, senders, receivers, receiver_input, metric) -> [sender]."""
    name = _name(fn, "path_patch")
    pairs, cache, metric = _fresh(model)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    with torch.no_grad():
        _, corrupted_cache = model.run_with_cache(pairs.corrupted)
    senders = [(0, h) for h in range(H)] + [(1, 0)]
    receivers = [(l, h) for l in range(1, L) for h in range(H)]
    for receiver_input in ("q", "k", "v"):
        with torch.no_grad():
            out = call(
                fn,
                model,
                pairs.corrupted,
                cache,
                corrupted_cache,
                senders,
                receivers,
                receiver_input,
                metric,
                name=name,
            )
            out = expect_tensor(out, (len(senders),), ["sender"], name)
            args = (model, pairs.corrupted, cache, corrupted_cache, senders, receivers, receiver_input, metric)
            ref = _reference(model, "path_" + receiver_input, _path_patch_reference, *args)
        hints = []
        direct = _direct_patch(model, pairs.corrupted, cache, receivers, receiver_input, metric)
        hints.append(
            (
                direct.expand(len(senders)),
                "every sender gives the same score: you patched the receivers' clean inputs, which carry "
                "every path at once. Take them from a corrupted run in which only the sender is clean.",
            )
        )
        expect_close(
            out,
            ref,
            name,
            f"path-patching scores (receivers' hook_{receiver_input})",
            atol=2e-3,
            rtol=1e-2,
            hints=hints,
        )
    passed(name, "matches a reference that patches one sender at a time")


def _direct_patch(model, corrupted, clean_cache, receivers, receiver_input, metric):
    layers = sorted({l for l, _ in receivers})

    def patch(act, hook, layer):
        act = act.clone()
        for l, h in receivers:
            if l == layer:
                act[:, :, h] = clean_cache[f"blocks.{l}.attn.hook_{receiver_input}"][:, :, h]
        return act

    hooks = [(f"blocks.{l}.attn.hook_{receiver_input}", lambda a, hook, l=l: patch(a, hook, l)) for l in layers]
    with torch.no_grad():
        return torch.as_tensor(metric(model.run_with_hooks(corrupted, fwd_hooks=hooks))).cpu().reshape(1)


# --- attribution patching, rank correlation, ablation ---------------------------------------


def check_attribution_scores(fn: Callable) -> None:
    """fn(clean [batch, pos, head, d_head], corrupted, grad) -> [head]: the linear estimate of patching each head."""
    name = _name(fn, "attribution_scores")
    g = torch.Generator().manual_seed(33)
    clean, corrupted, grad = (torch.randn(3, 4, 5, 6, generator=g) for _ in range(3))
    out = expect_tensor(call(fn, clean, corrupted, grad, name=name), (5,), ["head"], name)
    ref = ((clean - corrupted) * grad).sum((0, 1, 3))
    hints = [
        (-ref, "the sign is flipped: the change is clean minus corrupted (we patch clean into corrupted)."),
        ((clean * grad).sum((0, 1, 3)), "multiply the gradient by the *change* of the activation, clean − corrupted."),
        (((clean - corrupted) * grad).mean((0, 1, 3)), "sum over prompts, positions and d_head, do not average."),
    ]
    expect_close(out, ref, name, "attribution scores", hints=hints)
    passed(name)


def check_rank_correlation(fn: Callable) -> None:
    """fn(x [n], y [n]) -> float: Spearman's rank correlation (no ties)."""
    name = _name(fn, "rank_correlation")
    g = torch.Generator().manual_seed(34)
    x = torch.randn(40, generator=g)
    y = x.pow(3) * 5 + 0.3 * torch.randn(40, generator=g)
    y[0] = 40.0  # one outlier: Pearson's correlation and Spearman's differ
    rx, ry = x.argsort().argsort().float(), y.argsort().argsort().float()
    ref = torch.corrcoef(torch.stack([rx, ry]))[0, 1].item()
    pearson = torch.corrcoef(torch.stack([x, y]))[0, 1].item()
    out = as_number(call(fn, x, y, name=name))
    if out != out:
        raise CheckFailed(f"`{name}` should return a number (a float or a one-element tensor).")
    if abs(out - pearson) < 1e-4:
        raise CheckFailed(f"`{name}` gives Pearson's correlation of the values; correlate their ranks.")
    if abs(out - torch.corrcoef(torch.stack([x.argsort().float(), y.argsort().float()]))[0, 1].item()) < 1e-4:
        raise CheckFailed(
            f"`{name}`: `argsort` gives the order, not the ranks; the rank of each value is `argsort().argsort()`."
        )
    if abs(out - ref) > 1e-4:
        raise CheckFailed(f"`{name}` gives {out:.4f}; Spearman's rank correlation is {ref:.4f}.")
    same = as_number(call(fn, x, x.exp(), name=name))
    if abs(same - 1) > 1e-4:
        raise CheckFailed(f"`{name}` of a variable and an increasing function of it should be 1, not {same:.4f}.")
    passed(name)


def check_ablate_except(fn: Callable) -> None:
    """fn(z [batch, pos, head, d_head], keep [head] bool, means [pos, head, d_head]) -> the same shape as z."""
    name = _name(fn, "ablate_except")
    g = torch.Generator().manual_seed(35)
    z = torch.randn(3, 4, 5, 2, generator=g)
    means = torch.randn(4, 5, 2, generator=g)
    keep = torch.tensor([True, False, False, True, False])
    out = expect_tensor(call(fn, z, keep, means, name=name), z.shape, ["batch", "position", "head", "d_head"], name)
    k = keep[None, None, :, None]
    ref = torch.where(k, z, means.expand_as(z))
    hints = [
        (torch.where(k, means.expand_as(z), z), "that ablates the kept heads and keeps the others: swap the two."),
        (torch.where(k, z, torch.zeros_like(z)), "replace the other heads by their mean activation, not by zero."),
        (
            torch.where(k, z, means.mean(0).expand_as(z)),
            "each position has its own mean: `means` is [position, head, d_head].",
        ),
    ]
    expect_close(out, ref, name, "activations", hints=hints)
    passed(name)
