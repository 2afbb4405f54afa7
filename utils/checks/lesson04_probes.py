"""Checks for lesson 04, linear probes: ``check_<exercise>(your_function)``.

Each check runs the learner's function on fresh inputs (fresh Storyworld narratives, or small
synthetic problems whose answer is known) and compares with a reference written here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from utils import storyworld
from utils.checks.framework import CheckFailed, as_number, call, expect_close, expect_tensor, passed
from utils.emotions import label_tokens as _label_tokens
from utils.metrics.probes import fit_probe
from utils.seeds import LESSON_04_CHECKS


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


# --- the dataset --------------------------------------------------------------------------


def check_label_tokens(fn: Callable, model) -> None:
    """fn(text, offsets, sentences) -> [(token index, emotion index, role index), ...]."""
    name = _name(fn, "label_tokens")
    docs = storyworld.sample_docs(seed=LESSON_04_CHECKS, n=12, family="narrative")
    for doc in docs:
        enc = model.tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        sentences = doc.annotations["sentences"]
        out = call(fn, doc.text, offsets, sentences, name=name)
        try:
            got = [tuple(int(v) for v in row) for row in out]
        except (TypeError, ValueError):
            raise CheckFailed(
                f"`{name}` should return a list of (token index, emotion index, role index) triples of ints."
            ) from None
        if any(len(row) != 3 for row in got):
            raise CheckFailed(f"`{name}`: each entry should be a triple (token index, emotion index, role index).")
        want = _label_tokens(doc.text, offsets, sentences)
        if got == want:
            continue
        named = {i for s in sentences if s["names_emotion"] for i in _overlapping(offsets, s["span"])}
        if any(i in named for i, _, _ in got):
            raise CheckFailed(
                f'`{name}` keeps tokens of sentences that name the emotion ("Ann felt happy."): leave out every '
                "sentence whose `names_emotion` is true, so the probe cannot read the emotion's own word."
            )
        if [i for i, _, _ in got] == [i for i, _, _ in want] and [e for _, e, _ in got] == [e for _, e, _ in want]:
            bad = next((g, w) for g, w in zip(got, want) if g != w)
            piece = doc.text[offsets[bad[0][0]][0] : offsets[bad[0][0]][1]]
            raise CheckFailed(
                f"`{name}` gives token {bad[0][0]} ({piece!r}) role {bad[0][2]}, expected {bad[1][2]} "
                "(0 subject: the token ends inside the subject's name; 1 predicate: it holds a letter; "
                "2 punctuation: it does not)."
            )
        if {r for _, _, r in want} - {r for _, _, r in got} == {0}:
            raise CheckFailed(
                f"`{name}` finds no subject token. A sentence's span starts at its first letter, but the name's "
                "token starts one character earlier, with its space: test for overlap (a < end and b > start)."
            )
        if [i for i, _, _ in got] == [i for i, _, _ in want]:
            raise CheckFailed(
                f"`{name}` labels the right tokens with the wrong emotions: use the index of the sentence's "
                "`emotion` in `storyworld.EMOTIONS`."
            )
        raise CheckFailed(
            f"`{name}` keeps {len(got)} tokens of this story, expected {len(want)}: {doc.text[:80]!r}… "
            "Keep every token that overlaps a sentence with an `emotion` that does not name it, in order."
        )
    passed(name, f"labels every token of {len(docs)} fresh stories as the reference does")


def _overlapping(offsets, span) -> list[int]:
    return [i for i, (a, b) in enumerate(offsets) if a < span[1] and b > span[0]]


def check_split_by_document(fn: Callable) -> None:
    """fn(doc [row], test_fraction, seed) -> [row] bool: True for the rows of the test documents."""
    name = _name(fn, "split_by_document")
    g = torch.Generator().manual_seed(41)
    sizes = torch.randint(3, 30, (40,), generator=g)
    doc = torch.repeat_interleave(torch.arange(40), sizes)
    masks = []
    for seed in (0, 1, 2):
        out = call(fn, doc, 0.25, seed, name=name)
        if not isinstance(out, torch.Tensor) or out.dtype != torch.bool:
            raise CheckFailed(f"`{name}` should return a bool tensor, True for the rows of test documents.")
        expect_tensor(out, (len(doc),), ["row"], name, floating=False)
        split = [bool(out[doc == d].any()) != bool(out[doc == d].all()) for d in range(40)]
        if any(split):
            raise CheckFailed(
                f"`{name}` puts some rows of one document in the test set and others in the training set "
                f"({sum(split)} of 40 documents are split). Choose whole documents: a token's neighbours share its "
                "story, so a token-level split lets the probe see the test stories while it trains."
            )
        n_test = int(sum(bool(out[doc == d].all()) for d in range(40)))
        if n_test != round(0.25 * 40):
            raise CheckFailed(f"`{name}` puts {n_test} of 40 documents in the test set; with test_fraction 0.25: 10.")
        again = call(fn, doc, 0.25, seed, name=name)
        if not torch.equal(out, again):
            raise CheckFailed(f"`{name}` gives a different split for the same seed: draw with a seeded generator.")
        masks.append(out)
    if all(torch.equal(masks[0], m) for m in masks[1:]):
        raise CheckFailed(f"`{name}` gives the same split for every seed: draw the test documents at random.")
    passed(name, "whole documents, the right share, reproducible for a seed")


# --- probes ---------------------------------------------------------------------------------


def _synthetic(n: int, d: int = 32, k: int = 12, seed: int = 0, scale: float = 20.0, noise: float = 2.5):
    """Classes in a few directions of a large, offset, unevenly scaled space (like a residual stream)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=g) * 1.5
    y = torch.randint(k, (n,), generator=g)
    x = means[y] + noise * torch.randn(n, d, generator=g)  # overlapping classes: a good probe gets about 90%
    x = x * torch.linspace(0.5, scale, d) + 3.0
    return x, y


