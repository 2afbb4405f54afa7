"""Every lesson-10 check accepts a correct solution and rejects the stub and each plausible mistake, naming it.

The correct solutions here are written another way than the notebook's (loops over instances and features,
explicit sums), so a check that merely compared a function with itself could not pass them all. The wrong
answers are small changes to a correct solution, as a learner would write them.
"""

import contextlib
import dataclasses
import math
import re

import numpy as np
import pytest
import torch

from utils.checks import CheckFailed
from utils.checks import lesson10_superposition as c
from utils.metrics import superposition as sp
from utils.metrics.superposition import REPRESENTED

# --- the toy model's forward pass and loss ------------------------------------------------------


def toy_forward_and_loss(W, b, x, importance):
    x_hat = torch.stack([torch.relu((x[i] @ W[i].T) @ W[i] + b[i]) for i in range(len(W))])
    loss = torch.stack([(importance[i] * (x[i] - x_hat[i]) ** 2).sum(-1).mean() for i in range(len(W))])
    return x_hat, loss


def _forward(W, b, x, relu=True, bias_inside=True, relu_hidden=False):
    h = torch.einsum("imn,ibn->ibm", W, x)
    if relu_hidden:
        h = torch.relu(h)
    pre = torch.einsum("imn,ibm->ibn", W, h)
    if not bias_inside:
        return torch.relu(pre) + b[:, None, :]
    pre = pre + b[:, None, :]
    return torch.relu(pre) if relu else pre


def _loss(x, x_hat, importance, square=True, over_features="sum", over_batch="mean", power=1):
    err = (x - x_hat) ** 2 if square else (x - x_hat).abs()
    per = err * importance[:, None, :] ** power
    per = per.sum(-1) if over_features == "sum" else per.mean(-1)
    return per.mean(-1) if over_batch == "mean" else per.sum(-1)


FORWARD_MISTAKES = {
    "the ReLU on the output is missing": lambda W, b, x, imp: (_forward(W, b, x, relu=False), torch.zeros(len(W))),
    "the bias b is missing": lambda W, b, x, imp: (_forward(W, 0 * b, x), torch.zeros(len(W))),
    "the bias is added after the ReLU": lambda W, b, x, imp: (
        _forward(W, b, x, bias_inside=False),
        torch.zeros(len(W)),
    ),
    "there is a ReLU on the hidden layer": lambda W, b, x, imp: (
        _forward(W, b, x, relu_hidden=True),
        torch.zeros(len(W)),
    ),
}


def _with_loss(**kw):
    def fn(W, b, x, imp):
        x_hat = _forward(W, b, x)
        return x_hat, _loss(x, x_hat, imp, **kw)

    return fn


LOSS_MISTAKES = {
    "the importances are missing": lambda W, b, x, imp: (
        _forward(W, b, x),
        _loss(x, _forward(W, b, x), torch.ones_like(imp)),
    ),
    "the loss averages over the features": _with_loss(over_features="mean"),
    "the loss sums over the batch": _with_loss(over_batch="sum"),
    "the error is not squared": _with_loss(square=False),
    "the importances are squared": _with_loss(power=2),
    "the loss is summed over the instances": lambda W, b, x, imp: (
        _forward(W, b, x),
        _loss(x, _forward(W, b, x), imp).sum().expand(len(W)),
    ),
    "should return two things": lambda W, b, x, imp: _forward(W, b, x),
    "dimension 2 (feature)": lambda W, b, x, imp: (_forward(W, b, x)[..., :-1], _loss(x, _forward(W, b, x), imp)),
}


def test_toy_forward_and_loss_check_accepts_a_loop_and_names_each_mistake(prove_check):
    prove_check(c.check_toy_forward_and_loss, toy_forward_and_loss, {**FORWARD_MISTAKES, **LOSS_MISTAKES})


# --- feature dimensionality ---------------------------------------------------------------------


def feature_dimensionality(W):
    out = torch.zeros(W.shape[0], W.shape[2])
    for i in range(W.shape[0]):
        for f in range(W.shape[2]):
            w = W[i, :, f]
            length = math.sqrt(float(w @ w))
            if length < 1e-9:
                continue
            u = w / length
            out[i, f] = length**2 / sum(float(u @ W[i, :, j]) ** 2 for j in range(W.shape[2]))
    return out


def _dim(W, project="unit", self_term=True, numerator=2, square=True, lengths=True, floor=1e-8, over=-1):
    norm = W.norm(dim=-2)
    unit = W / norm[:, None, :].clamp_min(floor)
    left = unit if project == "unit" else W
    right = W if lengths else unit
    dots = torch.einsum("imn,imk->ink", left, right)
    terms = dots.pow(2) if square else dots.abs()
    if not self_term:
        terms = terms * ~torch.eye(W.shape[-1], dtype=torch.bool)
    top = norm.pow(numerator) if lengths else torch.ones_like(norm)
    return torch.where(norm > 1e-8, top / terms.sum(over).clamp_min(1e-12), torch.zeros_like(norm))


def _hat_on_j(W):
    norm = W.norm(dim=-2)
    unit = W / norm[:, None, :].clamp_min(1e-8)
    terms = (W.mT @ unit).pow(2)  # [instance, i, j]: (W_i · Ŵ_j)²
    return torch.where(norm > 1e-8, norm.pow(2) / terms.sum(-1).clamp_min(1e-12), torch.zeros_like(norm))


