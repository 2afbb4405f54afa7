"""Checks for lesson 04, linear probes: ``check_<exercise>(your_function)``.

Each check runs the learner's function on fresh inputs (fresh Storyworld narratives, or small
synthetic problems whose answer is known) and compares with a reference written here. When an
answer is wrong, the check computes the common wrong answers the same way and names the
mistake whose result the learner's matches.

The probe check fits on a problem built so that the ways of training a probe can be told apart:
its features differ in scale by a factor of 1,000 and sit far from zero (as some directions of a
residual stream do), and its classes overlap, so that Adam on standardised features converges to
one answer in 300 steps while an unstandardised fit, a loop without ``zero_grad`` or one that
stops early lands elsewhere. The exercise seeds the probe's first weights (``seed``, 0 by
default), so the check's own fits of each mistake start from the same weights as the learner's
function; the check runs that function twice more with ``seed=1``, with torch's global generator
in two different states (restored afterwards), and asks for the same probe both times and another
probe than seed 0 gave: a function that ignores ``seed`` would make the lesson's comparison of
seeds compare a probe with itself.

The loop over stages is given a ``fit`` of the check's own, the nearest class mean, which is quick,
exact and records what it was given: so the check sees which stage's rows each probe learned from,
and whether they were the training rows, before it compares the hits with its own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from utils.checks.framework import (
    CheckFailed,
    as_number,
    call,
    call_own_generator,
    call_seeded,
    expect_close,
    expect_tensor,
    passed,
)
from utils.corpora import storyworld
from utils.corpora.emotions import label_tokens as _label_tokens
from utils.seeds import LESSON_04_CHECKS


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


# --- the dataset --------------------------------------------------------------------------


def _role(piece: str, a: int, b: int, start: int, subject_end: int) -> int:
    return 0 if b <= subject_end else 1 if any(ch.isalpha() for ch in piece) else 2


def _labels(
    text,
    offsets,
    sentences,
    inside=lambda a, b, start, end: a < end and b > start,
    role=_role,
    shift=0,
    naming=False,
    punctuation=True,
    first_emotion=0,
):
    """``label_tokens`` written with one of its parts swapped for a learner's wrong version."""
    rows = []
    for s in sentences:
        if "emotion" not in s or (s["names_emotion"] and not naming):
            continue
        start, end = s["span"]
        subject_end = start + len(s["subject"])
        for i, (a, b) in enumerate(offsets):
            if inside(a, b, start, end):
                r = role(text[a:b], a, b, start, subject_end)
                if r == 2 and not punctuation:
                    continue
                rows.append((i + shift, storyworld.EMOTIONS.index(s["emotion"]) + first_emotion, r))
    return rows


_NOT_OVERLAP = (
    "finds no subject token: the name's token begins with the space before the name, one character before the "
    "sentence's span, so a test for tokens inside the span misses it. Test for overlap instead: a < end and b > start."
)
# Wrong ways to label the tokens, each with what it gets wrong. A learner's function is matched
# with one of them only if it gives the same rows on every story.
_LABEL_MISTAKES = [
    (
        dict(naming=True),
        'keeps tokens of sentences that name the emotion ("Ann felt happy."): leave out every sentence whose '
        "`names_emotion` is true, so the probe cannot read the emotion's own word.",
    ),
    (
        dict(shift=1),
        "numbers the tokens from 1: `offsets` has no BOS, so the token at offsets[i] is token i. Use the index "
        "of its offset, as `enumerate(offsets)` gives it.",
    ),
    (
        dict(inside=lambda a, b, start, end: a <= end and b >= start),
        "also keeps the token just after a sentence, which starts where the sentence ends: a span [start, end) "
        "excludes its end, so test for overlap with a < end and b > start (strict).",
    ),
    (dict(inside=lambda a, b, start, end: a >= start and b <= end), _NOT_OVERLAP),
    (
        dict(punctuation=False),
        "leaves out the punctuation tokens: keep every token that overlaps the sentence, and give punctuation role 2.",
    ),
    (
        dict(role=lambda piece, a, b, start, subject_end: 0 if b <= subject_end else 1 if piece.isalpha() else 2),
        "gives the predicate's words role 2 (punctuation): a token's text starts with its space (' felt'), and "
        "' felt'.isalpha() is False. Give role 1 when any character is a letter.",
    ),
    (
        dict(role=lambda piece, a, b, start, subject_end: 0 if a <= subject_end else _role(piece, a, b, start, 0)),
        "gives role 0 (subject) to the token right after the name as well: a token is the subject's when it "
        "*ends* inside the name, b <= start + len(subject).",
    ),
    (
        dict(role=lambda piece, a, b, start, subject_end: _role(piece, a, b, start, start)),
        "never gives role 0 (subject): the name's token begins one character before the sentence (with its "
        "space), so test where it *ends*: role 0 when b <= start + len(subject).",
    ),
    (
        dict(
            role=lambda piece, a, b, start, subject_end: (
                0 if b == subject_end and a <= start else _role(piece, a, b, start, 0)
            )
        ),
        "gives role 0 only to a token that is the whole name: a tokenizer like SmolLM2's cuts some names in two "
        "(' Car' + 'ol'), and every piece of the name is the subject's. Give role 0 to each token that ends inside the "
        "name, b <= start + len(subject).",
    ),
    (
        dict(first_emotion=1),
        "counts the emotions from 1: the emotion index is the emotion's place in `storyworld.EMOTIONS`, "
        "`storyworld.EMOTIONS.index(s['emotion'])`, which counts from 0.",
    ),
]

_NO_EMOTION = (
    "The opening sentence has no subject and no `emotion` (nobody feels anything yet); if that is where it fails, "
    "skip a sentence when `'emotion' not in s`, as well as when its `names_emotion` is true."
)


def _names_cut_in_two(offsets, sentences) -> list[tuple[int, int]]:
    """``offsets`` with the name's token of every labelled sentence cut in two after its first two characters, as
    a tokenizer with a large vocabulary of other text cuts some names (' Ca' + 'rol')."""
    cut = set()
    for s in sentences:
        if "emotion" in s and not s["names_emotion"]:
            start, end = s["span"]
            cut |= {i for i, (a, b) in enumerate(offsets) if a < end and b > start and b == start + len(s["subject"])}
    out = []
    for i, (a, b) in enumerate(offsets):
        out += [(a, a + 2), (a + 2, b)] if i in cut and b - a > 2 else [(a, b)]
    return out


