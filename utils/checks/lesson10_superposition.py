"""Checks for lesson 10, superposition: ``check_<exercise>(your_function)``.

Each check runs the learner's function on fresh random weights and inputs whose answer the reference
in :mod:`utils.metrics.superposition` computes, and names the common wrong answers when one of them
matches instead. The inputs are built so that the mistakes give different numbers: biases that are
not zero, importances that differ per feature, feature directions of different lengths (a zero one and
two short ones among them, 0.2 and 0.005 long), and a dictionary whose directions have negative as well as
positive cosines with the truth, with one true feature that every found direction points away from.
The SAEs that the scoring check measures are built by hand, not trained, and labelled for what they are.

The samplers are checked by their statistics on a large draw (share of zeros per instance, the values of the
active features, which masks are shared) and by drawing only from the generator they are given; the two
training loops by replaying the course's loop on the same generator, with spies that count the calls of the
forward pass (or loss) and the sampler they are given. Each check that passes remembers the function
(``passed(..., fn=fn)``), so that the lesson's later cells run on it (``yours_or_reference``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from collections.abc import Callable

import torch

from utils.checks.framework import (
    CheckFailed,
    as_number,
    call,
    call_own_generator,
    expect_close,
    expect_number,
    expect_tensor,
    passed,
    real_number,
)
from utils.metrics import superposition as sp
from utils.seeds import LESSON_10_CHECKS


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


# --- the toy model's forward pass and loss ------------------------------------------------------


def check_toy_forward_and_loss(fn: Callable) -> None:
    """``fn(W, b, x, importance)`` -> ``(x_hat [instance, batch, n], loss [instance])``."""
    name = _name(fn, "toy_forward_and_loss")
    g = torch.Generator().manual_seed(LESSON_10_CHECKS)
    instances, m, n, batch = 3, 2, 5, 64
    W = torch.randn(instances, m, n, generator=g)
    b = torch.randn(instances, n, generator=g) * 0.5
    x = sp.sample_features(torch.tensor([0.0, 0.5, 0.8]), n, batch, g)
    importance = torch.rand(instances, n, generator=g) + 0.1
    out = call(fn, W, b, x, importance, name=name)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise CheckFailed(f"`{name}` should return two things, (x_hat, loss); it returned {type(out).__name__}.")
    x_hat = expect_tensor(out[0], (instances, batch, n), ("instance", "batch", "feature"), f"{name}'s x_hat")
    loss = expect_tensor(out[1], (instances,), ("instance",), f"{name}'s loss")
    h = torch.einsum("imn,ibn->ibm", W, x)
    pre = torch.einsum("imn,ibm->ibn", W, h)
    ref_hat = torch.relu(pre + b[:, None, :])
    expect_close(
        x_hat,
        ref_hat,
        f"{name}'s x_hat",
        hints=[
            (pre + b[:, None, :], "the ReLU on the output is missing: x̂ = ReLU(Wᵀ W x + b)."),
            (torch.relu(pre), "the bias b is missing: x̂ = ReLU(Wᵀ W x + b)."),
            (torch.relu(pre) + b[:, None, :], "the bias is added after the ReLU; it goes inside: ReLU(Wᵀ W x + b)."),
            (
                torch.relu(torch.relu(h) @ W + b[:, None, :]),
                "there is a ReLU on the hidden layer: this model's hidden layer is linear, h = W x.",
            ),
        ],
    )
    err = (ref_hat - x).pow(2)
    ref_loss = (err * importance[:, None, :]).sum(-1).mean(-1)
    expect_close(
        loss,
        ref_loss,
        f"{name}'s loss",
        hints=[
            *_weighted_loss_hints(err, importance),
            (
                ((ref_hat - x).abs() * importance[:, None, :]).sum(-1).mean(-1),
                "the error is not squared.",
            ),
            (
                (err * importance[:, None, :] ** 2).sum(-1).mean(-1),
                "the importances are squared; weigh by the importance itself.",
            ),
            (
                (err * importance[:, None, :]).sum(-1).mean(-1).sum().expand(instances),
                "the loss is summed over the instances: keep one loss per instance (training sums them afterwards).",
            ),
        ],
    )
    _check_gradients(fn, name, {"W": W, "b": b}, x, importance, sp.toy_forward_and_loss)
    passed(name, "x̂ = ReLU(Wᵀ W x + b), loss = Σ_features importance × (x − x̂)², averaged over the batch", fn=fn)


def _check_gradients(
    fn: Callable,
    name: str,
    weights: dict[str, torch.Tensor],
    x,
    importance,
    reference: Callable,
    output: str = "x_hat",
) -> None:
    """Training steps every weight along the loss's gradient: ``fn(*weights, x, importance)`` -> ``(output, loss)``
    must carry one back to each of ``weights`` ({name: tensor}, in ``fn``'s order), and the same one as
    ``reference``'s (a weight used detached in one place and not in another sends only part of it)."""
    weights = {what: w.clone().requires_grad_(True) for what, w in weights.items()}
    names = " and ".join(weights)
    first = next(iter(weights))
    with torch.enable_grad():
        out, loss = call(fn, *weights.values(), x, importance, name=name)
        if not loss.requires_grad:
            where = (
                f"it is computed from {output}.detach() (or {output}.data), cut off from {names}"
                if out.requires_grad
                else f"the function runs under torch.no_grad() (or uses {first}.detach(), {first}.data)"
            )
            raise CheckFailed(
                f"`{name}`'s loss carries no gradient: {where}; training calls loss.backward() and needs the "
                f"graph from {names} to the loss, so compute everything from {', '.join(weights)} and x as they are."
            )
        loss.sum().backward()
    for what, tensor in weights.items():
        if tensor.grad is None or not tensor.grad.abs().sum() > 0:
            raise CheckFailed(
                f"`{name}`'s loss sends no gradient to {what}: {what} enters it detached (.detach(), .data or a "
                f"copy made without the graph); use {what} itself, so that training can move it."
            )
    expected = {what: w.detach().clone().requires_grad_(True) for what, w in weights.items()}
    with torch.enable_grad():
        reference(*expected.values(), x, importance)[1].sum().backward()
    for what, tensor in weights.items():
        if not torch.allclose(tensor.grad, expected[what].grad, rtol=1e-4, atol=1e-6):
            raise CheckFailed(
                f"`{name}`'s loss has the right value but sends {what} only part of its gradient: {what} is used "
                f"detached in one place (the decoder's {what}.detach(), say) and as itself in another; use it as "
                "itself everywhere, so that training follows the whole loss."
            )


def _weighted_loss_hints(err: torch.Tensor, importance: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    """The named mistakes of an importance-weighted loss over squared errors ``err`` ``[instance, batch, n]``,
    summed over the features and averaged over the batch."""
    weighted = err * importance[:, None, :]
    return [
        (err.sum(-1).mean(-1), "the importances are missing: weigh each feature's squared error by its importance."),
        (
            weighted.mean(-1).mean(-1),
            "the loss averages over the features; sum over them (and average over the batch).",
        ),
        (
            weighted.sum(-1).sum(-1),
            "the loss sums over the batch; average over it (then the learning rate does not depend on the batch).",
        ),
    ]


# --- feature dimensionality ---------------------------------------------------------------------


def check_feature_dimensionality(fn: Callable) -> None:
    """``fn(W)`` for ``W`` ``[instance, m, n]`` -> ``[instance, n]``."""
    name = _name(fn, "feature_dimensionality")
    g = torch.Generator().manual_seed(LESSON_10_CHECKS + 1)
    instances, m, n = 4, 3, 7
    W = torch.randn(instances, m, n, generator=g) * (0.3 + 2 * torch.rand(instances, 1, n, generator=g))
    W[0, :, 2] = 0.0  # a dropped feature: its dimensionality is 0, not NaN
    SHORT = [(1, 4, 0.2), (2, 1, 0.005)]  # short columns (instance, feature, length): stored weakly, not dropped
    for i, f, length in SHORT:
        W[i, :, f] *= length / W[i, :, f].norm()
    out = expect_tensor(call(fn, W.clone(), name=name), (instances, n), ("instance", "feature"), name)
    ref = sp.feature_dimensionality(W)
    if out[0, 2].abs() > 1e-6:
        raise CheckFailed(f"`{name}` gives a dropped feature (a zero column) {out[0, 2].item():.3g}; it should be 0.")
    for i, f, length in SHORT:
        if out[i, f].abs() <= ref[i, f] / 100:
            raise CheckFailed(
                f"`{name}` gives a short column ({length} long) a dimensionality of 0: only a zero column, a dropped "
                f"feature, gets 0; a short column is still stored, and its D_i is ‖W_i‖² / Σ_j (Ŵ_i · W_j)² "
                f"({ref[i, f].item():.3g} here), however short it is."
            )
    norm = W.norm(dim=-2)
    unit = W / norm[:, None, :].clamp_min(1e-8)
    dots = torch.einsum("imn,imk->ink", W, W)  # W_i · W_j
    cos = torch.einsum("imn,imk->ink", unit, unit)
    proj = torch.einsum("imn,imk->ink", unit, W)  # Ŵ_i · W_j
    off = ~torch.eye(n, dtype=torch.bool)
    kept = norm > 1e-8

    def dropped_zero(values: torch.Tensor) -> torch.Tensor:  # a wrong formula, with a dropped feature at 0 as asked
        return torch.where(kept, values, torch.zeros(()))

    expect_close(
        out,
        ref,
        name,
        hints=[
            (
                dropped_zero(norm.pow(2) / dots.pow(2).sum(-1).clamp_min(1e-12)),
                "the denominator uses W_i · W_j; project on the unit vector Ŵ_i instead: Σ_j (Ŵ_i · W_j)².",
            ),
            (
                dropped_zero(norm.pow(2) / (proj.pow(2) * off).sum(-1).clamp_min(1e-12)),
                "the denominator leaves out j = i; the sum runs over every feature, feature i included.",
            ),
            (
                dropped_zero(1 / cos.pow(2).sum(-1).clamp_min(1e-12)),
                "this uses cosines only, or sums (Ŵ_i · W_j)² over i instead of j, or puts the hat on W_j, "
                "Σ_j (W_i · Ŵ_j)² (e.g. `W.mT @ unit` for `unit.mT @ W`): all three give the same numbers; "
                "the lengths matter, and the sum runs over the last index, j (every feature, for each i): "
                "D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)².",
            ),
            (dropped_zero(norm / proj.pow(2).sum(-1).clamp_min(1e-12)), "the numerator is ‖W_i‖; square it."),
            (
                dropped_zero(norm.pow(2) / proj.abs().sum(-1).clamp_min(1e-12)),
                "square each (Ŵ_i · W_j) in the denominator.",
            ),
        ],
    )
    for i, f, length in SHORT:  # close in absolute terms is not enough for a column this short: compare relatively
        if not torch.isclose(out[i, f].detach().float().cpu(), ref[i, f], rtol=0.01, atol=0.0):
            raise CheckFailed(
                f"`{name}` gives a short column ({length} long) a dimensionality of {out[i, f].item():.3g}, not "
                f"{ref[i, f].item():.3g}: Ŵ_i is W_i at unit length, and a floor on the norm (clamp_min) longer than "
                "the column leaves it shorter than that; keep the floor tiny (1e-8), there only to avoid 0 / 0."
            )
    passed(name, "D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)², 0 for a dropped feature", fn=fn)


# --- scoring a dictionary against the truth -----------------------------------------------------


def _shape_with_dimensions(value) -> list[int] | None:
    """The shape of a torch tensor or NumPy array with one dimension or more (which the lesson's table cannot print
    with a format such as :.2f, even when it holds one number); None for anything else."""
    if isinstance(value, torch.Tensor) or type(value).__module__ == "numpy":
        shape = list(getattr(value, "shape", ()))
        return shape if shape else None
    return None


def check_mean_max_cosine(fn: Callable) -> None:
    """``fn(found [k, d], truth [n, d])`` -> a number: the mean over the true directions of their best cosine."""
    name = _name(fn, "mean_max_cosine")
    g = torch.Generator().manual_seed(LESSON_10_CHECKS + 2)
    n, k, d = 6, 9, 5
    truth = torch.randn(n, d, generator=g) * (0.5 + torch.rand(n, 1, generator=g))
    found = torch.randn(k, d, generator=g) * (0.2 + 3 * torch.rand(k, 1, generator=g))
    found[0] = -2.0 * truth[0]  # a latent pointing exactly away from a feature: cosine −1, not a find
    found[1] = truth[1] + 0.3 * torch.randn(d, generator=g)
    away = torch.nn.functional.normalize(truth[0] - truth[1], dim=0)  # found 0 and 1 point away from it already;
    found[2:] *= -torch.sign(found[2:] @ away)[:, None]  # turn the others away from it too
    truth = torch.cat([truth, 0.8 * away[None]])  # a feature whose best cosine is negative: nothing found it
    n += 1
    ref = sp.mean_max_cosine(found, truth)
    out = call(fn, found.clone(), truth.clone(), name=name)
    f, t = torch.nn.functional.normalize(found, dim=-1), torch.nn.functional.normalize(truth, dim=-1)
    cos = t @ f.T  # [n, k]
    wrong = {
        "takes |cosine|: a latent pointing away from a feature does not find it (its activations are positive), "
        "so keep the sign": (cos.abs().max(-1).values.mean()).item(),
        "clamps each best cosine at 0: a feature whose best latent points away from it has a negative best cosine, "
        "and the mean should count it as it is; keep the sign": cos.max(-1).values.clamp_min(0).mean().item(),
        "takes the absolute value of each best cosine: a negative best cosine means every latent points away from "
        "that feature, which is not a find; keep the sign": cos.max(-1).values.abs().mean().item(),
        "averages over the found directions (each one's best true feature); average over the true features "
        "instead: the score asks whether every feature was found": cos.max(0).values.mean().item(),
        "uses dot products: normalise both sets of directions to unit length first": (truth @ found.T)
        .max(-1)
        .values.mean()
        .item(),
        "averages every cosine; take each true feature's best one": cos.mean().item(),
    }
    shape = _shape_with_dimensions(out)
    if shape is not None and math.prod(shape) == 1:  # one number, in a shape the table cannot print
        raise CheckFailed(
            f"`{name}` returns an array of shape {shape}; return one number (a float or a tensor of no dimensions), "
            "as the lesson's table prints it: .item(), or reduce over every dimension (.mean() without dim=)."
        )
    number = as_number(out)
    for message, value in wrong.items():
        if abs(number - value) < 1e-4 and abs(value - ref) > 1e-3:
            raise CheckFailed(f"`{name}` {message}.")
    expect_number(out, ref, name, "the mean max cosine", 1e-4)
    passed(name, f"{ref:.3f} on a check dictionary of {k} directions against {n} features", fn=fn)


# --- the sweep: scoring every SAE against the truth ---------------------------------------------

SCORE_KEYS = ("mmc", "found", "L0")


def _check_saes(g: torch.Generator, truth: torch.Tensor) -> dict[str, sp.ToySAE]:
    """Three check SAEs of eight latents on five dimensions, built by hand: their decoders have rows placed near three,
    one and four of the six true features, and a second row near the first of them (so that counting the latents
    near a feature gives another number than counting the features near a latent); their encoder biases give them
    different L0s, and the TopK one's negative biases leave fewer than k latents firing on many inputs (so that its
    L0 is not k); one row of A sits at cosine 0.897 and one of C at 0.905 with a feature no other row finds (so that
    counting at a threshold of 0.897 or below, or above 0.905, or after rounding the cosines to two places, gives
    another number; only thresholds between the two give the counts of 0.9), and one of B at -0.95 (so that |cosine|
    does too). None was trained: they are labelled by letter and activation, not by a penalty."""
    d_sae, d = 8, truth.shape[1]
    unit = torch.nn.functional.normalize(truth, dim=-1)
    saes = {}
    for label, finds, bias, k, edge in (
        ("SAE A (ReLU)", 3, 0.2, None, (5, 4, 0.897)),
        ("SAE B (ReLU)", 1, -0.3, None, (3, 3, -0.95)),
        ("SAE C (TopK, k = 2)", 4, -0.4, [2], (6, 5, 0.905)),
    ):
        W_dec = torch.nn.functional.normalize(torch.randn(d_sae, d, generator=g), dim=-1)
        W_dec[:finds] = unit[:finds] + 0.05 * torch.randn(finds, d, generator=g)
        W_dec[finds] = unit[0] + 0.1 * torch.randn(d, generator=g)  # a second latent near feature 0
        if (
            edge is not None
        ):  # a row at a set cosine with a feature no other row finds: just below or above 0.9, or -0.95
            row, feature, cosine = edge
            away = torch.randn(d, generator=g)
            away = away - (away @ unit[feature]) * unit[feature]
            W_dec[row] = cosine * unit[feature] + (1 - cosine**2) ** 0.5 * away / away.norm()
        W_dec = W_dec * (0.5 + torch.rand(d_sae, 1, generator=g))  # rows of different lengths
        W_enc = W_dec.T + 0.3 * torch.randn(d, d_sae, generator=g)  # an encoder near, not at, the decoder
        b_enc = bias + 0.2 * torch.randn(d_sae, generator=g)
        b_dec = 0.1 * torch.randn(d, generator=g)
        saes[label] = sp.ToySAE(W_enc[None], b_enc[None], W_dec[None], b_dec[None], k)
    return saes


def _scores(saes: dict[str, sp.ToySAE], h: torch.Tensor, truth: torch.Tensor, **mistake) -> dict[str, dict]:
    """The reference scores of each SAE, or (with a keyword) those one known mistake gives."""
    out = {}
    for label, sae in saes.items():
        rows = sae.W_enc[0].T if mistake.get("encoder") else sae.W_dec[0]
        active = (sp.sae_latents(sae, h) > 0).float()  # [1, batch, latent]
        if mistake.get("L0") == "share":
            L0 = active.mean(-1).mean()
        elif mistake.get("L0") == "per latent":
            L0 = active.sum(1).mean()
        elif mistake.get("L0") == "total":
            L0 = active.sum()
        elif mistake.get("L0") == "values":
            L0 = sp.sae_latents(sae, h).sum(-1).mean()
        elif mistake.get("L0") == "k" and sae.k is not None:
            L0 = torch.tensor(float(max(sae.k)))
        else:
            L0 = active.sum(-1).mean()
        if mistake.get("found") == "latents":
            found = (sp.max_cosines(truth, rows) >= 0.9).sum()
        else:
            found = (sp.max_cosines(rows, truth) >= 0.9).sum()
        mmc = (
            sp.max_cosines(truth, rows).mean()
            if mistake.get("mmc") == "latents"
            else sp.max_cosines(rows, truth).mean()
        )
        out[label] = {"mmc": mmc.item(), "found": int(found), "L0": L0.item()}
    return out


_SCORE_MISTAKES = (
    (
        {"encoder": True},
        ("mmc", "found"),
        "scores the encoder's directions; the SAE writes a latent's direction into the model with its decoder row, "
        "so score the decoder rows, sae.W_dec[0] ([latent, d])",
    ),
    (
        {"mmc": "latents"},
        ("mmc",),
        "averages over the latents (each latent's best feature): the decoder rows and the truth are swapped; the score "
        "asks whether every feature was found, so pass the decoder rows first: mean_max_cosine(sae.W_dec[0], truth)",
    ),
    (
        {"found": "latents"},
        ("found",),
        "counts the latents near a feature, not the features with a latent near them (two latents near one feature "
        "count twice); take one best cosine per true feature, sp.max_cosines(sae.W_dec[0], truth), and count those "
        "of 0.9 or more",
    ),
    (
        {"L0": "share"},
        ("L0",),
        "gives L0 as the share of the latents active, not their number; sum (z > 0) over the latents (the last "
        "dimension), then average over the inputs",
    ),
    (
        {"L0": "per latent"},
        ("L0",),
        "counts, for each latent, the inputs it fires on (a sum over the inputs); L0 counts the latents active on "
        "each input: sum (z > 0) over the last dimension, then average over the inputs",
    ),
    (
        {"L0": "total"},
        ("L0",),
        "adds up the active latents of all the inputs together; average the count over the inputs: "
        "(z > 0).float().sum(-1).mean()",
    ),
    (
        {"L0": "values"},
        ("L0",),
        "adds up the latents' activations; L0 counts the active ones: (z > 0).float().sum(-1).mean()",
    ),
    (
        {"L0": "k"},
        ("L0",),
        "gives a TopK SAE's L0 as its k; a TopK SAE keeps at most k latents, and fewer fire on an input where some of "
        "its k largest pre-activations are 0 or less: count the active ones, (z > 0).float().sum(-1).mean()",
    ),
)


def _is_count(value) -> bool:
    """Whether ``value`` is a whole number that the lesson's table can print with ``:d``: an int (also a NumPy one)
    or an integer tensor of no dimensions (``(best >= 0.9).sum()``)."""
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not value.is_floating_point() and not value.is_complex()
    return isinstance(value, numbers.Integral)


def check_score_saes(fn: Callable) -> None:
    """``fn(saes: dict[label, ToySAE], h [batch, d], truth [n, d])`` -> ``{label: {"mmc", "found", "L0"}}``."""
    name = _name(fn, "score_saes")
    g = torch.Generator().manual_seed(LESSON_10_CHECKS + 3)
    truth = torch.randn(6, 5, generator=g) * (0.5 + torch.rand(6, 1, generator=g))
    saes = _check_saes(g, truth)
    h = sp.sample_features(torch.tensor([0.6]), len(truth), 300, g)[0] @ truth  # [300, 5]: about 2.4 features each
    ref = _scores(saes, h, truth)
    weights = ("W_enc", "b_enc", "W_dec", "b_dec")
    given = {label: {w: getattr(sae, w) for w in weights} for label, sae in saes.items()}
    kept = {label: {w: t.clone() for w, t in tensors.items()} for label, tensors in given.items()}
    handed = dict(saes)  # the dict the loop is given: the lesson passes its own, which later cells read
    topk = {label: getattr(sae, "k", None) for label, sae in saes.items()}  # the lists themselves
    topk_kept = {label: copy.deepcopy(k) for label, k in topk.items()}  # and what they held: k[0] += 1 changes both
    out = call(fn, handed, h.clone(), truth.clone(), name=name)
    if list(handed) != list(saes):
        raise CheckFailed(
            f"`{name}` changed the dict of SAEs it was given (it now holds {sorted(map(str, handed))}, not "
            f"{sorted(map(str, saes))}), so the cells after it find other SAEs or none; read the dict, never add, pop "
            "or delete its entries: for label, sae in saes.items()."
        )
    for label, sae in saes.items():
        if handed[label] is not sae:
            raise CheckFailed(
                f"`{name}` put another SAE under {label!r} in the dict it was given, so the cells after it measure "
                "that one; leave the dict's entries as they are, and keep any changed copy in a variable of your own."
            )
        k_now = getattr(sae, "k", None)
        if k_now != topk_kept[label]:
            how = "in place" if k_now is topk[label] else "by setting a new one on the SAE"
            raise CheckFailed(
                f"`{name}` changed {label!r}'s k {how} (from {topk_kept[label]!r} to {k_now!r}): the SAEs it is "
                "given must come out as they went in, or the cells after it measure SAEs with other k; read k, "
                "never set it or change the list."
            )
    for label, sae in saes.items():  # call() sees only tensor arguments; the SAEs' tensors sit inside the dict
        for w in weights:
            now = getattr(sae, w)
            if now is given[label][w] and torch.equal(now, kept[label][w]):
                continue
            how = "in place" if now is given[label][w] else "by setting a new one on the SAE"
            raise CheckFailed(
                f"`{name}` changed {label!r}'s {w} {how}: the SAEs it is given must come out as they went in, or "
                "the cells after it measure other SAEs; work on a copy, rows = rows / rows.norm(dim=-1, "
                "keepdim=True), not rows /= rows.norm(...)."
            )
    if not isinstance(out, dict):
        raise CheckFailed(
            f"`{name}` should return a dict, one entry per SAE ({{label: {{'mmc': ..., 'found': ..., 'L0': ...}}}}); "
            f"it returned {type(out).__name__}."
        )
    missing = [label for label in saes if label not in out]
    if missing:
        raise CheckFailed(
            f"`{name}` has no scores for {', '.join(repr(m) for m in missing)} of the {len(saes)} SAEs it was given "
            f"(it has {sorted(map(str, out))}); loop over every SAE and key its scores by its label: "
            "for label, sae in saes.items()."
        )
    extra = [label for label in out if label not in saes]
    if extra:
        raise CheckFailed(
            f"`{name}` has scores for {extra!r}, which is none of the SAEs it was given: key each by its label."
        )
    for label in saes:
        if not isinstance(out[label], dict) or any(key not in out[label] for key in SCORE_KEYS):
            raise CheckFailed(
                f"`{name}`'s entry for {label!r} should be a dict with the keys 'mmc', 'found' and 'L0'; it is "
                f"{out[label]!r:.120}."
            )
    count = "int((sp.max_cosines(sae.W_dec[0], truth) >= 0.9).sum())"
    for label in saes:  # the lesson's table prints found with :d, which takes an int, not a float
        found = out[label]["found"]
        if _is_count(found):
            continue
        if (isinstance(found, torch.Tensor) and found.is_floating_point()) or isinstance(found, numbers.Real):
            raise CheckFailed(
                f"`{name}` gives {label!r} a 'found' of {found!r:.60}: found is a float, and it is a count of "
                "features, which the lesson's table prints as a whole number (format :d), so a float stops the "
                f"table; count with {count}, without .float()."
            )
        if isinstance(found, torch.Tensor):
            raise CheckFailed(
                f"`{name}` gives {label!r} a 'found' that is a tensor of shape {list(found.shape)}: the lesson's "
                f"table prints found as one whole number (format :d), an int or a tensor of no dimensions; count "
                f"with {count}."
            )
        raise CheckFailed(
            f"`{name}` gives {label!r} a 'found' of {found!r:.60} ({type(found).__name__}); found is a count of "
            f"features, a whole number: count with {count}."
        )
    for label in saes:  # and mmc and L0 with :.2f and :.1f, which take one number, not a tensor with dimensions
        for key in ("mmc", "L0"):
            value = out[label][key]
            shape = _shape_with_dimensions(value)
            if shape is not None:
                raise CheckFailed(
                    f"`{name}` gives {label!r} an {key!r} that is an array of shape {shape}: the lesson's "
                    f"table prints it as one number (a float or a tensor of no dimensions); return it with .item(), "
                    "or reduce over every dimension (.mean() without dim=)."
                )
            if isinstance(value, (list, tuple)):
                raise CheckFailed(
                    f"`{name}` gives {label!r} an {key!r} that is a {type(value).__name__} ({value!r:.40}): the "
                    "lesson's table prints it as one number (a float or a tensor of no dimensions); return it with "
                    ".item(), not .tolist()."
                )
            if real_number(value) is None:
                raise CheckFailed(
                    f"`{name}` gives {label!r} an {key!r} of {value!r:.40} ({type(value).__name__}): the lesson's "
                    "table prints it as one number (a float or a tensor of no dimensions), and formats it itself: "
                    "return the number, with .item()."
                )
    got = {label: {key: as_number(out[label][key]) for key in SCORE_KEYS} for label in saes}
    labels = list(saes)
    if all(got[label] == got[labels[0]] for label in labels) and ref[labels[0]] != ref[labels[1]]:
        raise CheckFailed(
            f"`{name}` gives every SAE the same scores; measure the SAE of each pass of the loop (the `sae` of "
            "`for label, sae in saes.items()`), not one SAE from outside it."
        )
    tolerance = {"mmc": 1e-4, "found": 0.0, "L0": 1e-4}
    wrong = [
        (key, label)
        for label in labels
        for key in SCORE_KEYS
        if not abs(got[label][key] - ref[label][key]) <= tolerance[key]
    ]
    if not wrong:
        detail = "; ".join(f"{label}: {s['mmc']:.2f}, {s['found']} found, L0 {s['L0']:.1f}" for label, s in ref.items())
        passed(
            name, f"mean max cosine, features found and L0 of three SAEs built by hand for this check: {detail}", fn=fn
        )
        return
    for mistake, keys, message in _SCORE_MISTAKES:  # named only where every number is that mistake's number
        if not any(key in keys for key, _ in wrong):
            continue
        theirs = _scores(saes, h, truth, **mistake)
        if all(
            abs(got[label][key] - theirs[label][key]) <= max(tolerance[key], 1e-4)
            for label in labels
            for key in SCORE_KEYS
        ):
            raise CheckFailed(f"`{name}` {message}.")
    key, label = wrong[0]
    what = {"mmc": "the mean max cosine", "found": "the features found", "L0": "L0"}[key]
    raise CheckFailed(
        f"`{name}` gives {label!r} {what} ({key!r}) = {got[label][key]:.4g}; expected {ref[label][key]:.4g}."
    )


# --- the data: sparse features ------------------------------------------------------------------


def _draw(fn: Callable, name: str, sparsity: torch.Tensor, n: int, batch: int, seed: int) -> torch.Tensor:
    out = call_own_generator(fn, sparsity.clone(), n, batch, torch.Generator().manual_seed(seed), name=name)
    return expect_tensor(out, (len(sparsity), batch, n), ("instance", "batch", "feature"), name)


def _draw_twice(fn: Callable, name: str, sparsity: torch.Tensor, n: int, batch: int, seed: int) -> torch.Tensor:
    """Shape, own generator and repeatability; returns the draw (``[instance, batch, n]``)."""
    x = _draw(fn, name, sparsity, n, batch, seed)
    if not torch.equal(x, _draw(fn, name, sparsity, n, batch, seed)):
        raise CheckFailed(
            f"`{name}` gives two different batches from two generators seeded alike; draw every random number "
            "from the generator it is given (torch.rand(..., generator=generator))."
        )
    return x


def _check_own_masks(on: torch.Tensor, sparsity: torch.Tensor, name: str) -> None:
    """No two features share one on/off mask (``on`` ``[instance, batch, n]``; instances with S = 0 are always on)."""
    sparse = on[sparsity > 0]
    n = on.shape[-1]
    for i in range(n):
        for j in range(i + 1, n):
            if torch.equal(sparse[:, :, i], sparse[:, :, j]):
                raise CheckFailed(
                    f"`{name}` gives features {i} and {j} one on/off mask (a mask drawn for half the features and "
                    "repeated, say); each feature is on or off on its own: draw the mask with shape [instance, "
                    "batch, n_features]."
                )


def _check_sampler_basics(fn: Callable, name: str, sparsity: torch.Tensor, n: int, batch: int, seed: int):
    """Shape, range, own generator and repeatability; returns the draw (``[instance, batch, n]``)."""
    x = _draw_twice(fn, name, sparsity, n, batch, seed)
    if x.min() < 0 or x.max() > 1:
        raise CheckFailed(
            f"`{name}` gives values from {x.min().item():.3g} to {x.max().item():.3g}; an active feature is uniform "
            "on [0, 1] (torch.rand), an inactive one exactly 0."
        )
    return x


def _check_sparsity_and_values(x: torch.Tensor, sparsity: torch.Tensor, name: str, features=None) -> None:
    active = (x > 0).float()
    cols = slice(None) if features is None else features
    share_off = 1 - active[:, :, cols].mean((1, 2))  # [instance]
    if ((share_off - (1 - sparsity)).abs() < 0.03).all() and ((share_off - sparsity).abs() > 0.1).any():
        raise CheckFailed(
            f"`{name}` makes a feature zero with probability 1 − S; S is the chance that it is zero (sparse: "
            "S near 1, most features off), so keep a feature with probability 1 − S."
        )
    if not ((share_off - sparsity).abs() < 0.03).all():
        raise CheckFailed(
            f"`{name}`'s share of zeros per instance is {[round(v, 3) for v in share_off.tolist()]}; each feature "
            f"should be zero with probability sparsity[instance] = {[round(v, 3) for v in sparsity.tolist()]}."
        )
    on = x[:, :, cols][x[:, :, cols] > 0]
    if (on > 0.999).float().mean() > 0.5:
        raise CheckFailed(
            f"`{name}` sets an active feature to 1; its value is uniform on [0, 1]: draw it with torch.rand."
        )
    if abs(on.mean().item() - 0.5) > 0.03 or on.min() > 0.05 or on.max() < 0.95:
        raise CheckFailed(
            f"`{name}`'s active values have mean {on.mean().item():.3f}, from {on.min().item():.3f} to "
            f"{on.max().item():.3f}; an active feature is uniform on [0, 1] (mean 0.5), drawn independently of "
            "whether it is active (two torch.rand draws: one for the value, one for the on/off)."
        )


def _check_values_independent(x: torch.Tensor, name: str) -> None:
    """Instance 0 is dense (S = 0): features 0 and 1 are both on for most inputs, and their values must be two
    draws, neither one number shared by an input's features nor one shared by every input of the batch."""
    both = (x[0, :, 0] > 0) & (x[0, :, 1] > 0)
    a, c = x[0, both, 0], x[0, both, 1]
    if (a == c).float().mean() > 0.5:
        raise CheckFailed(
            f"`{name}` gives every active feature of an input one shared value: draw a value per feature, "
            "torch.rand(instance, batch, n_features), not torch.rand(instance, batch, 1); with one shared value "
            "the dense data set is one direction, (1, 1, …, 1), and the dense model has nothing to choose between."
        )
    if a.unique().numel() < len(a) / 2:
        raise CheckFailed(
            f"`{name}` gives a feature the same value on every input of the batch: draw a value per input, "
            "torch.rand(instance, batch, n_features), not torch.rand(instance, 1, n_features)."
        )
    corr = torch.corrcoef(torch.stack([a, c]))[0, 1].item()
    if abs(corr) > 0.1:
        raise CheckFailed(
            f"`{name}`'s features 0 and 1 have values correlated at {corr:+.2f} where both are on; each active "
            "feature draws its value on its own (uniform on [0, 1]), independent of the others'."
        )


def check_sample_features(fn: Callable) -> None:
    """``fn(sparsity [instance], n_features, batch, generator)`` -> features ``[instance, batch, n_features]``."""
    name = _name(fn, "sample_features")
    sparsity = torch.tensor([0.0, 0.5, 0.9, 0.9])
    n, batch = 6, 4000
    x = _check_sampler_basics(fn, name, sparsity, n, batch, LESSON_10_CHECKS + 20)
    _check_sparsity_and_values(x, sparsity, name)
    active = x > 0
    if torch.equal(active[2], active[3]):
        raise CheckFailed(
            f"`{name}` gives two instances with the same sparsity the same on/off pattern; each instance is a "
            "model of its own and draws its own: draw the mask with shape [instance, batch, n_features]."
        )
    if all(torch.equal(active[:, :, 0], active[:, :, f]) for f in range(1, n)):
        raise CheckFailed(
            f"`{name}` switches every feature of an input on and off together; each feature is on or off on its "
            "own: draw the mask with shape [instance, batch, n_features]."
        )
    _check_own_masks(active, sparsity, name)
    _check_values_independent(x, name)
    passed(name, "each feature zero with probability S, else uniform on [0, 1], from its own generator", fn=fn)


# --- the training loop --------------------------------------------------------------------------


class _Spy:
    """Wraps a function and counts its calls (and the batch sizes asked for)."""

    def __init__(self, fn: Callable, batch_arg: int | None = None):
        self.fn, self.calls, self.batches, self.batch_arg = fn, 0, [], batch_arg
        self.__name__ = getattr(fn, "__name__", "spy")

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.batch_arg is not None:
            self.batches.append(args[self.batch_arg] if len(args) > self.batch_arg else kwargs.get("batch"))
        return self.fn(*args, **kwargs)


_NO_GRAD = (
    "training needs gradients, and the lesson turns them off (torch.set_grad_enabled(False) in the setup); put the "
    "loop inside `with torch.enable_grad():`"
)


def check_train_toy(fn: Callable) -> None:
    """``fn(sparsity, importance, d_hidden, forward, sample, *, steps, batch, lr, seed, init=None)`` -> ``(W, b)``."""
    name = _name(fn, "train_toy")
    sparsity = torch.tensor([0.0, 0.8, 0.95])
    importance = (0.9 ** torch.arange(5.0))[None].repeat(3, 1)
    kwargs = {"steps": 40, "batch": 96, "lr": 3e-2, "seed": LESSON_10_CHECKS + 21}
    forward, sample = _Spy(sp.toy_forward_and_loss), _Spy(sp.sample_features, batch_arg=2)
    explain = {RuntimeError: _NO_GRAD}
    out = call(fn, sparsity, importance, 2, forward, sample, name=name, explain=explain, **kwargs)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise CheckFailed(f"`{name}` should return two things, (W, b); it returned {type(out).__name__}.")
    W = expect_tensor(out[0], (3, 2, 5), ("instance", "hidden", "feature"), f"{name}'s W")
    b = expect_tensor(out[1], (3, 5), ("instance", "feature"), f"{name}'s b")
    if forward.calls == 0 or sample.calls == 0:
        which = "forward" if forward.calls == 0 else "sample"
        raise CheckFailed(
            f"`{name}` never calls the `{which}` it is given; call `{which}(...)` each step, so that the lesson "
            "trains with the functions it passes in (yours)."
        )
    if forward.calls != kwargs["steps"] or sample.calls != kwargs["steps"]:
        raise CheckFailed(
            f"`{name}` called forward {forward.calls} and sample {sample.calls} times for steps = {kwargs['steps']}; "
            "one batch and one forward pass per step: loop `for _ in range(steps)`."
        )
    if any(size != kwargs["batch"] for size in sample.batches):
        raise CheckFailed(f"`{name}` asks sample for batches of {sample.batches[0]}; pass it `batch`.")
    if W.requires_grad or b.requires_grad:
        raise CheckFailed(f"`{name}` returns W and b still attached to the graph; return W.detach(), b.detach().")
    ref_W, ref_b = sp.train_toy(sparsity, importance, 2, sp.toy_forward_and_loss, sp.sample_features, **kwargs)
    start, _ = sp.init_toy(3, 5, 2, torch.Generator().manual_seed(kwargs["seed"]))
    if torch.allclose(W, start):
        raise CheckFailed(
            f"`{name}` returns the starting weights: W never moved; step the optimiser each step (zero_grad, "
            "loss.sum().backward(), step) on W and b made trainable (requires_grad_)."
        )
    if (b == 0).all():
        raise CheckFailed(f"`{name}` never trains b; give Adam both W and b: torch.optim.Adam([W, b], lr=lr).")
    if not (torch.allclose(W, ref_W, atol=1e-3) and torch.allclose(b, ref_b, atol=1e-3)):
        raise CheckFailed(
            f"`{name}`'s W differs from the course's loop by up to {(W - ref_W).abs().max().item():.3g} after "
            f"{kwargs['steps']} steps; seed one torch.Generator with `seed`, draw the start with "
            "sp.init_toy(instances, n, d_hidden, generator) first, then each step: x = sample(sparsity, n, batch, "
            "generator), the loss from forward, optimiser.zero_grad(), loss.sum().backward(), optimiser.step() "
            "(Adam with `lr`; forgetting zero_grad adds up old gradients)."
        )
    init = torch.tensor([[[1.0, 0.0, -1.0, 0.5, 0.0], [0.0, 1.0, 0.0, -0.5, 1.0]]]).repeat(3, 1, 1)
    kwargs["steps"] = 2
    given = init.clone()  # the lesson passes init as a keyword, which call() does not watch: compare it here
    W2, _ = call(fn, sparsity, importance, 2, sp.toy_forward_and_loss, sp.sample_features, init=given,
                 name=name, explain=explain, **kwargs)  # fmt: skip
    if not torch.equal(given, init) or given.requires_grad or W2.data_ptr() == given.data_ptr():
        raise CheckFailed(
            f"`{name}` trains `init` itself (W = init): the optimiser then steps the caller's tensor in place, "
            "changing it, and fails on one made with .expand() (the lesson passes one); start from a copy, "
            "W = init.clone()."
        )
    if (W2 - init).abs().max() > 0.2:
        raise CheckFailed(f"`{name}` ignores `init`; when it is given, start W from a copy of it (init.clone()).")
    passed(name, "40 steps match the course's loop; init, steps and batch honoured", fn=fn)


# --- correlated features ------------------------------------------------------------------------


def check_correlated_features(fn: Callable) -> None:
    """``fn(sparsity [instance], n_features, batch, generator)``: features 0 and 1 share their on/off mask."""
    name = _name(fn, "correlated_features")
    sparsity = torch.tensor([0.5, 0.9, 0.9])
    n, batch = 5, 4000
    x = _check_sampler_basics(fn, name, sparsity, n, batch, LESSON_10_CHECKS + 22)
    on = x > 0
    if not torch.equal(on[:, :, 0], on[:, :, 1]):
        share = (on[:, :, 0] == on[:, :, 1]).float().mean().item()
        raise CheckFailed(
            f"`{name}`'s features 0 and 1 are on or off together on {share:.0%} of inputs; feature 1 is active "
            "exactly when feature 0 is: give it feature 0's mask, not one of its own."
        )
    both = on[:, :, 0]
    if torch.allclose(x[:, :, 0][both], x[:, :, 1][both]):
        raise CheckFailed(
            f"`{name}` copies feature 0's value into feature 1; they share only the on/off mask: draw feature 1's "
            "value on its own (uniform on [0, 1])."
        )
    corr = torch.corrcoef(torch.stack([x[:, :, 0][both], x[:, :, 1][both]]))[0, 1].item()
    if abs(corr) > 0.1:
        raise CheckFailed(
            f"`{name}`'s features 0 and 1 have values correlated at {corr:+.2f} where both are on (1 − x_0, say); "
            "they share only the on/off mask: draw feature 1's value on its own (uniform on [0, 1])."
        )
    _check_sparsity_and_values(x, sparsity, name, features=[0, 2, 3, 4])
    _check_sparsity_and_values(x, sparsity, name, features=[1])
    shares_zeros = [j for j in range(2, n) if torch.equal(on[:, :, j], on[:, :, 0])]
    if shares_zeros:
        raise CheckFailed(
            f"`{name}` gives feature {shares_zeros[0]} feature 0's mask too (a slice one too wide, `1:3`?); only "
            "feature 1 shares it, every other feature draws its own."
        )
    if any(torch.equal(on[:, :, i], on[:, :, j]) for i in range(2, n) for j in range(i + 1, n)) or torch.equal(
        on[1], on[2]
    ):
        raise CheckFailed(
            f"`{name}` shares masks beyond features 0 and 1; every other feature, and every instance, draws its own."
        )
    passed(name, "features 0 and 1 on and off together, values of their own; the others independent", fn=fn)


# --- neurons: the top share ---------------------------------------------------------------------


def check_neuron_top_share(fn: Callable) -> None:
    """``fn(W [instance, neuron, n])`` -> ``[instance, neuron]``."""
    name = _name(fn, "neuron_top_share")
    g = torch.Generator().manual_seed(LESSON_10_CHECKS + 23)
    W = torch.randn(3, 4, 6, generator=g) * 0.6
    W[:, :, 0] *= 3.0  # a long column: kept
    W[0, :, 5] = 0.02 * torch.randn(4, generator=g)  # a dropped feature (short column) with some weight on it
    W[0, :, 4] = torch.tensor([2.0, 0.0, 0.0, 0.0])  # kept, read by neuron 0 only
    W[1, 2] = 0.0  # a neuron that reads no kept feature ...
    W[1, :, 5] = torch.tensor([0.01, 0.02, 0.3, 0.01])  # ... only feature 5, whose short column is dropped
    out = call(fn, W.clone(), name=name)
    if isinstance(out, torch.Tensor) and torch.isnan(out).any():
        raise CheckFailed(
            f"`{name}` gives NaN (0 / 0) for a neuron that reads no kept feature; give it 0 (torch.where on the total)."
        )
    out = expect_tensor(out, (3, 4), ("instance", "neuron"), name)
    ref = sp.neuron_top_share(W)
    kept = sp.represented(W)
    w2 = W.pow(2)
    every = w2.max(-1).values / w2.sum(-1)
    kept_w = W.abs() * kept[:, None, :]
    expect_close(
        out,
        ref,
        name,
        hints=[
            (every, "counts the dropped features too; zero their weights first (sp.represented(W)), then share."),
            (
                kept_w.max(-1).values / kept_w.sum(-1).clamp_min(1e-9),
                "shares the absolute weights; share the squared weights.",
            ),
        ],
    )
    passed(name, "each neuron's largest share of its squared weights on the kept features", fn=fn)


# --- computing in superposition: the absolute-value model ---------------------------------------


def check_signed_features(fn: Callable) -> None:
    """``fn(sparsity [instance], n_features, batch, generator)`` -> ``[instance, batch, n_features]``, each zero
    with probability ``sparsity``, else uniform on [-1, 1]."""
    name = _name(fn, "signed_features")
    sparsity = torch.tensor([0.0, 0.5, 0.9, 0.9])
    n, batch, seed = 6, 4000, LESSON_10_CHECKS + 24
    x = _draw_twice(fn, name, sparsity, n, batch, seed)
    if x.min() >= 0:
        raise CheckFailed(
            f"`{name}` gives no negative value; an active feature is uniform on [-1, 1]: 2 * torch.rand(...) - 1."
        )
    if x.min() < -1 or x.max() > 1:
        raise CheckFailed(
            f"`{name}` gives values from {x.min().item():.3g} to {x.max().item():.3g}; an active feature is uniform "
            "on [-1, 1], an inactive one exactly 0."
        )
    share_off = (x == 0).float().mean((1, 2))
    if ((share_off - (1 - sparsity)).abs() < 0.03).all():
        raise CheckFailed(
            f"`{name}` makes a feature zero with probability 1 − S; S is the chance that it is zero, so keep a "
            "feature with probability 1 − S."
        )
    if not ((share_off - sparsity).abs() < 0.03).all():
        raise CheckFailed(
            f"`{name}`'s share of zeros per instance is {[round(v, 3) for v in share_off.tolist()]}; each feature "
            f"should be zero with probability sparsity[instance] = {[round(v, 3) for v in sparsity.tolist()]}."
        )
    on = x[x != 0]
    if on.abs().min() > 0.999:
        raise CheckFailed(f"`{name}` sets an active feature to ±1; its value is uniform on [-1, 1].")
    if abs(on.mean().item()) > 0.03 or abs(on.abs().mean().item() - 0.5) > 0.03:
        raise CheckFailed(
            f"`{name}`'s active values have mean {on.mean().item():+.3f} and mean size {on.abs().mean().item():.3f}; "
            "uniform on [-1, 1] has mean 0 and mean size 0.5: draw the value apart from the on/off."
        )
    if torch.equal(x[2] != 0, x[3] != 0):
        raise CheckFailed(
            f"`{name}` gives two instances with the same sparsity the same on/off pattern; draw the mask with shape "
            "[instance, batch, n_features]."
        )
    on = x != 0
    if all(torch.equal(on[:, :, 0], on[:, :, f]) for f in range(1, n)):
        raise CheckFailed(
            f"`{name}` switches every feature of an input on and off together; each feature is on or off on its "
            "own: draw the mask with shape [instance, batch, n_features]."
        )
    _check_own_masks(on, sparsity, name)
    both = (x[0, :, 0] != 0) & (x[0, :, 1] != 0)
    a, c = x[0, both, 0], x[0, both, 1]
    if (a == c).float().mean() > 0.9:
        raise CheckFailed(f"`{name}` gives every active feature of an input one shared value: draw one per feature.")
    if (a.sign() == c.sign()).float().mean() > 0.9:
        raise CheckFailed(
            f"`{name}` gives every active feature of an input the same sign; each feature draws its own value on "
            "[-1, 1], sign included: torch.rand(instance, batch, n_features)."
        )
    if (a.abs() - c.abs()).abs().max() < 1e-6:
        raise CheckFailed(
            f"`{name}` gives every active feature of an input the same size (only the signs differ); draw each "
            "feature's value on its own, uniform on [-1, 1]."
        )
    passed(name, "each feature zero with probability S, else uniform on [-1, 1], from its own generator", fn=fn)


def check_abs_forward_and_loss(fn: Callable) -> None:
    """``fn(W_in, W_out, b, x, importance)`` -> ``(y [instance, batch, n], loss [instance])``."""
    name = _name(fn, "abs_forward_and_loss")
    g = torch.Generator().manual_seed(LESSON_10_CHECKS + 25)
    instances, m, n, batch = 3, 4, 6, 64
    W_in = torch.randn(instances, m, n, generator=g)
    W_out = torch.randn(instances, n, m, generator=g)
    b = torch.randn(instances, n, generator=g) * 0.5
    x = sp.signed_features(torch.tensor([0.0, 0.5, 0.8]), n, batch, g)
    importance = torch.rand(instances, n, generator=g) + 0.1
    out = call(fn, W_in.clone(), W_out.clone(), b.clone(), x.clone(), importance.clone(), name=name)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise CheckFailed(f"`{name}` should return two things, (y, loss); it returned {type(out).__name__}.")
    y = expect_tensor(out[0], (instances, batch, n), ("instance", "batch", "feature"), f"{name}'s y")
    loss = expect_tensor(out[1], (instances,), ("instance",), f"{name}'s loss")
    h = torch.einsum("imn,ibn->ibm", W_in, x)
    pre = torch.einsum("inm,ibm->ibn", W_out, torch.relu(h))
    ref_y = torch.relu(pre + b[:, None, :])
    expect_close(
        y,
        ref_y,
        f"{name}'s y",
        hints=[
            (
                torch.relu(torch.einsum("inm,ibm->ibn", W_out, h) + b[:, None, :]),
                "the ReLU on the neurons is missing: h = ReLU(W_in x); without it no neuron can compute a half.",
            ),
            (pre + b[:, None, :], "the ReLU on the output is missing: y = ReLU(W_out h + b)."),
            (torch.relu(pre), "the bias b is missing: y = ReLU(W_out h + b)."),
            (torch.relu(pre) + b[:, None, :], "the bias is added after the ReLU; it goes inside: ReLU(W_out h + b)."),
        ],
    )
    err = (ref_y - x.abs()).pow(2)
    ref_loss = (err * importance[:, None, :]).sum(-1).mean(-1)
    expect_close(
        loss,
        ref_loss,
        f"{name}'s loss",
        hints=[
            (
                ((ref_y - x).pow(2) * importance[:, None, :]).sum(-1).mean(-1),
                "the loss compares y with x; the target is |x| (x.abs()).",
            ),
            *_weighted_loss_hints(err, importance),
        ],
    )
    _check_gradients(
        fn, name, {"W_in": W_in, "W_out": W_out, "b": b}, x, importance, sp.abs_forward_and_loss, output="y"
    )
    passed(name, "y = ReLU(W_out ReLU(W_in x) + b), loss = Σ_features importance × (y − |x|)², batch-averaged", fn=fn)


# --- the SAE: encoder, loss, training loop ------------------------------------------------------


def _random_saes(g: torch.Generator, k: list[int] | None, d_in: int = 5, d_sae: int = 8) -> sp.ToySAE:
    n = 2
    return sp.ToySAE(
        torch.randn(n, d_in, d_sae, generator=g),
        0.3 * torch.randn(n, d_sae, generator=g),
        torch.randn(n, d_sae, d_in, generator=g) * (0.5 + torch.rand(n, d_sae, 1, generator=g)),
        0.5 * torch.randn(n, d_in, generator=g),
        k,
    )


def _latents_mistakes(sae: sp.ToySAE, x: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    def enc(x_in, relu=True, b_enc=True):
        pre = torch.einsum("ibd,ids->ibs", x_in, sae.W_enc) + (sae.b_enc[:, None, :] if b_enc else 0)
        return torch.relu(pre) if relu else pre

    def topk(pre, ks):
        out = torch.zeros_like(pre)
        for i, kk in enumerate(ks):
            top = pre[i].topk(kk, dim=-1)
            out[i] = out[i].scatter(-1, top.indices, top.values)
        return out

    centred = x[None] - sae.b_dec[:, None, :]
    plain = x[None].expand(len(sae.W_enc), -1, -1)
    out = [
        (enc(plain), "the decoder bias is not subtracted from x before encoding: encode x − b_dec."),
        (enc(x[None] + sae.b_dec[:, None, :]), "the decoder bias is added; subtract it: encode x − b_dec."),
        (enc(centred, b_enc=False), "the encoder bias b_enc is missing: ReLU((x − b_dec) W_enc + b_enc)."),
    ]
    if sae.k is None:
        out.append((enc(centred, relu=False), "the ReLU is missing: latents are ReLU((x − b_dec) W_enc + b_enc)."))
    else:
        out += [
            (topk(enc(centred, relu=False), sae.k), "TopK keeps negative pre-activations; apply the ReLU first."),
            (topk(enc(centred), [max(sae.k)] * len(sae.k)), "every SAE keeps the largest k; each has its own k."),
            (enc(centred), "TopK keeps every latent: keep only the k largest of each input (topk, then scatter)."),
        ]
    return out


def check_sae_latents(fn: Callable) -> None:
    """``fn(sae, x [batch, d_in])`` -> latents ``[instance, batch, d_sae]``."""
    name = _name(fn, "sae_latents")
    g = torch.Generator().manual_seed(LESSON_10_CHECKS + 24)
    x = torch.randn(50, 5, generator=g)
    for k in (None, [2, 3]):
        sae = _random_saes(g, k)
        out = expect_tensor(call(fn, sae, x.clone(), name=name), (2, 50, 8), ("instance", "batch", "latent"), name)
        what = "ReLU SAEs" if k is None else "TopK SAEs (k = 2 and 3)"
        expect_close(out, sp.sae_latents(sae, x), name, f"latents of {what}", hints=_latents_mistakes(sae, x))
    passed(name, "ReLU((x − b_dec) W_enc + b_enc), and TopK keeps each SAE's k largest", fn=fn)


def check_sae_loss(fn: Callable) -> None:
    """``fn(sae, x [batch, d_in], l1 [instance])`` -> loss ``[instance]``."""
    name = _name(fn, "sae_loss")
    g = torch.Generator().manual_seed(LESSON_10_CHECKS + 25)
    x = torch.randn(40, 5, generator=g)
    sae = _random_saes(g, None)
    l1 = torch.tensor([0.3, 1.5])
    out = expect_tensor(call(fn, sae, x.clone(), l1.clone(), name=name), (2,), ("instance",), name)
    z = sp.sae_latents(sae, x)
    err = (sp.sae_reconstruct(sae, z) - x).pow(2)
    mse = err.sum(-1).mean(-1)
    norms = sae.W_dec.norm(dim=-1)[:, None, :]
    penalty = (z * norms).sum(-1).mean(-1)
    expect_close(
        out,
        sp.sae_loss(sae, x, l1),
        name,
        "loss",
        hints=[
            (
                mse + l1 * z.sum(-1).mean(-1),
                "the L1 term is not weighed by the decoder rows' lengths; multiply each "
                "latent by ‖W_dec[latent]‖ (else shrinking the decoder dodges the penalty).",
            ),
            (err.mean(-1).mean(-1) + l1 * penalty, "the squared error is averaged over the dimensions; sum over them."),
            (mse + l1 * penalty.pow(2), "the penalty is squared; L1 is the plain sum of the weighted latents."),
            (mse + penalty, "the penalty is not multiplied by l1; each SAE's penalty is l1[instance] × its L1 term."),
            (mse, "the L1 term is missing: loss = squared error + l1 × Σ latents × ‖W_dec row‖."),
            (l1 * mse + penalty, "l1 multiplies the squared error; it multiplies the penalty."),
        ],
    )
    topk = _random_saes(g, [2, 3])  # TopK SAEs, trained with no penalty: the latents must keep only the top k
    no_penalty = torch.zeros(2)
    out = expect_tensor(call(fn, topk, x.clone(), no_penalty, name=name), (2,), ("instance",), name)
    relu_only = dataclasses.replace(topk, k=None)  # the same weights, every positive latent kept
    expect_close(
        out,
        sp.sae_loss(topk, x, no_penalty),
        name,
        "loss of a TopK SAE",
        hints=[
            (
                sp.sae_loss(relu_only, x, no_penalty),
                "on a TopK SAE (sae.k set) your latents keep every positive pre-activation; take them from "
                "sae_latents(sae, x), which keeps only the top k of each input.",
            ),
        ],
    )
    with torch.enable_grad():
        params = [p.clone().requires_grad_(True) for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)]
        live = sp.ToySAE(*params, None)
        loss = call(fn, live, x.clone(), l1.clone(), name=name)
        if not loss.requires_grad:
            raise CheckFailed(
                f"`{name}`'s loss carries no gradient; compute it from the SAE's weights as they are (no .detach(), "
                "no torch.no_grad()), so training can move them."
            )
        loss.sum().backward()
    if any(p.grad is None or not p.grad.abs().sum() > 0 for p in params):
        raise CheckFailed(
            f"`{name}`'s loss sends no gradient to one of W_enc, b_enc, W_dec, b_dec; use them as they are."
        )
    with torch.enable_grad():
        ref_dec = sae.W_dec.clone().requires_grad_(True)
        ref_sae = sp.ToySAE(sae.W_enc, sae.b_enc, ref_dec, sae.b_dec, None)
        sp.sae_loss(ref_sae, x, l1).sum().backward()
    if not torch.allclose(params[2].grad, ref_dec.grad, atol=1e-4, rtol=1e-3):
        raise CheckFailed(
            f"`{name}`'s gradient on W_dec differs from the course's by up to "
            f"{(params[2].grad - ref_dec.grad).abs().max().item():.3g}, though the loss is right: the decoder "
            "rows' lengths in the penalty are cut off from the graph (.detach(), .data, torch.no_grad()); the "
            "gradient must reach W_dec through ‖W_dec row‖ too, or training dodges the penalty (latents shrink, "
            "rows grow)."
        )
    passed(name, "squared error summed over dimensions + l1 × latents weighed by decoder norms", fn=fn)


def check_train_toy_saes(fn: Callable) -> None:
    """``fn(sample, d_in, d_sae, loss, *, l1=None, k=None, steps, batch, lr, seed)`` -> a ToySAE."""
    name = _name(fn, "train_toy_saes")
    W_true = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(3)), dim=-1)

    def sample(batch: int, generator: torch.Generator) -> torch.Tensor:
        return sp.sample_features(torch.tensor([0.8]), 6, batch, generator)[0] @ W_true

    kwargs = {"steps": 30, "batch": 64, "lr": 1e-2, "seed": LESSON_10_CHECKS + 26}
    for setting in ({"l1": [0.05, 0.5]}, {"k": [1, 2]}):
        spy_sample, spy_loss = _Spy(sample, batch_arg=0), _Spy(sp.sae_loss)
        out = call(fn, spy_sample, 4, 6, spy_loss, name=name, explain={RuntimeError: _NO_GRAD}, **setting, **kwargs)
        if not isinstance(out, sp.ToySAE):
            raise CheckFailed(f"`{name}` should return an sp.ToySAE; it returned {type(out).__name__}.")
        if spy_loss.calls != kwargs["steps"] or spy_sample.calls != kwargs["steps"]:
            raise CheckFailed(
                f"`{name}` called loss {spy_loss.calls} and sample {spy_sample.calls} times for steps = "
                f"{kwargs['steps']}; each step: x = sample(batch, generator), then loss(sae, x, l1) of it."
            )
        if out.k != setting.get("k"):
            raise CheckFailed(f"`{name}` gives its SAEs k = {out.k!r}; pass k on: ToySAE(..., k).")
        ref = sp.train_toy_saes(sample, 4, 6, sp.sae_loss, **setting, **kwargs)
        what = "L1" if "l1" in setting else "TopK"
        ways = 2 if "l1" in setting else len(setting["k"])  # the SAEs trained together
        mean = sp.train_toy_saes(
            sample, 4, 6, lambda s, x, c, ways=ways: sp.sae_loss(s, x, c) / ways, **setting, **kwargs
        )
        if all(
            isinstance(getattr(out, w), torch.Tensor)
            and getattr(out, w).shape == getattr(mean, w).shape
            and torch.allclose(getattr(out, w).detach(), getattr(mean, w), atol=1e-3)
            for w in ("W_enc", "b_enc", "W_dec", "b_dec")
        ):
            ref = mean  # the losses averaged over the SAEs, not summed: Adam trains each the same way
        for w in ("W_enc", "b_enc", "W_dec", "b_dec"):
            got = getattr(out, w)
            expected = getattr(ref, w)
            if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
                raise CheckFailed(f"`{name}`'s {w} should be a tensor of shape {list(expected.shape)}.")
            if not torch.allclose(got.detach(), expected, atol=1e-3):
                raise CheckFailed(
                    f"`{name}`'s {what} SAEs' {w} differ from the course's loop by up to "
                    f"{(got.detach() - expected).abs().max().item():.3g} after {kwargs['steps']} steps; seed one "
                    "generator with `seed`, draw W_dec first (torch.randn(instances, d_sae, d_in), rows normalised), "
                    "W_enc its transpose, zero biases; l1 as a tensor (zeros for TopK); each step "
                    "loss(sae, sample(batch, generator), l1).sum(), zero_grad, backward, step (Adam, lr)."
                )
    passed(name, "L1 and TopK SAEs trained as the course's loop trains them", fn=fn)