DIMENSIONALITY_MISTAKES = {
    "the denominator uses W_i · W_j": lambda W: _dim(W, project="raw"),
    "the denominator leaves out j = i": lambda W: _dim(W, self_term=False),
    "this uses cosines only": lambda W: _dim(W, lengths=False),
    # Σ_i (Ŵ_i · W_j)² for feature j: ‖W_j‖² / that is 1 / Σ_i cos²(i, j), the cosines-only numbers; named with them
    "this uses cosines only, or sums (Ŵ_i · W_j)² over i instead of j": lambda W: _dim(W, over=-2),
    # Σ_j (W_i · Ŵ_j)², the hat on W_j: ‖W_i‖² Σ_j cos²(i, j), so the cosines-only numbers again; named with them
    "or puts the hat on W_j": lambda W: _hat_on_j(W),
    "the numerator is ‖W_i‖; square it": lambda W: _dim(W, numerator=1),
    "square each (Ŵ_i · W_j) in the denominator": lambda W: _dim(W, square=False),
    "a dropped feature (a zero column)": lambda W: torch.where(W.norm(dim=-2) > 1e-8, _dim(W), torch.ones(())),
    "a short column (0.2 long) a dimensionality of 0": lambda W: torch.where(
        W.norm(dim=-2) > REPRESENTED, _dim(W), torch.zeros(())
    ),
    "a short column (0.005 long) a dimensionality of 0": lambda W: torch.where(
        W.norm(dim=-2) > 0.1, _dim(W), torch.zeros(())
    ),
    "a floor on the norm (clamp_min) longer than the column": lambda W: _dim(W, floor=0.01),
    "NaN": lambda W: (
        W.norm(dim=-2).pow(2) / torch.einsum("imn,imk->ink", W / W.norm(dim=-2, keepdim=True), W).pow(2).sum(-1)
    ),
    "dimension 1 (feature)": lambda W: _dim(W)[:, :-1],
}


def test_feature_dimensionality_check_accepts_a_loop_and_names_each_mistake(prove_check):
    prove_check(c.check_feature_dimensionality, feature_dimensionality, DIMENSIONALITY_MISTAKES)


@pytest.mark.parametrize("threshold", [0.01, 0.02, 0.04, 0.1])
def test_feature_dimensionality_check_rejects_zeroing_every_column_shorter_than_a_threshold(threshold):
    with pytest.raises(CheckFailed, match=re.escape("a short column (0.005 long) a dimensionality of 0")):
        c.check_feature_dimensionality(lambda W: torch.where(W.norm(dim=-2) > threshold, _dim(W), torch.zeros(())))


def test_feature_dimensionality_check_accepts_a_zero_test_below_every_short_column(capsys):
    c.check_feature_dimensionality(lambda W: torch.where(W.norm(dim=-2) > 0.001, _dim(W), torch.zeros(())))
    assert "✓" in capsys.readouterr().out


# --- mean max cosine ----------------------------------------------------------------------------


def mean_max_cosine(found, truth):
    best = []
    for t in truth:
        best.append(max(float(t @ f) / (t.norm() * f.norm()).item() for f in found))
    return sum(best) / len(best)


def _cos(found, truth):
    return torch.nn.functional.normalize(truth, dim=-1) @ torch.nn.functional.normalize(found, dim=-1).T


MMC_MISTAKES = {
    "takes |cosine|": lambda f, t: _cos(f, t).abs().max(-1).values.mean().item(),
    "clamps each best cosine at 0": lambda f, t: _cos(f, t).max(-1).values.clamp_min(0).mean().item(),
    "takes the absolute value of each best cosine": lambda f, t: _cos(f, t).max(-1).values.abs().mean().item(),
    "averages over the found directions": lambda f, t: _cos(f, t).max(0).values.mean().item(),
    "uses dot products": lambda f, t: (t @ f.T).max(-1).values.mean().item(),
    "averages every cosine": lambda f, t: _cos(f, t).mean().item(),
    "should return a number": lambda f, t: _cos(f, t).max(-1).values,
    "expected": lambda f, t: _cos(f, t).max(-1).values.median().item(),
}


def test_mean_max_cosine_check_accepts_a_loop_and_names_each_mistake(prove_check):
    prove_check(c.check_mean_max_cosine, mean_max_cosine, MMC_MISTAKES)


def test_mean_max_cosine_check_accepts_a_tensor_of_one_number():
    c.check_mean_max_cosine(lambda f, t: _cos(f, t).max(-1).values.mean())


def test_the_checks_name_a_function_that_is_not_callable():
    with pytest.raises(CheckFailed, match="pass the function itself"):
        c.check_mean_max_cosine(0.5)


# --- the sweep: scoring every SAE ---------------------------------------------------------------


def _cosines(rows, truth):  # [true feature, latent], written out row by row
    return torch.stack([torch.stack([(t @ r) / (t.norm() * r.norm()) for r in rows]) for t in truth])


def score_saes(saes, h, truth):
    from utils.metrics import superposition as sp

    scores = {}
    for label in list(saes):
        sae = saes[label]
        cos = _cosines(sae.W_dec[0], truth)
        best = cos.max(dim=1).values
        latents = sp.sae_latents(sae, h)[0]  # [batch, latent]
        counts = [int((row > 0).sum()) for row in latents]
        scores[label] = {"mmc": float(best.mean()), "found": int((best >= 0.9).sum()), "L0": sum(counts) / len(counts)}
    return scores


def _scored(**changes):
    """A learner's loop with one change: which directions it scores, which axis it reduces, which SAE it measures."""
    from utils.metrics import superposition as sp

    def fn(saes, h, truth):
        scores = {}
        items = list(saes.items())
        for label, sae in items[: changes.get("stop")]:
            if changes.get("first_sae"):
                sae = items[0][1]
            rows = sae.W_enc[0].T if changes.get("encoder") else sae.W_dec[0]
            if changes.get("normalise_in_place"):  # a view of the SAE's decoder: this rewrites the SAE itself
                rows /= rows.norm(dim=-1, keepdim=True)
            if changes.get("normalise_on_the_sae"):  # the SAE given now holds other decoder rows
                sae.W_dec = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)
                rows = sae.W_dec[0]
            z = sp.sae_latents(sae, h)
            cos = _cosines(rows, truth)
            best = cos.max(dim=0 if changes.get("over_latents") else 1).values
            count = cos.max(dim=0 if changes.get("count_latents") else 1).values
            active = (z > 0).float()
            L0 = {
                None: active.sum(-1).mean(),
                "share": active.mean(-1).mean(),
                "per latent": active.sum(1).mean(),
                "total": active.sum(),
                "values": z.sum(-1).mean(),
                "k": torch.tensor(float(sae.k[0])) if sae.k else active.sum(-1).mean(),  # "sparsity by construction"
            }[changes.get("L0")]
            scores[label] = {"mmc": best.mean().item(), "found": int((count >= 0.9).sum()), "L0": L0.item()}
            if changes.get("replace_in_dict"):  # the SAE itself untouched, but the dict now holds another one
                saes[label] = dataclasses.replace(sae, W_dec=sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True))
            if changes.get("set_k") and sae.k:
                sae.k = [k + 1 for k in sae.k]
            if changes.get("raise_k") and sae.k:  # the same list, changed in place
                sae.k[0] += 1
            if changes.get("append_k") and sae.k:
                sae.k.append(3)
        if changes.get("empty_the_dict"):
            saes.clear()
        if changes.get("no_L0"):
            scores = {label: {"mmc": s["mmc"], "found": s["found"]} for label, s in scores.items()}
        return list(scores.values()) if changes.get("as_list") else scores

    return fn