def check_label_tokens(fn: Callable, model) -> None:
    """fn(text, offsets, sentences) -> [(token index, emotion index, role index), ...]."""
    name = _name(fn, "label_tokens")
    docs = storyworld.sample_docs(seed=LESSON_04_CHECKS, n=12, family="narrative")
    cases, outs = [], []
    stories = []
    for doc in docs:
        enc = model.tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        stories.append((doc.text, offsets, doc.annotations["sentences"]))
    # the same stories with each name cut in two, as SmolLM2's tokenizer cuts some names
    stories += [(text, _names_cut_in_two(offsets, sentences), sentences) for text, offsets, sentences in stories[:4]]
    for text, offsets, sentences in stories:
        out = call(
            fn,
            text,
            offsets,
            sentences,
            name=name,
            explain={KeyError: _NO_EMOTION, ValueError: _NO_EMOTION, TypeError: _NO_EMOTION},
        )
        try:
            got = [tuple(int(v) for v in row) for row in out]
        except (TypeError, ValueError):
            rows = out if isinstance(out, (list, tuple)) else []
            if any(isinstance(v, str) for row in rows for v in (row if isinstance(row, (tuple, list)) else ())):
                raise CheckFailed(
                    f"`{name}` gives names where indices are needed: the emotion index is "
                    "`storyworld.EMOTIONS.index(emotion)` and the role is 0, 1 or 2 (subject, predicate, punctuation)."
                ) from None
            raise CheckFailed(
                f"`{name}` should return a list of (token index, emotion index, role index) triples of ints."
            ) from None
        if any(len(row) != 3 for row in got):
            raise CheckFailed(f"`{name}`: each entry should be a triple (token index, emotion index, role index).")
        cases.append((text, offsets, sentences))
        outs.append(got)
    wants = [_label_tokens(*case) for case in cases]
    if outs == wants:
        passed(
            name,
            f"labels every token of {len(docs)} fresh stories as the reference does, four of them again with "
            "the names cut in two",
        )
        return
    # a mistake that matches every story, then one that matches the stories as the model's tokenizer cuts them
    for named in (cases, cases[: len(docs)]):
        for options, message in _LABEL_MISTAKES:
            if all(_labels(*case, **options) == got for case, got in zip(named, outs)):
                raise CheckFailed(f"`{name}` {message}")
    (text, offsets, sentences), got, want = next((c, g, w) for c, g, w in zip(cases, outs, wants) if g != w)
    named = {i for s in sentences if s["names_emotion"] for i in _overlapping(offsets, s["span"])}
    if any(i in named for i, _, _ in got):
        raise CheckFailed(f"`{name}` {_LABEL_MISTAKES[0][1]}")
    if [i for i, _, _ in got] == [i for i, _, _ in want] and [e for _, e, _ in got] == [e for _, e, _ in want]:
        bad = next((g, w) for g, w in zip(got, want) if g != w)
        piece = text[offsets[bad[0][0]][0] : offsets[bad[0][0]][1]]
        raise CheckFailed(
            f"`{name}` gives token {bad[0][0]} ({piece!r}) role {bad[0][2]}, expected {bad[1][2]} "
            "(0 subject: the token ends inside the subject's name; 1 predicate: it holds a letter; "
            "2 punctuation: it does not)."
        )
    if {r for _, _, r in want} - {r for _, _, r in got} == {0}:
        raise CheckFailed(f"`{name}` {_NOT_OVERLAP}")
    if [i for i, _, _ in got] == [i for i, _, _ in want]:
        raise CheckFailed(
            f"`{name}` labels the right tokens with the wrong emotions: use the index of the sentence's "
            "`emotion` in `storyworld.EMOTIONS`."
        )
    if len(got) == len(want):
        raise CheckFailed(
            f"`{name}` keeps as many tokens as expected but not the same ones in {text[:60]!r}…: you have token "
            f"indices {[i for i, _, _ in got][:8]}…, expected {[i for i, _, _ in want][:8]}…. Keep each token that "
            "overlaps a sentence, with the index it has in `offsets`, in order."
        )
    raise CheckFailed(
        f"`{name}` keeps {len(got)} tokens of this story, expected {len(want)}: {text[:80]!r}… "
        "Keep every token that overlaps a sentence with an `emotion` that does not name it, in order."
    )


def _overlapping(offsets, span) -> list[int]:
    return [i for i, (a, b) in enumerate(offsets) if a < span[1] and b > span[0]]


def _documents(n: int) -> torch.Tensor:
    """``[row]``: the document of each row, ``n`` documents of 3 to 29 rows each, in order."""
    sizes = torch.randint(3, 30, (n,), generator=torch.Generator().manual_seed(41))
    return torch.repeat_interleave(torch.arange(n), sizes)


def check_split_by_document(fn: Callable) -> None:
    """fn(doc [row], test_fraction, seed) -> [row] bool: True for the rows of the test documents.

    A quarter of 39, 41, 43 and 45 documents is 9.75, 10.25, 10.75 and 11.25: round gives 10, 10,
    11 and 11, int 9, 10, 10 and 11, ceil 10, 11, 11 and 12, so each way of rounding gives its own
    counts.
    """
    name = _name(fn, "split_by_document")
    cases = [(39, 0), (39, 1), (39, 2), (41, 0), (43, 0), (45, 0)]
    counts, masks = [], []
    for n_docs, seed in cases:
        doc = _documents(n_docs)
        out = _split_mask(call_own_generator(fn, doc, 0.25, seed, name=name), doc, name)
        split = [bool(out[doc == d].any()) != bool(out[doc == d].all()) for d in range(n_docs)]
        if any(split):
            raise CheckFailed(
                f"`{name}` puts some rows of one document in the test set and others in the training set "
                f"({sum(split)} of {n_docs} documents are split). Choose whole documents: a token's neighbours share "
                "its story, so a token-level split lets the probe see the test stories while it trains."
            )
        again = call_own_generator(fn, doc, 0.25, seed, name=name)
        if not torch.equal(out, _split_mask(again, doc, name)):
            raise CheckFailed(
                f"`{name}` gives a different split for the same seed: draw with a generator seeded by `seed`, "
                "torch.Generator().manual_seed(seed)."
            )
        counts.append(int(sum(bool(out[doc == d].all()) for d in range(n_docs))))
        masks.append(out)
    wants = [round(0.25 * n) for n, _ in cases]
    if counts != wants:
        raise CheckFailed(f"`{name}` " + _count_mistake(counts, cases))
    if all(torch.equal(masks[0], m) for m in masks[1:3]):
        chosen = sorted({int(d) for d in _documents(39)[masks[0]].tolist()})
        if chosen in (list(range(10)), list(range(29, 39))):
            raise CheckFailed(
                f"`{name}` always takes the {'first' if chosen[0] == 0 else 'last'} documents: choose the test "
                "documents at random (a random permutation of the documents, from a generator seeded by `seed`)."
            )
        raise CheckFailed(
            f"`{name}` gives the same split for every seed: seed your generator with `seed` "
            "(torch.Generator().manual_seed(seed)), so that another seed gives another split."
        )
    passed(name, "whole documents, round(test_fraction × documents) of them, reproducible for a seed")