def check_train_probe(fn: Callable) -> None:
    """fn(x [n, d], y [n], n_classes) -> a module mapping [n, d] to logits [n, n_classes]."""
    name = _name(fn, "train_probe")
    x, y = _synthetic(1600, seed=1)
    tr, te = slice(0, 1000), slice(1000, None)
    xt, yt = x[te], y[te]
    with torch.enable_grad():
        reference = fit_probe(x[tr], y[tr], 12)
    probe = call(
        fn,
        x[tr],
        y[tr],
        12,
        name=name,
        explain={
            RuntimeError: "If that says a tensor does not require grad, training needs gradients: put the loop "
            "inside `with torch.enable_grad():` (the lesson switched them off)."
        },
    )
    if not callable(probe):
        raise CheckFailed(f"`{name}` should return the trained probe (a torch.nn.Linear), not {type(probe).__name__}.")
    with torch.no_grad():
        logits = call(probe, xt, name="your probe")
        logits = expect_tensor(logits, (len(xt), 12), ["row", "class"], "your probe")
        acc = (logits.argmax(-1) == yt).float().mean().item()
        ref_acc = (reference(xt).argmax(-1) == yt).float().mean().item()
    if acc < 0.2:
        raise CheckFailed(
            f"`{name}`'s probe is right on {acc:.0%} of held-out rows (chance is 8%): is it trained at all? "
            "Each step: zero the gradients, compute the cross-entropy of probe(x) against y, call backward, step. "
            "If you standardised x for training, the probe you return must take raw x: fold the mean and scale "
            "back into its weights and bias."
        )
    if acc < ref_acc - 0.05:
        raise CheckFailed(
            f"`{name}`'s probe is right on {acc:.0%} of held-out rows; a well-fitted linear probe gets {ref_acc:.0%}. "
            "Train longer or with a larger learning rate (Adam, lr about 1e-2); if you standardised x for "
            "training, check that the probe you return folds the mean and scale back in."
        )
    passed(name, f"held-out accuracy {acc:.0%} on a synthetic 12-class problem (reference {ref_acc:.0%})")