SCORE_MISTAKES = {
    "scores the encoder's directions": _scored(encoder=True),
    "averages over the latents (each latent's best feature)": _scored(over_latents=True),
    "counts the latents near a feature, not the features with a latent near them": _scored(count_latents=True),
    "gives L0 as the share of the latents active": _scored(L0="share"),
    "counts, for each latent, the inputs it fires on": _scored(L0="per latent"),
    "adds up the active latents of all the inputs together": _scored(L0="total"),
    "adds up the latents' activations": _scored(L0="values"),
    "gives a TopK SAE's L0 as its k": _scored(L0="k"),
    "has no scores for 'SAE C (TopK, k = 2)'": _scored(stop=-1),
    "gives every SAE the same scores": _scored(first_sae=True),
    "should be a dict with the keys 'mmc', 'found' and 'L0'": _scored(no_L0=True),
    "should return a dict": _scored(as_list=True),
    "changed 'SAE A (ReLU)''s W_dec in place": _scored(normalise_in_place=True),
    "changed 'SAE A (ReLU)''s W_dec by setting a new one on the SAE": _scored(normalise_on_the_sae=True),
    "put another SAE under 'SAE A (ReLU)' in the dict it was given": _scored(replace_in_dict=True),
    "changed the dict of SAEs it was given": _scored(empty_the_dict=True),
    "changed 'SAE C (TopK, k = 2)''s k by setting a new one on the SAE (from [2] to [3])": _scored(set_k=True),
    "changed 'SAE C (TopK, k = 2)''s k in place (from [2] to [3])": _scored(raise_k=True),
    "changed 'SAE C (TopK, k = 2)''s k in place (from [2] to [2, 3])": _scored(append_k=True),
}


def test_score_saes_check_accepts_a_loop_and_names_each_mistake(prove_check):
    prove_check(c.check_score_saes, score_saes, SCORE_MISTAKES)


def _as(found=lambda n: n, number=lambda x: x):
    """The loop above, returning found and the other two numbers in another type."""

    def fn(saes, h, truth):
        return {
            label: {"mmc": number(s["mmc"]), "found": found(s["found"]), "L0": number(s["L0"])}
            for label, s in score_saes(saes, h, truth).items()
        }

    return fn


# what the check accepts for found, and the table's own line, which prints found with :d
ACCEPTED_COUNTS = {
    "an int tensor, (best >= 0.9).sum()": lambda n: torch.tensor(n),
    "a NumPy int": lambda n: np.int64(n),
}


@pytest.mark.parametrize("kind", list(ACCEPTED_COUNTS))
def test_score_saes_check_accepts_a_whole_number_that_the_lesson_table_can_print(kind, capsys):
    fn = _as(found=ACCEPTED_COUNTS[kind], number=torch.tensor)
    c.check_score_saes(fn)
    assert "✓" in capsys.readouterr().out
    saes = c._check_saes(torch.Generator().manual_seed(0), torch.randn(6, 5))
    for s in fn(saes, torch.randn(20, 5), torch.randn(6, 5)).values():  # the lesson's table line for these keys
        assert f"{s['mmc']:12.2f} {s['found']:5d} {s['L0']:5.1f}".split()[1] == str(int(s["found"]))


@pytest.mark.parametrize(
    ("found", "message"),
    [
        (float, "found is a float"),  # (best >= 0.9).float().sum().item()
        (lambda n: torch.tensor(float(n)), "found is a float"),  # (best >= 0.9).float().sum()
        (lambda n: torch.tensor([n]), "a tensor of shape [1]"),
        (str, "found is a count of features, a whole number"),
    ],
)
def test_score_saes_check_rejects_a_found_that_the_lesson_table_cannot_print(found, message):
    with pytest.raises(CheckFailed, match=re.escape(message)):
        c.check_score_saes(_as(found=found))
    saes = c._check_saes(torch.Generator().manual_seed(0), torch.randn(6, 5))
    s = _as(found=found)(saes, torch.randn(20, 5), torch.randn(6, 5))["SAE A (ReLU)"]
    with pytest.raises((TypeError, ValueError)):  # why: the table's format for found
        format(s["found"], "5d")


ONE_NUMBER_WITH_A_DIMENSION = {
    "torch": lambda x: torch.tensor([float(x)]),  # as .mean(0, keepdim=True) gives
    "numpy": lambda x: np.array([float(x)]),  # as .mean(-1, keepdim=True).numpy() gives, where .item() was meant
}


@pytest.mark.parametrize("kind", sorted(ONE_NUMBER_WITH_A_DIMENSION))
@pytest.mark.parametrize("key", ["mmc", "L0"])
def test_score_saes_check_rejects_a_score_that_the_lesson_table_cannot_print(key, kind):
    as_array = ONE_NUMBER_WITH_A_DIMENSION[kind]

    def fn(saes, h, truth):
        out = score_saes(saes, h, truth)
        for s in out.values():
            s[key] = as_array(s[key])
        return out

    with pytest.raises(CheckFailed, match=re.escape(f"an '{key}' that is an array of shape [1]")):
        c.check_score_saes(fn)
    with pytest.raises(TypeError):  # why: the table's format for the score
        format(as_array(0.5), "5.1f")