def _split_mask(out, doc: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor) and out.ndim == 1 and len(out) != len(doc) and len(out) <= doc.max() + 1:
        raise CheckFailed(
            f"`{name}` returns the chosen documents ({len(out)} values), not a mask of rows: return a [row] bool "
            "tensor that is True for every row of those documents, e.g. torch.isin(doc, chosen)."
        )
    if not isinstance(out, torch.Tensor) or out.dtype != torch.bool:
        what = type(out).__name__ if not isinstance(out, torch.Tensor) else f"a {out.dtype} tensor"
        raise CheckFailed(
            f"`{name}` should return a bool tensor, True for the rows of test documents, not {what} "
            "(the lesson combines the mask with others: TEST & WORD, ~TEST)."
        )
    return expect_tensor(out, (len(doc),), ["row"], name, floating=False)


def _count_mistake(counts: list[int], cases: list[tuple[int, int]]) -> str:
    sizes = [n for n, _ in cases]
    k = next(j for j, (c, n) in enumerate(zip(counts, sizes)) if c != round(0.25 * n))
    n, want = sizes[k], round(0.25 * sizes[k])
    f = f"{counts[k]} of {n} documents in the test set"
    if counts == [n - round(0.25 * n) for n in sizes]:
        return f"puts {f}: those are the training documents. Return True for the test documents, the chosen ones."
    if counts == [int(0.25 * n) for n in sizes]:
        return (
            f"puts {f}: int() rounds {0.25 * n:g} down. Use round(test_fraction × number of documents), which "
            f"gives {want}."
        )
    if counts == [math.ceil(0.25 * n) for n in sizes]:
        return (
            f"puts {f}: math.ceil rounds {0.25 * n:g} up. Use round(test_fraction × number of documents), which "
            f"gives {want}."
        )
    if counts == sizes:
        return (
            f"puts {f}, every one: you counted rows (len(doc)), not documents. The number of documents is "
            "len(doc.unique())."
        )
    return (
        f"puts {f}; with test_fraction 0.25 that should be round(0.25 × {n}) = {want}. Choose exactly that many "
        "(the first ones of a random permutation of the documents), not each document with probability 0.25."
    )


# --- probes ---------------------------------------------------------------------------------

_PROBE_ROWS, _PROBE_FEATURES, _PROBE_CLASSES = 1000, 12, 8
_PROBE_STEPS, _PROBE_LR, _PROBE_SEED = 300, 1e-2, 0  # the exercise's defaults
# A probe whose logits differ from the reference's by less than this (relative, after centring each
# row: a softmax ignores a constant per row) is right. A little weight decay, AdamW, a biased standard
# deviation: 0.005 or less; another start, 3,000 steps or L-BFGS to convergence: 0.025; 200 steps:
# 0.06; each mistake the check names: 0.19 (only centring) to 50.
_PROBE_TOLERANCE = 0.1


@functools.cache
def _probe_problem() -> tuple[torch.Tensor, torch.Tensor]:
    """8 overlapping classes in 12 features whose scales run from 0.03 to 30, far from zero."""
    g = torch.Generator().manual_seed(LESSON_04_CHECKS)
    means = torch.randn(_PROBE_CLASSES, _PROBE_FEATURES, generator=g)
    y = torch.randint(_PROBE_CLASSES, (_PROBE_ROWS,), generator=g)
    x = means[y] + 3.0 * torch.randn(_PROBE_ROWS, _PROBE_FEATURES, generator=g)
    scale = torch.logspace(-1.5, 1.5, _PROBE_FEATURES)[torch.randperm(_PROBE_FEATURES, generator=g)]
    offset = 15.0 * torch.randn(_PROBE_FEATURES, generator=g)
    return (x + offset) * scale, y


def _standardisation(x: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor]:
    ones, zeros = torch.ones(x.shape[1]), torch.zeros(x.shape[1])
    return {
        "feature": lambda: (x.mean(0), x.std(0)),
        "none": lambda: (zeros, ones),
        "centre": lambda: (x.mean(0), ones),
        "scale": lambda: (zeros, x.std(0)),
        "one std": lambda: (x.mean(0), x.std() * ones),
    }[how]()


