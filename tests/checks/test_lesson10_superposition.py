"""Every lesson-10 check accepts a correct solution and rejects the stub and each plausible mistake, naming it.

The correct solutions here are written another way than the notebook's (loops over instances and features,
explicit sums), so a check that merely compared a function with itself could not pass them all. The wrong
answers are small changes to a correct solution, as a learner would write them.
"""

import dataclasses
import math
import re

import numpy as np
import pytest
import torch

from utils.checks import CheckFailed
from utils.checks import lesson10_superposition as c
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