def check_control_labels(fn: Callable) -> None:
    """fn(tokens [row], labels [row], seed) -> [row] long: one random label per token type."""
    name = _name(fn, "control_labels")
    g = torch.Generator().manual_seed(43)
    tokens = torch.randint(0, 400, (6000,), generator=g)

    def draw(n: int) -> torch.Tensor:  # 80% class 0, the rest spread over 1..11
        return torch.where(torch.rand(n, generator=g) < 0.8, 0, torch.randint(1, 12, (n,), generator=g))

    # Like words: most of a type's rows carry that type's own label (a lexical word's emotion).
    own = draw(400)
    labels = torch.where(torch.rand(6000, generator=g) < 0.9, own[tokens], draw(6000))
    outs = []
    for seed in (0, 1):
        out = call(fn, tokens, labels, seed, name=name)
        out = expect_tensor(out, (len(tokens),), ["row"], name, floating=False)
        if out.is_floating_point():
            raise CheckFailed(f"`{name}` should return integer class labels (torch.long).")
        if out.min() < 0 or out.max() > labels.max():
            raise CheckFailed(f"`{name}` returns labels outside the classes 0…{int(labels.max())}.")
        types = tokens.unique()
        mixed = sum(len(out[tokens == t].unique()) > 1 for t in types)
        if mixed:
            raise CheckFailed(
                f"`{name}` gives {mixed} of {len(types)} token types more than one label. A control label belongs "
                "to the word type: draw one label per type, then give it to every occurrence."
            )
        if torch.equal(out, labels):
            raise CheckFailed(f"`{name}` returns the real labels; the control task's labels are random.")
        per_type = torch.stack([out[tokens == t][0] for t in types])
        rare = own[types] != 0  # types whose own label is not the common one
        copied = (per_type[rare] == own[types][rare]).float().mean().item()
        if copied > 0.5:
            raise CheckFailed(
                f"`{name}` gives {copied:.0%} of word types their own real label (a random draw matches it about "
                "2% of the time): draw each type's label from the rows of *every* type, so that it says nothing "
                "about that type's real labels."
            )
        share = (per_type == 0).float().mean().item()
        if share < 0.65:
            raise CheckFailed(
                f"`{name}` gives label 0 to {share:.0%} of token types, but 80% of the real labels are 0. Draw each "
                "type's label from the real labels' distribution (e.g. the label of a random row)."
            )
        outs.append(out)
    if torch.equal(outs[0], outs[1]):
        raise CheckFailed(f"`{name}` gives the same labels for seeds 0 and 1: draw them with a seeded generator.")
    passed(name, "one label per token type, drawn from the labels' distribution")


def check_mass_mean_directions(fn: Callable) -> None:
    """fn(x [n, d], y [n], n_classes) -> [n_classes, d]: each class mean minus the mean of the class means."""
    name = _name(fn, "mass_mean_directions")
    g = torch.Generator().manual_seed(44)
    y = torch.cat([torch.zeros(300, dtype=torch.long), torch.randint(1, 5, (100,), generator=g)])
    x = torch.randn(400, 8, generator=g) + 2.0 + y[:, None] * torch.randn(1, 8, generator=g)
    out = expect_tensor(call(fn, x, y, 5, name=name), (5, 8), ["class", "d_model"], name)
    means = torch.stack([x[y == k].mean(0) for k in range(5)])
    ref = means - means.mean(0)
    hints = [
        (means, "those are the class means themselves: subtract the mean of the class means."),
        (means - x.mean(0), "you subtracted the mean of all rows, which weighs classes by their size: subtract the "
         "mean of the class means, so that each emotion counts once."),
    ]  # fmt: skip
    expect_close(out, ref, name, "directions", atol=1e-4, hints=hints)
    passed(name)


# --- geometry -------------------------------------------------------------------------------


def check_pca_2d(fn: Callable) -> None:
    """fn(points [n, d]) -> [n, 2]: the centred points' coordinates on their top two principal axes."""
    name = _name(fn, "pca_2d")
    g = torch.Generator().manual_seed(45)
    basis = torch.linalg.qr(torch.randn(10, 10, generator=g))[0]
    points = (torch.randn(12, 10, generator=g) * torch.tensor([5.0, 3.0, 1, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1])) @ basis
    points = points + 7.0
    out = expect_tensor(call(fn, points, name=name), (12, 2), ["point", "component"], name)
    centred = points - points.mean(0)
    ref = centred @ torch.linalg.svd(centred, full_matrices=False)[2][:2].T
    raw = points @ torch.linalg.svd(points, full_matrices=False)[2][:2].T
    if torch.allclose(_align(out, raw), raw, atol=1e-3):
        raise CheckFailed(
            f"`{name}`: centre the points first (subtract their mean); otherwise the first axis points at the mean."
        )
    expect_close(_align(out, ref), ref, name, "coordinates (up to the sign of each axis)", atol=1e-3)
    passed(name, "matches an SVD of the centred points, up to each axis's sign")