def _fit(
    standardise: str = "feature",
    steps: int = _PROBE_STEPS,
    lr: float = _PROBE_LR,
    zero_grad: bool = True,
    optimiser: str = "adam",
    loss: str = "cross_entropy",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)`` on raw x of a probe trained as the exercise says, or with one part changed."""
    x, y = _probe_problem()
    with torch.random.fork_rng():
        torch.manual_seed(_PROBE_SEED)  # as the exercise seeds it: the same first weights as the learner's
        probe = torch.nn.Linear(x.shape[1], _PROBE_CLASSES)
    mu, sd = _standardisation(x, standardise)
    z = (x - mu) / sd
    opt = (torch.optim.Adam if optimiser == "adam" else torch.optim.SGD)(probe.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            if zero_grad:
                opt.zero_grad()
            logits = probe(z)
            if loss == "nll":
                objective = torch.nn.functional.nll_loss(logits, y)
            elif loss == "softmax":
                objective = torch.nn.functional.cross_entropy(logits.softmax(-1), y)
            else:
                objective = torch.nn.functional.cross_entropy(logits, y)
            objective.backward()
            opt.step()
    with torch.no_grad():
        weight = probe.weight / sd
        return weight, probe.bias - weight @ mu


# Wrong ways to train the probe: how the check's own fit reproduces each, and what it gets wrong.
_UNTRAINED = (
    "is not trained: its weights are where torch.nn.Linear starts. Each step: zero the gradients, compute the "
    "cross-entropy of probe(z) against y, call backward(), then opt.step()."
)
_TRAINING_MISTAKES = {
    "untrained": (dict(steps=0), _UNTRAINED),
    "untrained, raw": (dict(steps=0, standardise="none"), _UNTRAINED),
    "no standardisation": (
        dict(standardise="none"),
        "trains on raw x, without standardising: on features whose scales differ (here by a factor of 1,000) Adam "
        "at lr 1e-2 cannot fit them in 300 steps. Standardise inside, z = (x − x.mean(0)) / x.std(0), train on z, "
        "then fold the mean and scale back into the weights.",
    ),
    "centre only": (
        dict(standardise="centre"),
        "only subtracts the mean: divide each feature by its standard deviation as well, so that Adam's steps "
        "mean the same for every feature.",
    ),
    "scale only": (
        dict(standardise="scale"),
        "divides by the standard deviation but does not subtract the mean: standardise with both, "
        "(x − x.mean(0)) / x.std(0), and fold the mean into the bias.",
    ),
    "one std": (
        dict(standardise="one std"),
        "divides every feature by one standard deviation over all entries (x.std()): standardise each feature "
        "with its own, x.std(0).",
    ),
    "no zero_grad": (
        dict(zero_grad=False),
        "never zeroes the gradients, so each backward() adds to all the earlier steps' gradients: call "
        "opt.zero_grad() at the start of every step.",
    ),
    "30 steps": (
        dict(steps=30),
        "stops far too early: it matches 30 steps of Adam. Run all `steps` (300) of them.",
    ),
    "lr 1e-3": (
        dict(lr=1e-3),
        "learns too slowly: it matches Adam's own default learning rate, 1e-3. Pass the function's `lr` (1e-2): "
        "torch.optim.Adam(probe.parameters(), lr=lr).",
    ),
    "SGD": (
        dict(optimiser="sgd"),
        "matches plain SGD at lr 1e-2, which barely moves in 300 steps: use torch.optim.Adam.",
    ),
    "nll_loss": (
        dict(loss="nll"),
        "uses F.nll_loss on the logits, which expects log-probabilities, so it only pushes the right logit up "
        "without limit: use F.cross_entropy(logits, y), which takes the log-softmax itself.",
    ),
    "softmax first": (
        dict(loss="softmax"),
        "takes a softmax before F.cross_entropy, which takes its own: pass the logits themselves.",
    ),
}

# Wrong ways to fold the standardisation back: from the returned weight and bias, the probe on
# standardised features z = (x − μ) / σ that the learner trained, if that was their mistake.
_FOLD_MISTAKES = [
    (
        lambda w, b, mu, sd: (w, b),
        "returns the probe for standardised x: fold the standardisation back in (weight / std, then "
        "bias − weight @ mean) so that the probe takes raw x, as the lesson calls it.",
    ),
    (
        lambda w, b, mu, sd: (w / sd, b + w @ mu),
        "multiplies the weights by the standard deviation: divide them, weight / std, since the probe saw "
        "(x − mean) / std.",
    ),
    (
        lambda w, b, mu, sd: (w * sd, b + (w * sd) @ mu),
        "folds the mean into the bias with the weights as they were before dividing them by the std: divide "
        "the weights first, then subtract (new weight) @ mean from the bias.",
    ),
    (
        lambda w, b, mu, sd: (w * sd, b),
        "divides the weights by the std but leaves the bias as it was: subtract weight @ mean from it too, since "
        "the probe saw x − mean.",
    ),
    (
        lambda w, b, mu, sd: (w * sd, b - w @ mu),
        "adds weight @ mean to the bias: subtract it, since W (x − mean) / std + b = (W / std) x + b − (W / std) mean.",
    ),
]


@functools.cache
def _probe_fit(mistake: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    return _fit(**(_TRAINING_MISTAKES[mistake][0] if mistake else {}))


def _centred_logits(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    logits = x @ weight.T + bias
    return logits - logits.mean(-1, keepdim=True)


def _distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _training_error(e: CheckFailed) -> CheckFailed:
    text = str(e.args[0])
    if "does not require grad" in text:
        return CheckFailed(
            f"{text} Training needs gradients, which the lesson switched off: put the loop inside "
            "`with torch.enable_grad():`."
        )
    if "leaf Variable" in text or "in-place operation" in text:
        return CheckFailed(
            f"{text} Fold the standardisation into the weights after training, under `with torch.no_grad():`."
        )
    return e


def _probe_weights(probe, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The returned probe's weight and bias, once it is known to be the linear map they define."""
    if not callable(probe):
        raise CheckFailed(f"`{name}` should return the trained probe (a torch.nn.Linear), not {type(probe).__name__}.")
    weight, bias = getattr(probe, "weight", None), getattr(probe, "bias", None)
    if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor):
        raise CheckFailed(
            f"`{name}` should return the torch.nn.Linear itself, with the standardisation folded into its weight "
            f"and bias (the lesson reads probe.weight), not a {type(probe).__name__} around it."
        )
    d, k = x.shape[1], _PROBE_CLASSES
    weight = expect_tensor(weight.detach().float(), (k, d), ["class", "feature"], f"{name}'s probe.weight")
    bias = expect_tensor(bias.detach().float(), (k,), ["class"], f"{name}'s probe.bias")
    logits = expect_tensor(call(probe, x, name="your probe"), (len(x), k), ["row", "class"], "your probe").float()
    linear = x @ weight.T + bias
    if not torch.allclose(logits, linear, atol=1e-3, rtol=1e-3):
        raise CheckFailed(
            f"`{name}`'s probe does not compute x @ probe.weight.T + probe.bias: fold the standardisation into "
            "the weight and bias of the torch.nn.Linear instead of applying it in the probe's forward."
        )
    return weight, bias


def _same_on_every_run(fn: Callable, name: str, x: torch.Tensor, y: torch.Tensor, weight, bias) -> None:
    """Run fn twice with seed=1, from two states of torch's global generator: a seeded fit gives the same
    probe both times, and another probe than ``(weight, bias)``, the one seed 0 gave.

    Two runs that end with torch's global generator in the same state, other than the state it had,
    reseeded it (torch.manual_seed outside torch.random.fork_rng): that leaves the lesson's later
    random draws fixed by the last probe trained, so it is named too.
    """
    explain = {
        TypeError: "The exercise's signature is train_probe(x, y, n_classes, steps=300, lr=1e-2, seed=0): "
        "take `seed` and seed the probe's first weights with it."
    }
    with torch.random.fork_rng():
        torch.manual_seed(LESSON_04_CHECKS)
        first = call(fn, x.clone(), y.clone(), _PROBE_CLASSES, seed=1, name=name, explain=explain)
        after_first = torch.get_rng_state()
        torch.manual_seed(LESSON_04_CHECKS + 1)
        before = torch.get_rng_state()
        again = call(fn, x.clone(), y.clone(), _PROBE_CLASSES, seed=1, name=name, explain=explain)
        after = torch.get_rng_state()
    w1, b1 = _probe_weights(first, name, x)
    w2, b2 = _probe_weights(again, name, x)
    if not (torch.equal(w2, w1) and torch.equal(b2, b1)):
        raise CheckFailed(
            f"`{name}` gives another probe each time it runs: its torch.nn.Linear draws its first weights from "
            "torch's global generator, which has moved on. Seed them with `seed`: create the Linear inside "
            "`with torch.random.fork_rng():` after `torch.manual_seed(seed)`."
        )
    if torch.equal(after, after_first) and not torch.equal(after, before):
        raise CheckFailed(
            f"`{name}` reseeds torch's global generator (torch.manual_seed), which fixes every later random draw "
            "in the notebook: call it inside `with torch.random.fork_rng():`, which puts the "
            "generator back as it was when the block ends."
        )
    if torch.equal(w1, weight) and torch.equal(b1, bias):
        raise CheckFailed(
            f"`{name}` gives the same probe for seed=0 and seed=1: it does not use `seed`. Seed the probe's first "
            "weights with it (`torch.manual_seed(seed)` inside `torch.random.fork_rng()`, then create the "
            "Linear), so that another seed starts the fit from other weights; the lesson's investigation compares "
            "probes trained from two seeds."
        )


