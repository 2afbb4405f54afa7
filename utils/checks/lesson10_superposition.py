"""Checks for lesson 10, superposition: ``check_<exercise>(your_function)``.

Each check runs the learner's function on fresh random weights and inputs whose answer the reference
in :mod:`utils.metrics.superposition` computes, and names the common wrong answers when one of them
matches instead. The inputs are built so that the mistakes give different numbers: biases that are
not zero, importances that differ per feature, feature directions of different lengths (a zero one and
two short ones among them, 0.2 and 0.005 long), and a dictionary whose directions have negative as well as
positive cosines with the truth, with one true feature that every found direction points away from.
The SAEs that the scoring check measures are built by hand, not trained, and labelled for what they are.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable

import torch

from utils.checks.framework import (
    CheckFailed,
    as_number,
    call,
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
    if not (isinstance(out, tuple) and len(out) == 2):
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
            (
                err.sum(-1).mean(-1),
                "the importances are missing: weigh each feature's squared error by its importance.",
            ),
            (
                (err * importance[:, None, :]).mean(-1).mean(-1),
                "the loss averages over the features; sum over them (and average over the batch).",
            ),
            (
                (err * importance[:, None, :]).sum(-1).sum(-1),
                "the loss sums over the batch; average over it (then the learning rate does not depend on the batch).",
            ),
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
    passed(name, "x̂ = ReLU(Wᵀ W x + b), loss = Σ_features importance × (x − x̂)², averaged over the batch")


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
    passed(name, "D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)², 0 for a dropped feature")


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
    passed(name, f"{ref:.3f} on a check dictionary of {k} directions against {n} features")


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
        passed(name, f"mean max cosine, features found and L0 of three SAEs built by hand for this check: {detail}")
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
