"""Checks for lesson 10, superposition: ``check_<exercise>(your_function)``.

Each check runs the learner's function on fresh random weights and inputs whose answer the reference
in :mod:`utils.metrics.superposition` computes, and names the common wrong answers when one of them
matches instead. The inputs are built so that the mistakes give different numbers: biases that are
not zero, importances that differ per feature, feature directions of different lengths (a zero one and
two short ones among them, 0.2 and 0.005 long), and a dictionary whose directions have negative as well as
positive cosines with the truth, with one true feature that every found direction points away from.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from utils.checks.framework import CheckFailed, as_number, call, expect_close, expect_number, expect_tensor, passed
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
                "this uses cosines only; the lengths matter: D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)².",
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
    number = as_number(out)
    for message, value in wrong.items():
        if abs(number - value) < 1e-4 and abs(value - ref) > 1e-3:
            raise CheckFailed(f"`{name}` {message}.")
    expect_number(out, ref, name, "the mean max cosine", 1e-4)
    passed(name, f"{ref:.3f} on a check dictionary of {k} directions against {n} features")