def check_train_probe(fn: Callable) -> None:
    """fn(x [n, d], y [n], n_classes) -> a torch.nn.Linear mapping raw x [n, d] to logits [n, n_classes].

    Compared with the check's own fit, trained exactly as the exercise says (first weights seeded
    with 0, Adam, lr 1e-2, 300 full-batch steps of cross-entropy on standardised features, folded
    back), through the logits it gives on the training rows; run twice with seed=1, it must give the
    same probe both times, and another probe than with seed 0. A small weight decay (the lesson's
    1e-4) or none both pass.
    """
    name = _name(fn, "train_probe")
    x, y = _probe_problem()
    with torch.no_grad():  # as in the lesson, gradients off
        try:
            probe = call_seeded(fn, x.clone(), y.clone(), _PROBE_CLASSES, seed=LESSON_04_CHECKS, name=name)
        except CheckFailed as e:
            raise _training_error(e) from None
        weight, bias = _probe_weights(probe, name, x)
        _same_on_every_run(fn, name, x, y, weight, bias)
    want = _centred_logits(*_probe_fit(), x)
    got = _centred_logits(weight, bias, x)
    off = _distance(got, want)
    if off <= _PROBE_TOLERANCE:
        passed(name, "it fits as Adam on standardised features does (lr 1e-2, 300 steps), folded back for raw x")
        return
    mu, sd = _standardisation(x, "feature")
    z = (x - mu) / sd
    for unfold, message in _FOLD_MISTAKES:
        if _distance(_centred_logits(*unfold(weight, bias, mu, sd), z), want) <= _PROBE_TOLERANCE:
            raise CheckFailed(f"`{name}` {message}")
    distances = {}
    for mistake in _TRAINING_MISTAKES:  # from the same first weights, a mistake is reproduced to rounding
        distances[mistake] = _distance(got, _centred_logits(*_probe_fit(mistake), x))
        if distances[mistake] < 0.02:
            break
    nearest = min(distances, key=distances.get)
    if distances[nearest] < 0.5 * off:
        raise CheckFailed(f"`{name}` {_TRAINING_MISTAKES[nearest][1]}")
    loss = float(torch.nn.functional.cross_entropy(x @ weight.T + bias, y))
    ref_loss = float(torch.nn.functional.cross_entropy(x @ _probe_fit()[0].T + _probe_fit()[1], y))
    raise CheckFailed(
        f"`{name}`'s probe reaches a training loss of {loss:.3f}, where Adam on standardised features (lr 1e-2, 300 "
        f"full-batch steps) reaches {ref_loss:.3f}. Check each part: standardise each feature, zero the gradients "
        "every step, use `steps` and `lr`, and fold the mean and std back into the weight and bias."
    )


# --- the loop over stages ------------------------------------------------------------------------

_SWEEP_STAGES, _SWEEP_ROWS, _SWEEP_D, _SWEEP_CLASSES = 4, 240, 10, 12


def _sweep_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X [stage, row, d], labels [row], train [row] bool): twelve classes whose centres move apart stage by stage,
    so that each stage's probe is right at other rows, and about a third of the rows left out of the fits."""
    g = torch.Generator().manual_seed(49)
    labels = torch.arange(_SWEEP_ROWS) % _SWEEP_CLASSES  # every class at 20 rows
    labels = labels[torch.randperm(_SWEEP_ROWS, generator=g)]
    centres = torch.randn(_SWEEP_CLASSES, _SWEEP_D, generator=g)
    X = torch.stack(
        [
            0.35 * (s + 1) * centres[labels] + torch.randn(_SWEEP_ROWS, _SWEEP_D, generator=g)
            for s in range(_SWEEP_STAGES)
        ]
    )
    train = torch.rand(_SWEEP_ROWS, generator=g) < 2 / 3
    return X, labels, train