@pytest.mark.parametrize("given", ["text", "None"])
@pytest.mark.parametrize("key", ["mmc", "L0"])
def test_score_saes_check_names_a_score_that_is_no_number(key, given):
    def fn(saes, h, truth):
        out = score_saes(saes, h, truth)
        for s in out.values():
            s[key] = f"{s[key]:.2f}" if given == "text" else None  # formatted for display, or left out
        return out

    kind = "str" if given == "text" else "NoneType"
    with pytest.raises(CheckFailed, match=re.escape(f"({kind}): the lesson's table prints it as one number")):
        c.check_score_saes(fn)


@pytest.mark.parametrize("key", ["mmc", "L0"])
def test_score_saes_check_names_a_score_given_as_a_list(key):
    def fn(saes, h, truth):
        out = score_saes(saes, h, truth)
        for s in out.values():
            s[key] = [float(s[key])]  # as .tolist() gives, where .item() was meant
        return out

    with pytest.raises(CheckFailed, match=re.escape(f"an '{key}' that is a list")):
        c.check_score_saes(fn)


@pytest.mark.parametrize("kind", sorted(ONE_NUMBER_WITH_A_DIMENSION))
def test_mean_max_cosine_check_rejects_one_number_with_a_dimension(kind):
    as_array = ONE_NUMBER_WITH_A_DIMENSION[kind]
    with pytest.raises(CheckFailed, match=re.escape("returns an array of shape [1]")):
        c.check_mean_max_cosine(lambda f, t: as_array(_cos(f, t).max(-1).values.mean()))


def test_score_saes_check_names_a_wrong_number_it_does_not_recognise():
    def off(saes, h, truth):
        scores = score_saes(saes, h, truth)
        scores["SAE B (ReLU)"]["mmc"] += 0.01
        return scores

    with pytest.raises(CheckFailed, match=re.escape("gives 'SAE B (ReLU)' the mean max cosine ('mmc')")):
        c.check_score_saes(off)


def _found_by(count):
    """The loop above with found counted another way: ``count(cosines [feature, latent])``."""

    def fn(saes, h, truth):
        scores = score_saes(saes, h, truth)
        for label, sae in saes.items():
            scores[label]["found"] = int(count(_cosines(sae.W_dec[0], truth)))
        return scores

    return fn


# wrong counts that match a named mistake on one SAE but not on the others: none is that mistake
UNNAMED_FOUND = {
    "a threshold of 0.95": _found_by(lambda cos: (cos.max(1).values >= 0.95).sum()),
    "a threshold of 0.8": _found_by(lambda cos: (cos.max(1).values >= 0.8).sum()),
    "a threshold of 0.89": _found_by(lambda cos: (cos.max(1).values >= 0.89).sum()),  # rows at 0.897 and 0.905
    "a threshold of 0.895": _found_by(lambda cos: (cos.max(1).values >= 0.895).sum()),
    "the cosines rounded to two places": _found_by(lambda cos: (cos.max(1).values.round(decimals=2) >= 0.9).sum()),
    "a threshold of 0.91": _found_by(lambda cos: (cos.max(1).values >= 0.91).sum()),  # tell these from 0.9
    "each feature's best |cosine|": _found_by(lambda cos: (cos.abs().max(1).values >= 0.9).sum()),
}


@pytest.mark.parametrize("wrong", list(UNNAMED_FOUND))
def test_score_saes_check_names_no_mistake_that_only_some_numbers_match(wrong):
    with pytest.raises(CheckFailed) as failed:
        c.check_score_saes(UNNAMED_FOUND[wrong])
    said = str(failed.value)
    assert re.search(r"gives 'SAE [ABC] \(.*\)' the features found \('found'\) = \d+; expected \d+", said), said
    assert not any(message in said for message in SCORE_MISTAKES), said


def test_the_sweep_check_measures_the_lesson_saes_the_lesson_way():
    """The check's reference is the lesson's own scoring: on SAEs trained as the lesson trains them (smaller and
    shorter here), the notebook's loop and the check's reference give the same numbers."""
    from utils.metrics import superposition as sp

    g = torch.Generator().manual_seed(0)
    W = torch.randn(1, 4, 12, generator=g)

    def sample(batch, generator):
        return sp.sample_features(torch.tensor([0.8]), 12, batch, generator)[0] @ W[0].T

    trained = sp.train_toy_saes(sample, 4, 12, l1=[0.1, 1.0], steps=50, batch=64, seed=1)
    saes = {f"L1, λ = {v}": sp.one_sae(trained, i) for i, v in enumerate([0.1, 1.0])}
    h, truth = sample(200, g), W[0].T
    mine = score_saes(saes, h, truth)
    reference = c._scores(saes, h, truth)
    for label in saes:
        assert mine[label]["found"] == reference[label]["found"]
        assert mine[label]["mmc"] == pytest.approx(reference[label]["mmc"], abs=1e-5)
        assert mine[label]["L0"] == pytest.approx(reference[label]["L0"], abs=1e-5)


# --- the forward pass's gradient ----------------------------------------------------------------


def _detached_loss(W, b, x, imp):
    x_hat = _forward(W, b, x)
    return x_hat, _loss(x, x_hat.detach(), imp)


def _no_grad_body(W, b, x, imp):
    with torch.no_grad():
        return toy_forward_and_loss(W, b, x, imp)


def _detached_bias(W, b, x, imp):
    x_hat = _forward(W, b.detach(), x)
    return x_hat, _loss(x, x_hat, imp)


def _detached_decoder(W, b, x, imp):  # the encoder keeps W's graph, the decoder does not
    h = torch.einsum("imn,ibn->ibm", W, x)
    x_hat = torch.relu(torch.einsum("imn,ibm->ibn", W.detach(), h) + b[:, None, :])
    return x_hat, _loss(x, x_hat, imp)