def _align(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``out`` with each column's sign flipped to agree with ``ref`` (a principal axis has no sign)."""
    signs = torch.sign((out.detach().float().cpu() * ref).sum(0))
    signs[signs == 0] = 1
    return out.detach().float().cpu() * signs


def _fisher_lee(a: torch.Tensor, b: torch.Tensor) -> float:
    i, j = torch.triu_indices(len(a), len(a), 1)
    x, z = torch.sin(a[i] - a[j]), torch.sin(b[i] - b[j])
    return float((x * z).sum() / (x.pow(2).sum() * z.pow(2).sum()).sqrt())


def check_circular_correlation(fn: Callable) -> None:
    """fn(a [n], b [n]) -> float: the Fisher–Lee circular correlation of two sets of angles (radians)."""
    name = _name(fn, "circular_correlation")
    g = torch.Generator().manual_seed(46)
    a = torch.rand(30, generator=g) * 2 * math.pi
    b = a + 0.6 * torch.randn(30, generator=g)
    cases = [
        (a, b, "noisy copies"),
        (a, (b + 2.5) % (2 * math.pi), "noisy copies, one rotated"),
        (a, -b, "noisy copies, one reflected"),
        (a, torch.rand(30, generator=g) * 2 * math.pi, "unrelated angles"),
    ]
    for x, z, what in cases:
        out = as_number(call(fn, x, z, name=name))
        ref = _fisher_lee(x, z)
        if not math.isfinite(out):
            raise CheckFailed(f"`{name}` should return one number (a float or a one-element tensor).")
        if abs(out - ref) > 1e-3:
            pearson = float(torch.corrcoef(torch.stack([x, z]))[0, 1])
            if abs(out - pearson) < 1e-3:
                raise CheckFailed(
                    f"`{name}` gives the ordinary correlation of the angles ({out:.3f}), which breaks where angles "
                    f"wrap round (359° is next to 1°); the circular one for {what} is {ref:.3f}. Compare sines of "
                    "differences over all pairs."
                )
            raise CheckFailed(f"`{name}` gives {out:.4f} for {what}; the Fisher–Lee correlation is {ref:.4f}.")
    passed(name, "matches Fisher–Lee on rotated, reflected and unrelated angles")


def check_fit_linear(fn: Callable) -> None:
    """fn(x [n, d], y [n], l2) -> (w [d], b): ridge regression with an unpenalised intercept."""
    name = _name(fn, "fit_linear")
    g = torch.Generator().manual_seed(47)
    x = torch.randn(200, 6, generator=g) * 3 + 5
    y = x @ torch.randn(6, generator=g) + 10 + torch.randn(200, generator=g)
    l2 = 50.0
    out = call(fn, x, y, l2, name=name)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise CheckFailed(f"`{name}` should return a pair (w, b): weights [d] and an intercept.")
    w, b = out
    w = expect_tensor(w, (6,), ["feature"], name + " (w)")
    b = as_number(b)
    if not math.isfinite(b):
        raise CheckFailed(f"`{name}`: the intercept b should be one number.")
    xc, yc = x - x.mean(0), y - y.mean()
    ref_w = torch.linalg.solve(xc.T @ xc + l2 * torch.eye(6), xc.T @ yc)
    ref_b = float(y.mean() - x.mean(0) @ ref_w)
    a = torch.cat([x, torch.ones(200, 1)], 1)
    both = torch.linalg.solve(a.T @ a + l2 * torch.eye(7), a.T @ y)
    plain = torch.linalg.solve(x.T @ x + l2 * torch.eye(6), x.T @ y)
    hints = [
        (both[:6], "the intercept is penalised too: centre x and y, fit w on the centred data, then b = ȳ − x̄·w."),
        (plain, "there is no intercept: centre x and y, fit w on the centred data, then b = ȳ − x̄·w."),
        (torch.linalg.lstsq(xc, yc[:, None]).solution[:, 0], "the penalty l2 is missing: solve (XᵀX + l2·I) w = Xᵀy."),
    ]
    expect_close(w, ref_w, name, "weights", atol=1e-3, rtol=1e-3, hints=hints)
    if abs(b - ref_b) > 1e-2:
        raise CheckFailed(f"`{name}`'s intercept is {b:.4f}, expected ȳ − x̄·w = {ref_b:.4f}.")
    passed(name)


def check_neuron_cosines(fn: Callable, model) -> None:
    """fn(direction [d_model], W_out [layer, d_mlp, d_model]) -> [layer, d_mlp] cosines."""
    name = _name(fn, "neuron_cosines")
    W_out = model.W_out.detach()
    L, d_mlp, d = W_out.shape
    g = torch.Generator().manual_seed(48)
    direction = (torch.randn(d, generator=g) * 3).to(W_out.device, W_out.dtype)
    out = expect_tensor(call(fn, direction, W_out, name=name), (L, d_mlp), ["layer", "neuron"], name)
    ref = torch.nn.functional.cosine_similarity(W_out, direction, dim=-1)
    hints = [
        (W_out @ direction, "those are dot products: divide by the norms of both vectors (cosines lie in [−1, 1])."),
        (W_out @ direction / direction.norm(), "divide by each neuron's output-weight norm as well."),
    ]
    expect_close(out, ref, name, "cosines", atol=1e-4, hints=hints)
    passed(name)