def _nearest_mean(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.nn.Linear:
    """The check's own quick probe: the nearest class mean, as a Linear that maps x to logits."""
    with torch.no_grad():
        means = torch.stack([x[y == k].mean(0) for k in range(n_classes)])
        probe = torch.nn.Linear(x.shape[1], n_classes)
        probe.weight.copy_(means)
        probe.bias.copy_(-0.5 * means.pow(2).sum(-1))
    return probe


def _scored(probes: list, X: torch.Tensor, labels: torch.Tensor, stages) -> torch.Tensor:
    """[stage, row]: probes[k] scored at stage stages[k]."""
    with torch.no_grad():
        return torch.stack([p(X[s]).argmax(-1) == labels for p, s in zip(probes, stages)])


def _fitted_where(x: torch.Tensor, X: torch.Tensor, train: torch.Tensor) -> tuple[int, str] | None:
    """(stage, which rows) of one fit's inputs: 'train', 'every' or 'test' rows of X[stage]; None if none."""
    for s in range(len(X)):
        for rows, mask in (("train", train), ("every", torch.ones_like(train)), ("test", ~train)):
            if x.shape == X[s][mask].shape and torch.equal(x.float(), X[s][mask].float()):
                return s, rows
    return None


def check_probe_every_stage(fn: Callable) -> None:
    """fn(X [stage, row, d], labels [row], train [row] bool, fit) -> [stage, row] bool: at each stage a probe
    ``fit(X[s][train], labels[train], 12)``, and whether it is right at every row of ``X[s]``.

    The check gives the loop a ``fit`` of its own (the nearest class mean, quick and exact) on a small problem whose
    classes move apart stage by stage, and records every fit: which stage's rows it was given, and which rows.
    """
    name = _name(fn, "probe_every_stage")
    X, labels, train = _sweep_problem()
    S, n = X.shape[:2]
    fits: list[tuple[torch.Tensor, torch.Tensor]] = []

    def fit(x, y, n_classes, *args, **kwargs):
        fits.append((torch.as_tensor(x).detach().clone(), torch.as_tensor(y).detach().clone()))
        return _nearest_mean(torch.as_tensor(x).detach(), torch.as_tensor(y).detach(), int(n_classes))

    with torch.no_grad():  # as in the lesson, gradients off
        out = call(fn, X.clone(), labels.clone(), train.clone(), fit, name=name)
    if not fits:
        raise CheckFailed(
            f"`{name}` never called the `fit` it was given, so the check cannot see which rows its probes learned "
            "from; fit every probe with the argument `fit` (the lesson passes your train_probe), fit(x, y, 12)."
        )
    where = [_fitted_where(x, X, train) for x, _ in fits]
    if any(w is not None and w[1] == "every" for w in where):
        raise CheckFailed(
            f"`{name}` fits its probes on every row, the test stories' included, so their score measures memory; "
            "fit each probe on the training rows alone, fit(X[s][train], labels[train], 12), and score it on every "
            "row."
        )
    if any(w is not None and w[1] == "test" for w in where):
        raise CheckFailed(
            f"`{name}` fits its probes on the test rows (~train); fit on the rows `train` marks, "
            "fit(X[s][train], labels[train], 12)."
        )
    if any(w is None for w in where):
        raise CheckFailed(
            f"`{name}` fits a probe on rows that are not the training rows of any stage ({tuple(fits[0][0].shape)} "
            f"for the first fit); give fit the training rows of one stage, X[s][train], shape "
            f"{tuple(X[0][train].shape)} here."
        )
    for (_, y), (s, _) in zip(fits, where):
        if not torch.equal(y.long(), labels[train]):
            raise CheckFailed(
                f"`{name}` fits the probe at stage {s} with other labels than those of its rows; give fit "
                "labels[train], in the same order as X[s][train]."
            )
    fitted = sorted({s for s, _ in where})
    if len(fits) == 1:
        raise CheckFailed(
            f"`{name}` fits one probe (on stage {fitted[0]}'s rows) for {S} stages; fit a new probe at each stage "
            "inside the loop, on that stage's rows X[s][train], and score it on X[s]."
        )
    missing = sorted(set(range(S)) - set(fitted))
    if missing == [S - 1]:
        raise CheckFailed(
            f"`{name}` fits no probe at the last stage (stage {S - 1} of 0…{S - 1}, after the last layer): the loop "
            "stops one short; loop over every stage, for s in range(X.shape[0]) (X holds L + 1 stages)."
        )
    if missing == [0]:
        raise CheckFailed(
            f"`{name}` fits no probe at stage 0, the embeddings: the loop starts at 1; loop over every stage from "
            "0, for s in range(X.shape[0])."
        )
    if missing:
        raise CheckFailed(
            f"`{name}` fits no probe at stages {missing} of 0…{S - 1}; loop over every stage, "
            "for s in range(X.shape[0])."
        )
    if isinstance(out, (list, tuple)):
        raise CheckFailed(
            f"`{name}` returned a {type(out).__name__}; stack the stages' rows into one tensor [stage, row], "
            "torch.stack(hits)."
        )
    if isinstance(out, torch.Tensor) and out.ndim == 1 and len(out) == S:
        raise CheckFailed(
            f"`{name}` returns one number per stage (an accuracy?), shape {tuple(out.shape)}; return whether the "
            "probe is right at every row, [stage, row] bool: the lesson takes the means on the rows it chooses, and "
            "its story-level errors need each row."
        )
    if (
        isinstance(out, torch.Tensor)
        and out.ndim == 2
        and out.shape[0] == S
        and out.shape[1]
        in (
            int((~train).sum()),
            int(train.sum()),
        )
    ):
        which = "test" if out.shape[1] == int((~train).sum()) else "training"
        raise CheckFailed(
            f"`{name}` returns the {which} rows only ({out.shape[1]} of {n}); score every row, probe(X[s]), and "
            "return [stage, row]: the lesson picks the test rows (and each role's) with its own masks."
        )
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (n, S):
        raise CheckFailed(
            f"`{name}` returned shape {tuple(out.shape)}, [row, stage]; stack the stages along the first "
            f"dimension, [stage, row] = {(S, n)} (torch.stack(hits), not torch.stack(hits, dim=1))."
        )
    out = expect_tensor(out, (S, n), ["stage", "row"], name, floating=False)
    if out.dtype != torch.bool:
        if not out.is_floating_point() and out.max() > 1:
            raise CheckFailed(
                f"`{name}` returns the predicted classes, not whether they are right; compare them with the "
                "labels, probe(X[s]).argmax(-1) == labels."
            )
        if not bool(((out == 0) | (out == 1)).all()):
            raise CheckFailed(
                f"`{name}` returns {out.dtype} values other than 0 and 1 (logits or probabilities?); return whether "
                "the probe's top class is the label, probe(X[s]).argmax(-1) == labels, a bool tensor."
            )
        out = out.bool()
    probes = [_nearest_mean(X[s][train], labels[train], _SWEEP_CLASSES) for s in range(S)]
    want = _scored(probes, X, labels, range(S))
    if torch.equal(out, want):
        passed(name, f"a probe fitted at each of {S} stages on the training rows, scored at every row")
        return
    hints = [
        (
            _scored([probes[-1]] * S, X, labels, range(S)),
            "scores every stage with the probe fitted at the last stage; score each stage with its own probe, "
            "inside the loop, right after fitting it: probe(X[s]).argmax(-1) == labels.",
        ),
        (
            _scored([probes[0]] * S, X, labels, range(S)),
            "scores every stage with the probe fitted at stage 0; score each stage with its own probe, inside the "
            "loop, right after fitting it: probe(X[s]).argmax(-1) == labels.",
        ),
        (
            _scored(probes, X, labels, [(s - 1) % S for s in range(S)]),
            "scores each stage's probe on the stage before it (X[s - 1]); score it on the stage it was fitted at, "
            "X[s].",
        ),
        (
            ~want,
            "returns where the probe is wrong; return where it is right, probe(X[s]).argmax(-1) == labels.",
        ),
    ]
    for wrong, message in hints:
        if torch.equal(out, wrong):
            raise CheckFailed(f"`{name}` {message}")
    s = int((out != want).sum(-1).argmax())
    raise CheckFailed(
        f"`{name}` gives other hits than the probe fitted at each stage: at stage {s}, "
        f"{int((out[s] != want[s]).sum())} of {n} rows differ. At each stage, fit on X[s][train] and "
        "labels[train], then compare probe(X[s]).argmax(-1) with labels."
    )


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
        out = call_own_generator(fn, tokens, labels, seed, name=name)
        out = expect_tensor(out, (len(tokens),), ["row"], name, floating=False)
        if out.is_floating_point():
            raise CheckFailed(f"`{name}` should return integer class labels (torch.long), not {out.dtype}.")
        if out.min() < 0 or out.max() > labels.max():
            raise CheckFailed(f"`{name}` returns labels outside the classes 0…{int(labels.max())}.")
        if torch.equal(out, labels):
            raise CheckFailed(f"`{name}` returns the real labels; the control task's labels are random.")
        types = tokens.unique()
        mixed = sum(len(out[tokens == t].unique()) > 1 for t in types)
        if mixed:
            raise CheckFailed(
                f"`{name}` gives {mixed} of {len(types)} token types more than one label. A control label belongs "
                "to the word type: draw one label per type, then give it to every occurrence."
            )
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
    others = torch.stack([means[k] - torch.cat([means[:k], means[k + 1 :]]).mean(0) for k in range(5)])
    hints = [
        (means, "those are the class means themselves: subtract the mean of the class means."),
        (
            means - x.mean(0),
            "you subtracted the mean of all rows, which weighs classes by their size: subtract the mean of the "
            "class means, so that each emotion counts once.",
        ),
        (
            others,
            "you subtracted the mean of the *other* classes' means, which is lesson 05's steering vector (larger by a "
            "factor n_classes / (n_classes − 1)): here subtract the mean of all the class means, the class's own "
            "included.",
        ),
        (-ref, "the sign is flipped: each class's mean minus the mean of the class means, not the other way round."),
        (
            ref / ref.norm(dim=-1, keepdim=True),
            "you normalised each direction to length 1: return the differences themselves.",
        ),
        (
            means - means.mean(1, keepdim=True),
            "you averaged each class mean over its d_model entries: average over the classes (dim 0), one mean "
            "vector [d_model] to subtract from every class mean.",
        ),
    ]
    expect_close(out, ref, name, "directions", atol=1e-4, hints=hints)
    passed(name)


# --- geometry -------------------------------------------------------------------------------


def _pca_points() -> torch.Tensor:
    g = torch.Generator().manual_seed(45)
    basis = torch.linalg.qr(torch.randn(10, 10, generator=g))[0]
    spread = torch.tensor([5.0, 3.0, 1, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1])
    return (torch.randn(12, 10, generator=g) * spread) @ basis + 7.0


def check_pca_2d(fn: Callable) -> None:
    """fn(points [n, d]) -> [n, 2]: the centred points' coordinates on their top two principal axes.

    The function runs with torch's global generator seeded (and restored afterwards), so that a
    randomised method gives the same answer every time the check runs; a second run with another
    seed shows whether it is one.
    """
    name = _name(fn, "pca_2d")
    points = _pca_points()

    def run(seed: int):
        return call_seeded(fn, points, seed=seed, name=name)

    out = run(LESSON_04_CHECKS)
    n, d = points.shape
    if isinstance(out, torch.Tensor) and tuple(out.shape) in ((2, d), (d, 2)):
        raise CheckFailed(
            f"`{name}` returns a {tuple(out.shape)} tensor, the axes themselves: return the points' coordinates "
            "on them, centred @ axes, [n, 2]."
        )
    out = expect_tensor(out, (n, 2), ["point", "component"], name)
    centred = points - points.mean(0)
    u, s, vh = torch.linalg.svd(centred, full_matrices=False)
    ref = centred @ vh[:2].T
    if torch.allclose(_align(out, ref), ref, atol=1e-3):
        passed(name, "matches an SVD of the centred points, up to each axis's sign")
        return
    values, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending
    standardised = centred / points.std(0)
    mistakes = [
        (
            points @ torch.linalg.svd(points, full_matrices=False)[2][:2].T,
            "centre the points first (subtract their mean); otherwise the first axis points at the mean.",
        ),
        (
            points @ vh[:2].T,
            "you projected the raw points on the centred points' axes: subtract the mean point before projecting, "
            "(points − points.mean(0)) @ Vh[:2].T; otherwise every coordinate is shifted by the mean's own.",
        ),
        (
            (points - points.mean(1, keepdim=True)) @ torch.linalg.svd(points - points.mean(1, keepdim=True))[2][:2].T,
            "you subtracted each point's own mean over its coordinates: subtract the mean point, points.mean(0).",
        ),
        (
            u[:, :2],
            "those are U's first two columns, the coordinates divided by their singular values: project the centred "
            "points on the axes, centred @ Vh[:2].T (or multiply U[:, :2] by S[:2]).",
        ),
        (
            centred @ vh[:, :2],
            "torch.linalg.svd returns Vh, whose *rows* are the axes: project on Vh[:2].T, not on Vh[:, :2] (its "
            "first two columns).",
        ),
        (
            centred @ vectors[:, :2],
            "those are the two axes of *least* variance: torch.linalg.eigh sorts the eigenvalues in ascending "
            "order, so the top two axes are its last two columns, largest last.",
        ),
        (
            ref.flip(-1),
            "the two components are in the wrong order: the first column is the axis of largest variance.",
        ),
        (
            standardised @ torch.linalg.svd(standardised, full_matrices=False)[2][:2].T,
            "you also divided each feature by its standard deviation: only centre the points (principal axes of "
            "the covariance, not the correlation matrix).",
        ),
    ]
    for wrong, message in mistakes:
        if torch.allclose(_align(out, wrong), wrong, atol=1e-3):
            raise CheckFailed(f"`{name}`: {message}")
    other = run(LESSON_04_CHECKS + 1)
    if not isinstance(other, torch.Tensor) or not torch.allclose(_align(other, out), out, atol=1e-5):
        raise CheckFailed(
            f"`{name}` gives other coordinates each time it runs: it is a randomised approximation (like "
            "torch.pca_lowrank or torch.svd_lowrank), which can miss the top axes by far more than rounding. Use "
            "the exact SVD, torch.linalg.svd, of the centred points."
        )
    expect_close(_align(out, ref), ref, name, "coordinates (up to the sign of each axis)", atol=1e-3)


def _align(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``out`` with each column's sign flipped to agree with ``ref`` (a principal axis has no sign)."""
    signs = torch.sign((out.detach().float().cpu() * ref).sum(0))
    signs[signs == 0] = 1
    return out.detach().float().cpu() * signs


def _fisher_lee(a: torch.Tensor, b: torch.Tensor) -> float:
    i, j = torch.triu_indices(len(a), len(a), 1)
    x, z = torch.sin(a[i] - a[j]), torch.sin(b[i] - b[j])
    return float((x * z).sum() / (x.pow(2).sum() * z.pow(2).sum()).sqrt())


def _pairs_ratio(a: torch.Tensor, b: torch.Tensor, f: Callable) -> float:
    """Fisher–Lee's ratio over the pairs i < j with f in place of the sine."""
    i, j = torch.triu_indices(len(a), len(a), 1)
    x, z = f(a[i] - a[j]), f(b[i] - b[j])
    return float((x * z).sum() / (x.pow(2).sum() * z.pow(2).sum()).sqrt())


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def _circular_mean(a: torch.Tensor) -> torch.Tensor:
    return torch.atan2(a.sin().mean(), a.cos().mean())


# Wrong ways to compute the correlation, each with what it gets wrong (matched on every case).
_CIRCULAR_MISTAKES: list[tuple[Callable[[torch.Tensor, torch.Tensor], float], str]] = [
    (
        _pearson,
        "gives the ordinary correlation of the angles, which breaks where angles wrap round (359° is next to "
        "1°): compare the sines of the differences over all pairs, Σ sin(aᵢ − aⱼ) sin(bᵢ − bⱼ) / √(Σ sin²(aᵢ − aⱼ) "
        "Σ sin²(bᵢ − bⱼ)).",
    ),
    (
        lambda a, b: abs(_fisher_lee(a, b)),
        "drops the sign: Fisher–Lee is −1 when one set of angles is the other reflected (b = −a), and the lesson "
        "reads that sign. Return the ratio itself, not its absolute value.",
    ),
    (
        lambda a, b: _fisher_lee(a, b) ** 2,
        "squares the correlation: divide by the square root of the product of the two sums of squares, "
        "√(Σ sin²(aᵢ − aⱼ) · Σ sin²(bᵢ − bⱼ)).",
    ),
    (
        lambda a, b: float(
            (lambda x, z: (x * z).sum() / (x.pow(2).sum() * z.pow(2).sum()))(
                *(torch.sin(v[:, None] - v[None, :]) for v in (a, b))
            )
        ),
        "divides by the product of the two sums of squares: divide by its square root.",
    ),
    (
        lambda a, b: float(
            (lambda x, z: (x * z).sum() / (x.pow(2).sum() * z.pow(2).sum()).sqrt())(
                *(torch.cos(v[:, None] - v[None, :]) for v in (a, b))
            )
        ),
        "uses the cosines of the differences: Fisher–Lee uses their sines, sin(aᵢ − aⱼ) sin(bᵢ − bⱼ), whose sign "
        "says which way round the circle one angle is from the other.",
    ),
    (
        lambda a, b: _pairs_ratio(a, b, torch.cos),
        "uses the cosines of the differences over the pairs: Fisher–Lee uses their sines, sin(aᵢ − aⱼ) "
        "sin(bᵢ − bⱼ), whose sign says which way round the circle one angle is from the other.",
    ),
    (
        lambda a, b: _pearson(a.sin(), b.sin()),
        "correlates sin a with sin b: Fisher–Lee compares the sines of the *differences* over all pairs, "
        "sin(aᵢ − aⱼ) with sin(bᵢ − bⱼ).",
    ),
    (
        lambda a, b: float(
            ((a - _circular_mean(a)).sin() * (b - _circular_mean(b)).sin()).sum()
            / ((a - _circular_mean(a)).sin().pow(2).sum() * (b - _circular_mean(b)).sin().pow(2).sum()).sqrt()
        ),
        "is Jammalamadaka and SenGupta's circular correlation (sines of the deviations from each set's circular "
        "mean): the exercise asks for Fisher–Lee, the sines of the differences over all pairs.",
    ),
]


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
    outs = []
    for x, z, _ in cases:
        out = as_number(call(fn, x, z, name=name))
        if not math.isfinite(out):
            raise CheckFailed(f"`{name}` should return one finite number (a float or a one-element tensor).")
        outs.append(out)
    refs = [_fisher_lee(x, z) for x, z, _ in cases]
    if all(abs(o - r) <= 1e-3 for o, r in zip(outs, refs)):
        passed(name, "matches Fisher–Lee on rotated, reflected and unrelated angles")
        return
    for mistake, message in _CIRCULAR_MISTAKES:
        if all(abs(mistake(x, z) - o) <= 1e-3 for (x, z, _), o in zip(cases, outs)):
            raise CheckFailed(f"`{name}` {message}")
    (_, _, what), out, ref = next((c, o, r) for c, o, r in zip(cases, outs, refs) if abs(o - r) > 1e-3)
    raise CheckFailed(f"`{name}` gives {out:.4f} for {what}; the Fisher–Lee correlation is {ref:.4f}.")


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
    if isinstance(b, torch.Tensor) and b.shape == (6,) and math.isfinite(as_number(w)):
        raise CheckFailed(f"`{name}` returns (b, w): return the weights first, (w, b).")
    w = expect_tensor(w, (6,), ["feature"], name + " (w)")
    b = as_number(b)
    if not math.isfinite(b):
        raise CheckFailed(f"`{name}`: the intercept b should be one number.")
    xc, yc = x - x.mean(0), y - y.mean()
    eye = torch.eye(6)
    ref_w = torch.linalg.solve(xc.T @ xc + l2 * eye, xc.T @ yc)
    ref_b = float(y.mean() - x.mean(0) @ ref_w)
    a = torch.cat([x, torch.ones(200, 1)], 1)
    both = torch.linalg.solve(a.T @ a + l2 * torch.eye(7), a.T @ y)
    plain = torch.linalg.solve(x.T @ x + l2 * eye, x.T @ y)
    hints = [
        (both[:6], "the intercept is penalised too: centre x and y, fit w on the centred data, then b = ȳ − x̄·w."),
        (plain, "there is no intercept: centre x and y, fit w on the centred data, then b = ȳ − x̄·w."),
        (torch.linalg.lstsq(xc, yc[:, None]).solution[:, 0], "the penalty l2 is missing: solve (XᵀX + l2·I) w = Xᵀy."),
        (
            torch.linalg.solve(xc.T @ xc + l2, xc.T @ yc),
            "you added l2 to every entry of XᵀX: add it to the diagonal only, XᵀX + l2·I (torch.eye).",
        ),
        (
            torch.linalg.solve(xc.T @ xc / len(x) + l2 * eye, xc.T @ yc / len(x)),
            "you averaged the squared errors (divided XᵀX and Xᵀy by n), which makes the penalty n times stronger: "
            "the objective sums them, so solve (XᵀX + l2·I) w = Xᵀy.",
        ),
        (
            torch.linalg.solve(x.T @ x + l2 * eye, x.T @ yc),
            "you centred y but not x: centre both, then solve on the centred data.",
        ),
    ]
    expect_close(w, ref_w, name, "weights", atol=1e-3, rtol=1e-3, hints=hints)
    if abs(b - ref_b) > 1e-2:
        if abs(b - float(y.mean())) <= 1e-2:
            raise CheckFailed(f"`{name}`'s intercept is ȳ = {b:.4f}: subtract x̄·w as well, b = ȳ − x̄·w = {ref_b:.4f}.")
        if abs(b - float(y.mean() + x.mean(0) @ ref_w)) <= 1e-2:
            raise CheckFailed(f"`{name}`'s intercept is ȳ + x̄·w: subtract x̄·w instead, b = ȳ − x̄·w = {ref_b:.4f}.")
        raise CheckFailed(f"`{name}`'s intercept is {b:.4f}, expected ȳ − x̄·w = {ref_b:.4f}.")
    passed(name)


def check_neuron_cosines(fn: Callable, model) -> None:
    """fn(direction [d_model], W_out [layer, d_mlp, d_model]) -> [layer, d_mlp] cosines."""
    name = _name(fn, "neuron_cosines")
    W_out = model.W_out.detach()
    L, d_mlp, d = W_out.shape
    g = torch.Generator().manual_seed(48)
    direction = (torch.randn(d, generator=g) * 3).to(W_out.device, W_out.dtype)
    out = call(
        fn,
        direction,
        W_out,
        name=name,
        explain={
            RuntimeError: "If that is a size mismatch, take each neuron's norm over d_model, the last dimension: "
            "W_out.norm(dim=-1) is [layer, d_mlp]."
        },
    )
    out = expect_tensor(out, (L, d_mlp), ["layer", "neuron"], name)
    ref = torch.nn.functional.cosine_similarity(W_out, direction, dim=-1)
    dots = W_out @ direction
    hints = [
        (dots, "those are dot products: divide by the norms of both vectors (cosines lie in [−1, 1])."),
        (dots / direction.norm(), "divide by each neuron's output-weight norm as well."),
        (dots / W_out.norm(dim=-1), "divide by the direction's norm as well."),
        (
            dots / (W_out.norm() * direction.norm()),
            "you divided by the norm of the whole matrix W_out: divide by each neuron's own norm, W_out.norm(dim=-1).",
        ),
        (
            dots / (W_out.norm(dim=(1, 2), keepdim=True)[..., 0] * direction.norm()),
            "you divided by the norm of each layer's whole W_out: divide by each neuron's own norm, "
            "W_out.norm(dim=-1).",
        ),
        (
            ref.abs(),
            "keep the sign: a neuron that writes against the direction has a negative cosine, and the lesson reads "
            "both ends.",
        ),
    ]
    expect_close(out, ref, name, "cosines", atol=1e-4, hints=hints)
    passed(name)