GRADIENT_MISTAKES = {
    "only part of its gradient": _detached_decoder,
    "it is computed from x_hat.detach()": _detached_loss,
    "the function runs under torch.no_grad()": _no_grad_body,
    "sends no gradient to b": _detached_bias,
}


def test_toy_forward_and_loss_check_rejects_a_loss_without_gradient(prove_check):
    prove_check(c.check_toy_forward_and_loss, toy_forward_and_loss, GRADIENT_MISTAKES)


def test_toy_forward_and_loss_check_accepts_a_list(capsys):
    c.check_toy_forward_and_loss(lambda W, b, x, imp: list(toy_forward_and_loss(W, b, x, imp)))
    assert "✓" in capsys.readouterr().out


def test_toy_forward_and_loss_check_runs_under_the_lessons_no_grad(capsys):
    with torch.no_grad():
        c.check_toy_forward_and_loss(toy_forward_and_loss)
    assert "✓" in capsys.readouterr().out


# --- the sampler --------------------------------------------------------------------------------


def sample_features(sparsity, n, batch, generator):
    out = torch.zeros(len(sparsity), batch, n)
    for i, s in enumerate(sparsity.tolist()):
        u = torch.rand(batch, n, generator=generator)
        keep = torch.rand(batch, n, generator=generator) < 1 - s
        out[i] = torch.where(keep, u, torch.zeros(()))
    return out