def check_pair_angle(fn: Callable) -> None:
    """``fn(W [instance, m, n], i, j)`` -> angles in degrees ``[instance]``."""
    name = _name(fn, "pair_angle")
    g = torch.Generator().manual_seed(LESSON_10_CHECKS + 27)
    W = torch.randn(4, 3, 5, generator=g) * (0.3 + torch.rand(4, 1, 5, generator=g))
    W[1, :, 3] = -2.5 * W[1, :, 1]  # exactly opposite: 180°, where a cosine a hair below −1 gives arccos NaN
    W[2, :, 3] = 0.7 * W[2, :, 1]  # the same direction: 0°
    out = call(fn, W.clone(), 1, 3, name=name)
    if isinstance(out, torch.Tensor) and torch.isnan(out).any():
        raise CheckFailed(
            f"`{name}` gives NaN for two columns at 0° or 180°: rounding puts their cosine a hair outside [−1, 1]; "
            "clamp it to [−1, 1] before torch.arccos."
        )
    out = expect_tensor(out, (4,), ("instance",), name)
    ref = sp.pair_angle(W, 1, 3)
    cos = torch.nn.functional.cosine_similarity(W[:, :, 1], W[:, :, 3], dim=1)
    dots = (W[:, :, 1] * W[:, :, 3]).sum(1)
    expect_close(
        out,
        ref,
        name,
        "angles",
        atol=0.1,  # a clamp to [−1 + 1e−6, 1 − 1e−6], a gradient-safe one, is 0.08° off at 180°: right
        hints=[
            (torch.arccos(cos.clamp(-1, 1)), "gives radians; turn them into degrees (torch.rad2deg)."),
            (cos, "gives the cosine; the angle is its arccos, in degrees."),
            (
                torch.rad2deg(torch.arccos(dots.clamp(-1, 1))),
                "takes the arccos of the dot product; normalise the columns first (the cosine).",
            ),
        ],
    )
    passed(name, "the angle in degrees between two features' columns, 0° and 180° included", fn=fn)