def _paired_masks(values: torch.Tensor, s: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """values where a mask drawn for half the features, each repeated twice, is on."""
    half = torch.rand(len(s), values.shape[1], values.shape[2] // 2, generator=g) >= s[:, None, None]
    return values * half.repeat_interleave(2, dim=-1)


SAMPLER_MISTAKES = {
    "gives features 0 and 1 one on/off mask": lambda s, n, b, g: _paired_masks(
        torch.rand(len(s), b, n, generator=g), s, g
    ),
    "zero with probability 1 − S": lambda s, n, b, g: sample_features(1 - s, n, b, g),
    "sets an active feature to 1": lambda s, n, b, g: (sample_features(s, n, b, g) > 0).float(),
    "uses (or reseeds) torch's global random generator": lambda s, n, b, g: sample_features(s, n, b, None),
    "values from": lambda s, n, b, g: sample_features(s, n, b, g) - 0.5 * (sample_features(s, n, b, g) > 0),
    "the same on/off pattern": lambda s, n, b, g: (
        torch.rand(len(s), b, n, generator=g) * (torch.rand(1, b, n, generator=g) >= s[:, None, None])
    ),
    "switches every feature of an input on and off together": lambda s, n, b, g: (
        torch.rand(len(s), b, n, generator=g) * (torch.rand(len(s), b, 1, generator=g) >= s[:, None, None])
    ),
    "active values have mean": lambda s, n, b, g: (
        (u := torch.rand(len(s), b, n, generator=g)) * (u >= s[:, None, None])
    ),
    "gives every active feature of an input one shared value": lambda s, n, b, g: (
        torch.rand(len(s), b, 1, generator=g) * (torch.rand(len(s), b, n, generator=g) >= s[:, None, None])
    ),
    "the same value on every input of the batch": lambda s, n, b, g: (
        torch.rand(len(s), 1, n, generator=g) * (torch.rand(len(s), b, n, generator=g) >= s[:, None, None])
    ),
    "have values correlated at": lambda s, n, b, g: (x := sample_features(s, n, b, g)).index_copy(
        2, torch.tensor([1]), (0.7 * x[..., :1] + 0.3 * torch.rand(len(s), b, 1, generator=g)) * (x[..., 1:2] > 0)
    ),
}


def test_sample_features_check_accepts_the_mask_drawn_before_the_values(capsys):
    def mask_first(s, n, b, g):
        on = torch.bernoulli((1 - s)[:, None, None].expand(len(s), b, n), generator=g)
        return on * torch.rand(len(s), b, n, generator=g)

    c.check_sample_features(mask_first)
    assert "✓" in capsys.readouterr().out


def test_sample_features_check_accepts_a_loop_and_names_each_mistake(prove_check):
    prove_check(c.check_sample_features, sample_features, SAMPLER_MISTAKES)


# --- the training loop --------------------------------------------------------------------------


def train_toy(sparsity, importance, d_hidden, forward, sample, *, steps=3000, batch=1024, lr=1e-2, seed=0, init=None):
    g = torch.Generator()
    g.manual_seed(seed)
    from utils.metrics.superposition import init_toy

    W, b = init_toy(len(sparsity), importance.shape[1], d_hidden, g)
    W = (init.clone() if init is not None else W).requires_grad_()
    b = b.requires_grad_()
    opt = torch.optim.Adam([W, b], lr=lr)
    with torch.enable_grad():
        for _step in range(steps):
            opt.zero_grad()
            _, per_instance = forward(W, b, sample(sparsity, importance.shape[1], batch, g), importance)
            per_instance.mean().backward()  # the mean: Adam does not mind the scale
            opt.step()
    return W.detach().clone(), b.detach().clone()


def _variant(**change):
    def fn(sparsity, importance, d_hidden, forward, sample, *, steps=3000, batch=1024, lr=1e-2, seed=0, init=None):
        g = torch.Generator().manual_seed(seed)
        from utils.metrics.superposition import init_toy

        W, b = init_toy(len(sparsity), importance.shape[1], d_hidden, g)
        if init is not None and not change.get("ignore_init"):
            W = init if change.get("alias_init") else init.clone()
        W.requires_grad_()
        b.requires_grad_(not change.get("freeze_b"))
        opt = torch.optim.Adam([W, b] if not change.get("freeze_b") else [W], lr=lr)
        with contextlib.nullcontext() if change.get("no_grad") else torch.enable_grad():
            for _ in range(change.get("steps", steps)):
                x = sample(sparsity, importance.shape[1], change.get("batch", batch), g)
                _, loss = (
                    forward(W, b, x, importance)
                    if not change.get("own_forward")
                    else sp.toy_forward_and_loss(W, b, x, importance)
                )
                if not change.get("no_zero_grad"):
                    opt.zero_grad()
                loss.sum().backward()
                opt.step()
        return (W.detach(), b.detach()) if not change.get("attached") else (W, b)

    return fn


TRAIN_MISTAKES = {
    "put the loop inside `with torch.enable_grad():`": _variant(no_grad=True),
    "never calls the `forward` it is given": _variant(own_forward=True),
    "one batch and one forward pass per step": _variant(steps=7),
    "asks sample for batches of 32": _variant(batch=32),
    "never trains b": _variant(freeze_b=True),
    "differs from the course's loop": _variant(no_zero_grad=True),
    "ignores `init`": _variant(ignore_init=True),
    "still attached to the graph": _variant(attached=True),
    "trains `init` itself (W = init)": _variant(alias_init=True),
}


def test_train_toy_check_accepts_a_loop_written_another_way_and_names_each_mistake(prove_check):
    with torch.no_grad():  # as the lesson runs
        prove_check(c.check_train_toy, train_toy, TRAIN_MISTAKES)


# --- correlated features ------------------------------------------------------------------------


def correlated_features(sparsity, n, batch, generator):
    x = sample_features(sparsity, n, batch, generator)
    other = torch.rand(len(sparsity), batch, generator=generator)
    x[..., 1] = other * (x[..., 0] > 0)
    return x


def one_too_wide(sparsity, n, batch, generator):  # features 1 and 2 both given feature 0's mask
    x = sample_features(sparsity, n, batch, generator)
    values = torch.rand(len(sparsity), batch, 2, generator=generator)
    x[:, :, 1:3] = torch.where(x[:, :, :1] > 0, values, 0.0)
    return x


CORRELATED_MISTAKES = {
    "feature 1 is active exactly when feature 0 is": sample_features,
    "copies feature 0's value into feature 1": lambda s, n, b, g: (x := sample_features(s, n, b, g)).index_copy(
        2, torch.tensor([1]), x[..., :1]
    ),
    "zero with probability 1 − S": lambda s, n, b, g: correlated_features(1 - s, n, b, g),
    "shares masks beyond features 0 and 1": lambda s, n, b, g: (x := correlated_features(s, n, b, g)).index_copy(
        2, torch.tensor([3]), torch.rand(len(s), b, 1, generator=g) * (x[..., 2:3] > 0)
    ),
    "(1 − x_0, say)": lambda s, n, b, g: (x := sample_features(s, n, b, g)).index_copy(
        2, torch.tensor([1]), ((1 - x[..., :1]).clamp_min(1e-6)) * (x[..., :1] > 0)
    ),
    "a slice one too wide": one_too_wide,
}


def test_correlated_features_check_accepts_a_sampler_and_names_each_mistake(prove_check):
    prove_check(c.check_correlated_features, correlated_features, CORRELATED_MISTAKES)


# --- neurons' top share -------------------------------------------------------------------------


def neuron_top_share(W):
    out = torch.zeros(W.shape[0], W.shape[1])
    kept = W.norm(dim=1) > REPRESENTED
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            w2 = [float(W[i, j, f]) ** 2 for f in range(W.shape[2]) if kept[i, f]]
            out[i, j] = max(w2) / sum(w2) if w2 and sum(w2) > 0 else 0.0
    return out


def _shares(W, keep=True, square=True, nan=False):
    w = W.abs() * (W.norm(dim=1) > REPRESENTED)[:, None, :] if keep else W.abs()
    w = w.pow(2) if square else w
    total = w.sum(-1)
    return w.max(-1).values / total if nan else w.max(-1).values / total.clamp_min(1e-9)


TOP_SHARE_MISTAKES = {
    "counts the dropped features too": lambda W: _shares(W, keep=False),
    "shares the absolute weights": lambda W: _shares(W, square=False),
    "gives NaN (0 / 0)": lambda W: _shares(W, nan=True),
}


def test_neuron_top_share_check_accepts_a_loop_and_names_each_mistake(prove_check):
    prove_check(c.check_neuron_top_share, neuron_top_share, TOP_SHARE_MISTAKES)


# --- the absolute-value model -------------------------------------------------------------------


def signed_features(s, n, b, g):
    values = torch.rand(len(s), b, n, generator=g) * 2 - 1  # the values first, the mask after
    return values * (torch.rand(len(s), b, n, generator=g) >= s[:, None, None]).float()


SIGNED_MISTAKES = {
    "gives features 0 and 1 one on/off mask": lambda s, n, b, g: _paired_masks(
        torch.rand(len(s), b, n, generator=g) * 2 - 1, s, g
    ),
    "gives no negative value": lambda s, n, b, g: sample_features(s, n, b, g),
    "gives values from": lambda s, n, b, g: 2 * signed_features(s, n, b, g),
    "with probability 1 − S": lambda s, n, b, g: signed_features(1 - s, n, b, g),
    "sets an active feature to ±1": lambda s, n, b, g: torch.sign(signed_features(s, n, b, g)),
    "mean size": lambda s, n, b, g: (x := signed_features(s, n, b, g)).sign() * x.abs().sqrt(),
    "global random generator": lambda s, n, b, g: signed_features(
        s, n, b, torch.Generator().manual_seed(int(torch.seed() % 2**31))
    ),
    "the same on/off pattern": lambda s, n, b, g: (
        (torch.rand(len(s), b, n, generator=g) * 2 - 1) * (torch.rand(1, b, n, generator=g) >= s[:, None, None]).float()
    ),
    "on and off together": lambda s, n, b, g: (
        (torch.rand(len(s), b, n, generator=g) * 2 - 1) * (torch.rand(len(s), b, 1, generator=g) >= s[:, None, None])
    ),
    "the same sign": lambda s, n, b, g: (
        torch.rand(len(s), b, n, generator=g)
        * torch.where(torch.rand(len(s), b, 1, generator=g) < 0.5, -1.0, 1.0)
        * (torch.rand(len(s), b, n, generator=g) >= s[:, None, None])
    ),
    "the same size": lambda s, n, b, g: (
        torch.rand(len(s), b, 1, generator=g)
        * torch.where(torch.rand(len(s), b, n, generator=g) < 0.5, -1.0, 1.0)
        * (torch.rand(len(s), b, n, generator=g) >= s[:, None, None])
    ),
    "one shared value": lambda s, n, b, g: (
        (torch.rand(len(s), b, 1, generator=g) * 2 - 1) * (torch.rand(len(s), b, n, generator=g) >= s[:, None, None])
    ),
}


def test_signed_features_check_accepts_another_writing_and_names_each_mistake(prove_check):
    prove_check(c.check_signed_features, signed_features, SIGNED_MISTAKES)


def abs_forward_and_loss(W_in, W_out, b, x, importance):
    ys, losses = [], []
    for i in range(len(W_in)):
        y = torch.relu(torch.relu(x[i] @ W_in[i].T) @ W_out[i].T + b[i])
        ys.append(y)
        losses.append((importance[i] * (y - x[i].abs()) ** 2).sum(-1).mean())
    return torch.stack(ys), torch.stack(losses)


def _abs(hidden_relu=True, out_relu=True, bias="inside", target="abs", over_features="sum", over_batch="mean",
         weigh=True, detach=False):  # fmt: skip
    def fn(W_in, W_out, b, x, importance):
        h = torch.einsum("imn,ibn->ibm", W_in, x)
        h = torch.relu(h) if hidden_relu else h
        pre = torch.einsum("inm,ibm->ibn", W_out, h)
        if bias == "inside":
            y = torch.relu(pre + b[:, None, :]) if out_relu else pre + b[:, None, :]
        elif bias == "after":
            y = torch.relu(pre) + b[:, None, :]
        else:
            y = torch.relu(pre)
        goal = x.abs() if target == "abs" else x
        err = (y.detach() if detach else y) - goal
        per = err.pow(2) * (importance[:, None, :] if weigh else 1)
        per = per.sum(-1) if over_features == "sum" else per.mean(-1)
        return y, per.mean(-1) if over_batch == "mean" else per.sum(-1)

    return fn


ABS_MISTAKES = {
    "the ReLU on the neurons is missing": _abs(hidden_relu=False),
    "the ReLU on the output is missing": _abs(out_relu=False),
    "the bias b is missing": _abs(bias="none"),
    "the bias is added after the ReLU": _abs(bias="after"),
    "the target is |x|": _abs(target="x"),
    "the importances are missing": _abs(weigh=False),
    "the loss averages over the features": _abs(over_features="mean"),
    "the loss sums over the batch": _abs(over_batch="sum"),
    "carries no gradient": _abs(detach=True),
    "should return two things": lambda W_in, W_out, b, x, imp: _abs()(W_in, W_out, b, x, imp)[0],
    "dimension 2 (feature)": lambda W_in, W_out, b, x, imp: tuple(
        v[..., :-1] if v.dim() == 3 else v for v in _abs()(W_in, W_out, b, x, imp)
    ),
}


def test_abs_forward_and_loss_check_accepts_a_loop_and_names_each_mistake(prove_check):
    prove_check(c.check_abs_forward_and_loss, abs_forward_and_loss, ABS_MISTAKES)


# --- the SAE ------------------------------------------------------------------------------------


def sae_latents(sae, x):
    out = []
    for i in range(len(sae.W_enc)):
        z = torch.relu((x - sae.b_dec[i]) @ sae.W_enc[i] + sae.b_enc[i])
        if sae.k is not None:
            threshold = z.sort(dim=-1, descending=True).values[:, sae.k[i] - 1 : sae.k[i]]
            z = z * (z >= threshold)
        out.append(z)
    return torch.stack(out)


def _latents(relu=True, centre=-1, b_enc=True, same_k=False, topk=True):
    def fn(sae, x):
        pre = torch.einsum("ibd,ids->ibs", x[None] + centre * sae.b_dec[:, None, :], sae.W_enc)
        pre = pre + (sae.b_enc[:, None, :] if b_enc else 0)
        z = torch.relu(pre) if relu else pre
        if sae.k is None or not topk:
            return z
        ks = [max(sae.k)] * len(sae.k) if same_k else sae.k
        return torch.stack(
            [
                torch.zeros_like(z[i]).scatter(-1, z[i].topk(k, -1).indices, z[i].topk(k, -1).values)
                for i, k in enumerate(ks)
            ]
        )

    return fn


LATENT_MISTAKES = {
    "the decoder bias is not subtracted": _latents(centre=0),
    "the decoder bias is added": _latents(centre=1),
    "the encoder bias b_enc is missing": _latents(b_enc=False),
    "the ReLU is missing": _latents(relu=False),
    "each has its own k": _latents(same_k=True),
    "TopK keeps every latent": _latents(topk=False),
}


def test_sae_latents_check_accepts_a_loop_and_names_each_mistake(prove_check):
    prove_check(c.check_sae_latents, sae_latents, LATENT_MISTAKES)


def test_sae_latents_check_names_topk_without_relu():
    wrong = _latents(relu=False)
    with pytest.raises(CheckFailed, match="the ReLU is missing"):  # the ReLU SAEs come first
        c.check_sae_latents(wrong)


def sae_loss(sae, x, l1):
    z = sae_latents(sae, x)
    x_hat = torch.einsum("ibs,isd->ibd", z, sae.W_dec) + sae.b_dec[:, None]
    norms = torch.linalg.vector_norm(sae.W_dec, dim=2)
    return ((x_hat - x) ** 2).sum(2).mean(1) + l1 * torch.einsum("ibs,is->ib", z, norms).mean(1)


def _relu_latents(sae, x):  # every positive pre-activation, whatever sae.k says
    return sae_latents(dataclasses.replace(sae, k=None), x)


def _sae_loss(
    weigh=True, error="sum", square=False, coef=True, penalty=True, swap=False, detach=False, norm=None, topk=True
):
    def fn(sae, x, l1):
        z = sae_latents(sae, x) if topk else _relu_latents(sae, x)
        x_hat = torch.einsum("ibs,isd->ibd", z, sae.W_dec) + sae.b_dec[:, None]
        err = (x_hat - x) ** 2
        mse = err.sum(2).mean(1) if error == "sum" else err.mean(2).mean(1)
        w = sae.W_dec.norm(dim=2)[:, None] if weigh else 1.0
        w = w.detach() if norm == "detached" else w
        pen = (z * w).sum(2).mean(1)
        pen = pen**2 if square else pen
        if swap:
            return l1 * mse + pen
        out = mse + (l1 if coef else 1.0) * pen if penalty else mse
        return out.detach() if detach else out

    return fn


SAE_LOSS_MISTAKES = {
    "not weighed by the decoder rows' lengths": _sae_loss(weigh=False),
    "averaged over the dimensions": _sae_loss(error="mean"),
    "the penalty is squared": _sae_loss(square=True),
    "the penalty is not multiplied by l1": _sae_loss(coef=False),
    "the L1 term is missing": _sae_loss(penalty=False),
    "l1 multiplies the squared error": _sae_loss(swap=True),
    "carries no gradient": _sae_loss(detach=True),
    "the decoder rows' lengths in the penalty are cut off from the graph": _sae_loss(norm="detached"),
    "your latents keep every positive pre-activation": _sae_loss(topk=False),
}


def test_sae_loss_check_accepts_another_writing_and_names_each_mistake(prove_check):
    prove_check(c.check_sae_loss, sae_loss, SAE_LOSS_MISTAKES)


def train_toy_saes(sample, d_in, d_sae, loss, *, l1=None, k=None, steps=3000, batch=1024, lr=3e-3, seed=0):
    count = len(k) if l1 is None else len(l1)
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(count, d_sae, d_in, generator=g)
    rows = rows / torch.linalg.vector_norm(rows, dim=2, keepdim=True)
    enc = rows.permute(0, 2, 1).contiguous().requires_grad_()
    dec = rows.requires_grad_()
    b_enc = torch.zeros(count, d_sae, requires_grad=True)
    b_dec = torch.zeros(count, d_in, requires_grad=True)
    sae = sp.ToySAE(enc, b_enc, dec, b_dec, k)
    coef = torch.zeros(count) if l1 is None else torch.tensor(l1)
    opt = torch.optim.Adam([enc, b_enc, dec, b_dec], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss(sae, sample(batch, g), coef).sum().backward()
            opt.step()
    return sae  # still trainable: the check accepts that


def _train_saes(**change):
    def fn(sample, d_in, d_sae, loss, *, l1=None, k=None, steps=3000, batch=1024, lr=3e-3, seed=0):
        if change.get("drop_k"):
            k_out = None
        else:
            k_out = k
        own = sp.sae_loss if change.get("own_loss") else loss
        sae = train_toy_saes(sample, d_in, d_sae, own, l1=l1, k=k, steps=change.get("steps", steps), batch=batch,
                             lr=change.get("lr", lr), seed=seed)  # fmt: skip
        return dataclasses.replace(sae, k=k_out)

    return fn


SAE_TRAIN_MISTAKES = {
    "called loss 5 and sample 5 times": _train_saes(steps=5),
    "differ from the course's loop": _train_saes(lr=1e-3),
    "gives its SAEs k = None": _train_saes(drop_k=True),
    "called loss 0 and sample 30 times": _train_saes(own_loss=True),
}


def test_train_toy_saes_check_accepts_another_writing_and_names_each_mistake(prove_check):
    with torch.no_grad():
        prove_check(c.check_train_toy_saes, train_toy_saes, SAE_TRAIN_MISTAKES)


def test_both_training_checks_accept_the_losses_averaged_over_the_instances(capsys):
    """The spec says sum; the mean trains the same models (Adam does not see a constant factor), and both checks,
    the toy model's and the SAEs', accept it alike."""

    def mean_saes(sample, d_in, d_sae, loss, **kw):
        count = len(kw["l1"] if kw.get("l1") is not None else kw["k"])
        return train_toy_saes(sample, d_in, d_sae, lambda s, x, l1: loss(s, x, l1) / count, **kw)

    with torch.no_grad():
        c.check_train_toy(train_toy)  # this one averages: per_instance.mean()
        c.check_train_toy_saes(mean_saes)
    assert capsys.readouterr().out.count("✓") == 2


def pair_angle(W, i, j):
    a, b = W[:, :, i], W[:, :, j]
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    return torch.acos(torch.clamp(cos, -1, 1)) * 180 / math.pi


PAIR_ANGLE_MISTAKES = {
    "gives radians": lambda W, i, j: pair_angle(W, i, j) * math.pi / 180,
    "gives the cosine": lambda W, i, j: torch.cos(pair_angle(W, i, j) * math.pi / 180),
    "clamp it to [−1, 1]": lambda W, i, j: torch.rad2deg(
        torch.acos(torch.nn.functional.cosine_similarity(W[:, :, i], W[:, :, j], dim=1) * (1 + 1e-6))
    ),
    "normalise the columns first": lambda W, i, j: torch.rad2deg(
        torch.acos((W[:, :, i] * W[:, :, j]).sum(1).clamp(-1, 1))
    ),
}


def test_pair_angle_check_accepts_another_writing_and_names_each_mistake(prove_check):
    prove_check(c.check_pair_angle, pair_angle, PAIR_ANGLE_MISTAKES)


def test_pair_angle_check_accepts_a_gradient_safe_clamp(capsys):
    def safe(W, i, j):
        cos = torch.nn.functional.cosine_similarity(W[:, :, i], W[:, :, j], dim=1)
        return torch.rad2deg(torch.arccos(cos.clamp(-1 + 1e-6, 1 - 1e-6)))

    c.check_pair_angle(safe)
    assert "✓" in capsys.readouterr().out
