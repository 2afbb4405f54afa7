"""Every lesson-04 check accepts a correct solution and rejects the stub and each plausible mistake,
naming the mistake.

The correct solutions here are written another way than the notebook's and the checks' references
(loops, one-hot matrices, closed forms, other optimisers), so a check that merely compared a
function with itself could not pass them all. The wrong answers are written as a learner would
write them, as small changes to a correct solution; each is rejected with the message that names
it. The model checks run on both tokenizer-sharing zoo models with MLPs.
"""

import math
import random
import re

import numpy as np
import pytest
import torch

from utils.checks import CheckFailed
from utils.checks import lesson04_probes as c
from utils.corpora import storyworld

F = torch.nn.functional

# --- label_tokens --------------------------------------------------------------------------


def label_tokens(text, offsets, sentences):
    rows = []
    for s in sentences:
        if "emotion" in s and not s["names_emotion"]:
            a0, b0 = s["span"]
            name_end = a0 + len(s["subject"])
            for i, (a, b) in enumerate(offsets):
                if max(a, a0) < min(b, b0):
                    word = re.search(r"[A-Za-z]", text[a:b]) is not None
                    rows.append((i, storyworld.EMOTIONS.index(s["emotion"]), 0 if b <= name_end else 1 if word else 2))
    return rows


def label_tokens_from_the_angle(text, offsets, sentences):
    """Emotion k sits at 30·k degrees, so the angle gives the index as well; roles from the name's end."""
    rows = []
    for s in sentences:
        if s.get("emotion") is None or s["names_emotion"]:
            continue
        start, end = s["span"]
        for i, (a, b) in enumerate(offsets):
            if a < end and b > start:
                piece = text[a:b].strip()
                role = 0 if a < start + len(s["subject"]) else 1 if piece.isalpha() or piece[:1].isalpha() else 2
                rows.append((i, s["angle"] // 30, role))
    return rows


def _labeller(
    inside=lambda a, b, start, end: a < end and b > start,
    role=None,
    shift=0,
    naming=False,
    punctuation=True,
    emotion=lambda s: storyworld.EMOTIONS.index(s["emotion"]),
    skip=lambda s: "emotion" not in s,
    first_sentence_only=False,
    order=None,
    names=False,
):
    """A learner's ``label_tokens`` with one or more of its parts written wrongly."""

    def default_role(piece, a, b, start, subject_end):
        return 0 if b <= subject_end else 1 if any(ch.isalpha() for ch in piece) else 2

    role = role or default_role

    def label_tokens(text, offsets, sentences):
        rows = []
        for s in sentences:
            if skip(s):
                continue
            e = emotion(s)
            if s["names_emotion"] and not naming:
                continue
            start, end = s["span"]
            subject_end = start + len(s["subject"])
            for i, (a, b) in enumerate(offsets):
                if inside(a, b, start, end):
                    r = role(text[a:b], a, b, start, subject_end)
                    if r == 2 and not punctuation:
                        continue
                    if names:
                        rows.append((i, s["emotion"], ("subject", "predicate", "punctuation")[r]))
                    else:
                        rows.append((i + shift, e, r))
            if first_sentence_only and rows:
                break
        return sorted(rows, key=order) if order else rows

    return label_tokens


def _isalpha(piece, a, b, start, subject_end):
    return 0 if b <= subject_end else 1 if piece.isalpha() else 2


def _after_name(piece, a, b, start, subject_end):
    return 0 if a <= subject_end else 1 if any(ch.isalpha() for ch in piece) else 2


def _both_role_mistakes(piece, a, b, start, subject_end):
    return 0 if a <= subject_end else 1 if piece.isalpha() else 2


def _name_inside(piece, a, b, start, subject_end):
    return 0 if a >= start and b <= subject_end else 1 if any(ch.isalpha() for ch in piece) else 2


def _first_characters_feeling(s):
    return storyworld.EMOTIONS.index(next(iter(s["feelings"].values())))


_CONTAINED = lambda a, b, start, end: a >= start and b <= end  # noqa: E731


def label_tokens_whole_names_only(text, offsets, sentences):
    """Role 0 only for a token whose text is the whole name: right on the course's tokenizer, where every
    name is one token, wrong where a tokenizer cuts a name in two."""
    rows = []
    for s in sentences:
        if "emotion" not in s or s["names_emotion"]:
            continue
        start, end = s["span"]
        for i, (a, b) in enumerate(offsets):
            if a < end and b > start:
                piece = text[a:b]
                role = 0 if piece.strip() == s["subject"] else 1 if any(ch.isalpha() for ch in piece) else 2
                rows.append((i, storyworld.EMOTIONS.index(s["emotion"]), role))
    return rows


LABEL_MISTAKES = {
    "keeps tokens of sentences that name the emotion": _labeller(naming=True),
    "numbers the tokens from 1": _labeller(shift=1),
    "also keeps the token just after a sentence": _labeller(inside=lambda a, b, start, end: a <= end and b >= start),
    "finds no subject token": _labeller(inside=_CONTAINED),
    "leaves out the punctuation tokens": _labeller(punctuation=False),
    "' felt'.isalpha() is False": _labeller(role=_isalpha),
    "role 0 (subject) to the token right after the name": _labeller(role=_after_name),
    "never gives role 0 (subject)": _labeller(role=_name_inside),
    "gives role 0 only to a token that is the whole name": label_tokens_whole_names_only,
    "counts the emotions from 1": _labeller(emotion=lambda s: storyworld.EMOTIONS.index(s["emotion"]) + 1),
    "The opening sentence has no subject and no `emotion`": _labeller(skip=lambda s: False),
    "gives names where indices are needed": _labeller(names=True),
    # two mistakes at once: no single wrong answer matches, the check's general tests name what is off
    "keeps tokens of sentences that name the emotion (": _labeller(naming=True, role=_isalpha),
    "(0 subject: the token ends inside the subject's name": _labeller(role=_both_role_mistakes),
    "finds no subject token: the name's token begins": _labeller(
        inside=_CONTAINED, emotion=lambda s: storyworld.EMOTIONS.index(s["emotion"]) + 1
    ),
    "labels the right tokens with the wrong emotions": _labeller(emotion=_first_characters_feeling),
    "keeps as many tokens as expected but not the same ones": _labeller(order=lambda r: r[2]),
    "Keep every token that overlaps a sentence with an `emotion`": _labeller(first_sentence_only=True),
    "should return a list of (token index, emotion index, role index) triples": lambda text, offsets, sentences: None,
    "each entry should be a triple": lambda text, offsets, sentences: [
        r[:2] for r in label_tokens(text, offsets, sentences)
    ],
}


def test_each_wrong_labelling_is_matched_by_its_own_message_first(model):
    """The check's own wrong answers differ from the reference on its stories, and none hides another."""
    docs = storyworld.sample_docs(seed=c.LESSON_04_CHECKS, n=12, family="narrative")
    cases = []
    for doc in docs:
        enc = model.tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
        cases.append((doc.text, [tuple(o) for o in enc["offset_mapping"]], doc.annotations["sentences"]))
    cases += [(text, c._names_cut_in_two(offsets, sentences), sentences) for text, offsets, sentences in cases[:4]]
    wants = [c._label_tokens(*case) for case in cases]
    for k, (options, message) in enumerate(c._LABEL_MISTAKES):
        outs = [c._labels(*case, **options) for case in cases]
        assert outs != wants, k
        first = next(m for o, m in c._LABEL_MISTAKES if [c._labels(*case, **o) for case in cases] == outs)
        assert first == message or first is message, k


# --- split_by_document -----------------------------------------------------------------------


def split_by_document(doc, test_fraction, seed):
    docs = sorted(set(doc.tolist()))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(docs), generator=g).tolist()
    chosen = {docs[i] for i in order[: round(test_fraction * len(docs))]}
    return torch.tensor([d in chosen for d in doc.tolist()])


def split_by_document_with_numpy(doc, test_fraction, seed):
    rng = np.random.default_rng(seed)
    docs = np.unique(doc.numpy())
    chosen = rng.choice(docs, size=round(test_fraction * len(docs)), replace=False)
    return torch.from_numpy(np.isin(doc.numpy(), chosen))


def _split(count=lambda f, n: round(f * n), pick="random", generator="own", complement=False, returns="mask"):
    """A learner's ``split_by_document`` with one part written wrongly."""

    def split_by_document(doc, test_fraction, seed):
        docs = doc.unique()
        n = len(docs) if count != "rows" else len(doc)
        k = round(test_fraction * n) if count == "rows" else count(test_fraction, n)
        if generator == "own":
            order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed))
        elif generator == "torch":
            torch.manual_seed(seed)
            order = torch.randperm(len(docs))
        elif generator == "numpy":
            np.random.seed(seed)
            order = torch.from_numpy(np.random.permutation(len(docs)))
        elif generator == "python":
            random.seed(seed)
            order = torch.tensor(random.sample(range(len(docs)), len(docs)))
        elif generator == "unseeded":
            order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(0))
        elif generator == "fresh":
            g = torch.Generator()
            g.seed()
            order = torch.randperm(len(docs), generator=g)
        if pick == "last":
            order = torch.arange(len(docs)).flip(0)
        if pick == "coin":
            chosen = docs[torch.rand(len(docs), generator=torch.Generator().manual_seed(seed)) < test_fraction]
        else:
            chosen = docs[order[:k]]
        if returns == "chosen":
            return chosen
        mask = torch.isin(doc, chosen)
        mask = ~mask if complement else mask
        return mask.long() if returns == "long" else mask

    return split_by_document


def _token_split(doc, test_fraction, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(len(doc), generator=g) < test_fraction


SPLIT_MISTAKES = {
    "rows of one document": _token_split,
    "always takes the last documents": _split(pick="last"),
    "uses (or reseeds) torch's global random generator": _split(generator="torch"),
    "uses (or reseeds) NumPy's global random generator": _split(generator="numpy"),
    "uses (or reseeds) Python's global random generator": _split(generator="python"),
    "int() rounds 9.75 down": _split(count=lambda f, n: int(f * n)),
    "math.ceil rounds 10.25 up": _split(count=lambda f, n: math.ceil(f * n)),
    "those are the training documents": _split(complement=True),
    "you counted rows (len(doc)), not documents": _split(count="rows"),
    "not each document with probability 0.25": _split(pick="coin"),
    "returns the chosen documents": _split(returns="chosen"),
    "should return a bool tensor": _split(returns="long"),
    "same split for every seed: seed your generator": _split(generator="unseeded"),
    "different split for the same seed": _split(generator="fresh"),
}


# --- train_probe -----------------------------------------------------------------------------


def _probe(
    standardise="feature",
    steps=None,
    lr=None,
    zero_grad=True,
    optimiser="adam",
    loss="cross_entropy",
    fold="right",
    grad="on",
    returns="linear",
    weight_decay=0.0,
    start="seeded",
):
    """A learner's ``train_probe`` (the notebook's signature) with one part written as given."""

    def train_probe(x, y, n_classes, steps_=300, lr_=1e-2, seed=0):
        n_steps, rate = steps if steps is not None else steps_, lr if lr is not None else lr_
        if standardise == "feature":
            mu, sd = x.mean(0), x.std(0) + 1e-6
        elif standardise == "biased":
            mu, sd = x.mean(0), x.std(0, unbiased=False)
        elif standardise == "none":
            mu, sd = torch.zeros(x.shape[1]), torch.ones(x.shape[1])
        elif standardise == "centre":
            mu, sd = x.mean(0), torch.ones(x.shape[1])
        elif standardise == "scale":
            mu, sd = torch.zeros(x.shape[1]), x.std(0)
        elif standardise == "one std":
            mu, sd = x.mean(0), x.std() * torch.ones(x.shape[1])
        z = (x - mu) / sd
        if start == "seeded":
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                probe = torch.nn.Linear(x.shape[1], n_classes)
        elif start == "global seed":  # torch.manual_seed without fork_rng
            torch.manual_seed(seed)
            probe = torch.nn.Linear(x.shape[1], n_classes)
        elif start == "zeros":  # a sound fit for a convex loss, but `seed` then changes nothing
            probe = torch.nn.Linear(x.shape[1], n_classes)
            torch.nn.init.zeros_(probe.weight), torch.nn.init.zeros_(probe.bias)
        elif start == "fixed seed":  # seeded, but always with 0 whatever `seed` says
            with torch.random.fork_rng():
                torch.manual_seed(0)
                probe = torch.nn.Linear(x.shape[1], n_classes)
        else:  # "unseeded": from wherever torch's global generator is
            probe = torch.nn.Linear(x.shape[1], n_classes)
        params = probe.parameters()
        opt = {
            "adam": lambda: torch.optim.Adam(params, lr=rate, weight_decay=weight_decay),
            "adam default": lambda: torch.optim.Adam(params),
            "adamw": lambda: torch.optim.AdamW(params, lr=rate),
            "sgd": lambda: torch.optim.SGD(params, lr=rate),
        }[optimiser]()

        def train():
            for _ in range(n_steps):
                if zero_grad:
                    opt.zero_grad()
                logits = probe(z)
                if loss == "nll":
                    F.nll_loss(logits, y).backward()
                elif loss == "softmax":
                    F.cross_entropy(logits.softmax(-1), y).backward()
                else:
                    F.cross_entropy(logits, y).backward()
                opt.step()
            if grad == "fold inside":
                probe.weight /= sd

        if grad == "off":
            train()
        else:
            with torch.enable_grad():
                train()
        with torch.no_grad():
            if fold == "right":
                probe.weight /= sd
                probe.bias -= probe.weight @ mu
            elif fold == "times":
                probe.weight *= sd
                probe.bias -= probe.weight @ mu
            elif fold == "bias first":
                probe.bias -= probe.weight @ mu
                probe.weight /= sd
            elif fold == "weight only":
                probe.weight /= sd
            elif fold == "bias sign":
                probe.weight /= sd
                probe.bias += probe.weight @ mu
        if returns == "lambda":
            return lambda t: probe(t)
        if returns == "weight":
            return probe.weight
        if returns == "standardising module":
            return _Standardising(probe, mu, sd)
        return probe

    return train_probe


class _Standardising(torch.nn.Linear):
    """A Linear that standardises its input itself (with the unfolded weights)."""

    def __init__(self, probe, mu, sd):
        super().__init__(probe.in_features, probe.out_features)
        with torch.no_grad():
            self.weight.copy_(probe.weight * sd)
            self.bias.copy_(probe.bias + probe.weight @ mu)
        self.mu, self.sd = mu, sd

    def forward(self, x):
        return super().forward((x - self.mu) / self.sd)


def train_probe_lbfgs(x, y, n_classes, seed=0):
    """Another optimiser, run to convergence from seeded first weights: the check's problem has one answer
    that both reach, and another seed still gives (slightly) other weights."""
    mu, sd = x.mean(0), x.std(0)
    z = (x - mu) / sd
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(probe.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(probe(z), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    folded = torch.nn.Linear(x.shape[1], n_classes)  # a second Linear, its weights set from the first
    with torch.no_grad():
        folded.weight.copy_(probe.weight / sd)
        folded.bias.copy_(probe.bias - folded.weight @ mu)
    return folded


def train_probe_other_start(x, y, n_classes, seed=0):
    """Seeded with another seed than the one asked, so it starts from other weights than the check's."""
    return _probe()(x, y, n_classes, seed=seed + 7)


def train_probe_drawing_first(x, y, n_classes, seed=0):
    """Draws from torch's global generator before its seeded Linear: still the same probe on every run."""
    torch.randn(5)
    return _probe()(x, y, n_classes, seed=seed)


def train_probe_without_seed(x, y, n_classes):
    """A correct fit whose signature leaves out `seed`: the lesson calls it with seed=1."""
    return _probe()(x, y, n_classes)


PROBE_MISTAKES = {
    "is not trained": _probe(steps=0),
    "Training needs gradients": _probe(grad="off"),
    "trains on raw x, without standardising": _probe(standardise="none"),
    "only subtracts the mean": _probe(standardise="centre"),
    "does not subtract the mean": _probe(standardise="scale"),
    "one standard deviation over all entries": _probe(standardise="one std"),
    "never zeroes the gradients": _probe(zero_grad=False),
    "it matches 30 steps of Adam": _probe(steps=30),
    "Adam's own default learning rate, 1e-3": _probe(optimiser="adam default"),
    "plain SGD": _probe(optimiser="sgd"),
    "F.nll_loss on the logits": _probe(loss="nll"),
    "takes a softmax before F.cross_entropy": _probe(loss="softmax"),
    "returns the probe for standardised x": _probe(fold="none"),
    "multiplies the weights by the standard deviation": _probe(fold="times"),
    "with the weights as they were before dividing them": _probe(fold="bias first"),
    "leaves the bias as it was": _probe(fold="weight only"),
    "adds weight @ mean to the bias": _probe(fold="bias sign"),
    "should return the torch.nn.Linear itself": _probe(returns="lambda"),
    "should return the trained probe (a torch.nn.Linear), not Parameter": _probe(returns="weight"),
    "does not compute x @ probe.weight.T + probe.bias": _probe(returns="standardising module"),
    "under `with torch.no_grad():`": _probe(grad="fold inside"),
    "reaches a training loss of": _probe(steps=100),
    "gives another probe each time it runs": _probe(start="unseeded"),
    "reseeds torch's global generator": _probe(start="global seed"),
    "gives the same probe for seed=0 and seed=1: it does not use `seed`": _probe(start="fixed seed"),
    "gives the same probe for seed=0 and seed=1": _probe(start="zeros"),
    "take `seed` and seed the probe's first weights with it": train_probe_without_seed,
}


def test_each_training_mistake_is_far_from_the_reference_and_nearest_to_itself():
    x, _ = c._probe_problem()
    want = c._centred_logits(*c._probe_fit(), x)
    fits = {m: c._centred_logits(*c._probe_fit(m), x) for m in c._TRAINING_MISTAKES}
    for m, logits in fits.items():
        assert c._distance(logits, want) > 1.5 * c._PROBE_TOLERANCE, m
        others = {o: c._distance(logits, f) for o, f in fits.items() if o != m and f is not logits}
        near = [o for o, d in others.items() if d < 1e-6]
        assert all(c._TRAINING_MISTAKES[o][1] == c._TRAINING_MISTAKES[m][1] for o in near), m


def test_the_probe_check_runs_the_function_with_gradients_off_and_leaves_the_global_generator_alone(capsys):
    seen = []

    def train_probe(x, y, n_classes, seed=0):
        seen.append(torch.is_grad_enabled())
        return _probe()(x, y, n_classes, seed=seed)

    state = torch.get_rng_state()
    c.check_train_probe(train_probe)
    assert "✓" in capsys.readouterr().out
    assert seen and not any(seen) and torch.equal(state, torch.get_rng_state())


# --- the loop over stages --------------------------------------------------------------------------


def probe_every_stage(X, labels, train, fit):
    """Written another way than the notebook's: the result filled into a tensor made first."""
    out = torch.zeros(X.shape[:2], dtype=torch.bool)
    for s, x in enumerate(X):
        out[s] = fit(x[train], labels[train], 12)(x).argmax(-1) == labels
    return out


def _sweep(stages=lambda S: range(S), rows=lambda train: train, score=lambda s, S: s, after_loop=None, end=None):
    """A learner's loop with one part written wrongly: the stages it visits, the rows it fits on, the stage
    it scores each probe at, a probe kept from the loop and used after it, or what it does with the hits."""

    def probe_every_stage(X, labels, train, fit):
        S, hits, probe = X.shape[0], [], None
        for s in stages(S):
            probe = fit(X[s][rows(train)], labels[rows(train)], 12)
            if after_loop is None:
                hits.append(probe(X[score(s, S)]).argmax(-1) == labels)
        if after_loop is not None:
            hits = [after_loop(probe, X, S)(X[s]).argmax(-1) == labels for s in range(S)]
        return end(hits) if end else torch.stack(hits)

    return probe_every_stage


def _one_probe(X, labels, train, fit):
    probe = fit(X[-1][train], labels[train], 12)
    return torch.stack([probe(x).argmax(-1) == labels for x in X])


def _global_fit(X, labels, train, fit):
    """Fits with a probe of its own instead of the argument."""
    return torch.stack([c._nearest_mean(x[train], labels[train], 12)(x).argmax(-1) == labels for x in X])


def _first_probe_kept(X, labels, train, fit):
    probes = [fit(x[train], labels[train], 12) for x in X]
    return torch.stack([probes[0](x).argmax(-1) == labels for x in X])


def _other_labels(X, labels, train, fit):
    y = labels[train][torch.randperm(int(train.sum()), generator=torch.Generator().manual_seed(0))]
    return torch.stack([fit(x[train], y, 12)(x).argmax(-1) == labels for x in X])


SWEEP_MISTAKES = {
    "fits its probes on every row": _sweep(rows=lambda train: torch.ones_like(train)),
    "fits its probes on the test rows": _sweep(rows=lambda train: ~train),
    "fits no probe at the last stage": _sweep(stages=lambda S: range(S - 1)),
    "fits no probe at stage 0, the embeddings": _sweep(stages=lambda S: range(1, S)),
    "fits one probe": _one_probe,
    "never called the `fit` it was given": _global_fit,
    "with other labels than those of its rows": _other_labels,
    "scores every stage with the probe fitted at the last stage": _sweep(after_loop=lambda probe, X, S: probe),
    "scores every stage with the probe fitted at stage 0": _first_probe_kept,
    "on the stage before it": _sweep(score=lambda s, S: s - 1),
    "returned a list": _sweep(end=list),
    "returns one number per stage": _sweep(end=lambda hits: torch.stack(hits).float().mean(-1)),
    "returns the test rows only": _sweep(end=lambda hits: torch.stack(hits)[:, ~_sweep_train()]),
    "[row, stage]": _sweep(end=lambda hits: torch.stack(hits, dim=1)),
    "returns the predicted classes": lambda X, labels, train, fit: torch.stack(
        [fit(x[train], labels[train], 12)(x).argmax(-1) for x in X]
    ),
    "values other than 0 and 1": lambda X, labels, train, fit: torch.stack(
        [fit(x[train], labels[train], 12)(x).softmax(-1).max(-1).values for x in X]
    ),
    "returns where the probe is wrong": _sweep(end=lambda hits: ~torch.stack(hits)),
}


def _sweep_train():
    return c._sweep_problem()[2]


def test_the_sweep_problem_has_every_class_among_the_training_rows_and_stages_that_differ():
    X, labels, train = c._sweep_problem()
    assert set(labels[train].tolist()) == set(range(c._SWEEP_CLASSES))
    probes = [c._nearest_mean(x[train], labels[train], 12) for x in X]
    hits = c._scored(probes, X, labels, range(len(X)))
    test = hits[:, ~train].float().mean(-1)
    assert all(a < b for a, b in zip(test, test[1:])), "later stages are easier"
    assert 0.2 < test[0] and test[-1] < 1, "no stage is at chance or perfect"
    leaked = c._scored([c._nearest_mean(x, labels, 12) for x in X], X, labels, range(len(X)))
    assert not torch.equal(leaked, hits), "fitting on every row changes the hits"


def test_the_sweep_check_accepts_the_hits_as_floats_of_0_and_1(capsys):
    c.check_probe_every_stage(lambda X, labels, train, fit: probe_every_stage(X, labels, train, fit).float())
    assert "✓" in capsys.readouterr().out


# --- control labels, directions ------------------------------------------------------------------


def control_labels(tokens, labels, seed):
    g = torch.Generator().manual_seed(seed + 100)
    table = {}
    for t in tokens.tolist():
        if t not in table:
            table[t] = labels[torch.randint(len(labels), (1,), generator=g)].item()
    return torch.tensor([table[t] for t in tokens.tolist()])


def _own_rows(tokens, labels, seed):
    """A type's label drawn from its own rows: the real label again, for a lexical word."""
    g = torch.Generator().manual_seed(seed)
    table = {}
    for t in tokens.unique().tolist():
        rows = labels[tokens == t]
        table[t] = rows[torch.randint(len(rows), (1,), generator=g)].item()
    return torch.tensor([table[t] for t in tokens.tolist()])


def _per_row(tokens, labels, seed):
    g = torch.Generator().manual_seed(seed)
    return labels[torch.randint(len(labels), (len(labels),), generator=g)]


def _row_labels(labels, n, g):
    """The labels of ``n`` random rows."""
    return labels[torch.randint(len(labels), (n,), generator=g)]


def _per_type(draw):
    def control_labels(tokens, labels, seed):
        g = torch.Generator().manual_seed(seed)
        types, which = tokens.unique(return_inverse=True)
        return draw(labels, len(types), g, seed)[which]

    return control_labels


CONTROL_MISTAKES = {
    "more than one label": _per_row,
    "distribution": _per_type(lambda labels, n, g, seed: torch.randint(int(labels.max()) + 1, (n,), generator=g)),
    "own real label": _own_rows,
    "returns the real labels": lambda tokens, labels, seed: labels.clone(),
    "integer class labels": _per_type(lambda labels, n, g, seed: _row_labels(labels, n, g).float()),
    "labels outside the classes": _per_type(lambda labels, n, g, seed: torch.randint(13, (n,), generator=g)),
    "same labels for seeds 0 and 1": _per_type(
        lambda labels, n, g, seed: labels[torch.randint(len(labels), (n,), generator=torch.Generator().manual_seed(0))]
    ),
    "uses (or reseeds) torch's global random generator": _per_type(
        lambda labels, n, g, seed: labels[torch.manual_seed(seed) and torch.randint(len(labels), (n,))]
    ),
}  # fmt: skip


def mass_mean_directions(x, y, n_classes):
    onehot = F.one_hot(y, n_classes).float()  # [n, class]
    means = (onehot.T @ x) / onehot.sum(0)[:, None]
    return means - means.sum(0) / n_classes


def _class_means(x, y, k):
    return torch.stack([x[y == j].mean(0) for j in range(k)])


MASS_MEAN_MISTAKES = {
    "class means themselves": _class_means,
    "mean of all rows": lambda x, y, k: _class_means(x, y, k) - x.mean(0),
    "lesson 05's steering vector": lambda x, y, k: torch.stack(
        [_class_means(x, y, k)[j] - _class_means(x, y, k)[torch.arange(k) != j].mean(0) for j in range(k)]
    ),
    "sign is flipped": lambda x, y, k: -mass_mean_directions(x, y, k),
    "normalised each direction": lambda x, y, k: F.normalize(mass_mean_directions(x, y, k), dim=-1),
    "average over the classes (dim 0)": lambda x, y, k: _class_means(x, y, k) - _class_means(x, y, k).mean(1, True),
}


# --- geometry ------------------------------------------------------------------------------------


def pca_2d(points):
    centred = points - points.mean(0)
    values, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending
    return centred @ vectors[:, [-1, -2]]


def pca_2d_from_u_and_s(points):
    u, s, _ = torch.linalg.svd(points - points.mean(0), full_matrices=False)
    return u[:, :2] * s[:2]


def pca_2d_lowrank_default(points):
    """torch.pca_lowrank with its default six components finds the top two of these points exactly."""
    _, _, v = torch.pca_lowrank(points)
    return (points - points.mean(0)) @ v[:, :2]


def _centred(points):
    return points - points.mean(0)


def _standardised(points):
    return _centred(points) / points.std(0)


def _svd_axes(points):
    return torch.linalg.svd(points, full_matrices=False)[2]


PCA_MISTAKES = {
    "centre the points first": lambda p: p @ _svd_axes(p)[:2].T,
    "raw points on the centred points' axes": lambda p: p @ _svd_axes(p - p.mean(0))[:2].T,
    "each point's own mean": lambda p: (p - p.mean(1, keepdim=True)) @ _svd_axes(p - p.mean(1, keepdim=True))[:2].T,
    "U's first two columns": lambda p: torch.linalg.svd(p - p.mean(0), full_matrices=False)[0][:, :2],
    "whose *rows* are the axes": lambda p: (p - p.mean(0)) @ _svd_axes(p - p.mean(0))[:, :2],
    "axes of *least* variance": lambda p: _centred(p) @ torch.linalg.eigh(_centred(p).T @ _centred(p))[1][:, :2],
    "components are in the wrong order": lambda p: (p - p.mean(0)) @ _svd_axes(p - p.mean(0))[[1, 0]].T,
    "divided each feature by its standard deviation": lambda p: _standardised(p) @ _svd_axes(_standardised(p))[:2].T,
    "the axes themselves": lambda p: _svd_axes(p - p.mean(0))[:2],
    "randomised approximation": lambda p: (p - p.mean(0)) @ torch.pca_lowrank(p, q=2)[2],
    "gives the wrong coordinates": lambda p: (p - p.mean(0)) @ _svd_axes(p - p.mean(0))[[0, 2]].T,
}  # fmt: skip


def circular_correlation(a, b):
    num = den_a = den_b = 0.0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            sa, sb = math.sin(a[i] - a[j]), math.sin(b[i] - b[j])
            num, den_a, den_b = num + sa * sb, den_a + sa * sa, den_b + sb * sb
    return num / math.sqrt(den_a * den_b)


def circular_correlation_over_every_ordered_pair(a, b):
    x, z = torch.sin(a[:, None] - a[None]), torch.sin(b[:, None] - b[None])  # the diagonal is 0
    return float((x * z).sum() / (x.pow(2).sum() * z.pow(2).sum()).sqrt())


def _sines(a, b):
    return torch.sin(a[:, None] - a[None]), torch.sin(b[:, None] - b[None])


def _jammalamadaka(a, b):
    ma, mb = torch.atan2(a.sin().mean(), a.cos().mean()), torch.atan2(b.sin().mean(), b.cos().mean())
    sa, sb = (a - ma).sin(), (b - mb).sin()
    return float((sa * sb).sum() / (sa.pow(2).sum() * sb.pow(2).sum()).sqrt())


def _cosine_pairs(a, b):
    """The pairs i < j, as the exercise asks, but with cosines in place of sines."""
    i, j = torch.triu_indices(len(a), len(a), 1)
    x, z = torch.cos(a[i] - a[j]), torch.cos(b[i] - b[j])
    return float((x * z).sum() / (x.pow(2).sum() * z.pow(2).sum()).sqrt())


CIRCULAR_MISTAKES = {
    "ordinary correlation of the angles": lambda a, b: torch.corrcoef(torch.stack([a, b]))[0, 1].item(),
    "drops the sign": lambda a, b: abs(circular_correlation(a, b)),
    "squares the correlation": lambda a, b: circular_correlation(a, b) ** 2,
    "divide by its square root": lambda a, b: float(
        (lambda x, z: (x * z).sum() / (x.pow(2).sum() * z.pow(2).sum()))(*_sines(a, b))
    ),
    "uses the cosines of the differences": lambda a, b: float(
        (lambda x, z: (x * z).sum() / (x.pow(2).sum() * z.pow(2).sum()).sqrt())(
            torch.cos(a[:, None] - a[None]), torch.cos(b[:, None] - b[None])
        )
    ),
    "cosines of the differences over the pairs": lambda a, b: _cosine_pairs(a, b),
    "correlates sin a with sin b": lambda a, b: torch.corrcoef(torch.stack([a.sin(), b.sin()]))[0, 1].item(),
    "Jammalamadaka and SenGupta": _jammalamadaka,
    "the Fisher–Lee correlation is": lambda a, b: float((lambda x, z: (x * z).sum())(*_sines(a, b))),
    "should return one finite number": lambda a, b: (lambda x, z: x * z)(*_sines(a, b)),  # forgot to sum
}


def fit_linear(x, y, l2):
    xm = x.mean(0)
    xc = x - xm
    w = torch.linalg.inv(xc.T @ xc + l2 * torch.eye(x.shape[1])) @ xc.T @ (y - y.mean())
    return w, float(y.mean() - xm @ w)


def fit_linear_by_augmented_rows(x, y, l2):
    """Ridge as least squares: the penalty is √l2·I appended below the centred data."""
    xm, ym = x.mean(0), y.mean()
    a = torch.cat([x - xm, math.sqrt(l2) * torch.eye(x.shape[1])])
    t = torch.cat([y - ym, torch.zeros(x.shape[1])])
    w = torch.linalg.lstsq(a, t[:, None]).solution[:, 0]
    return w, ym - xm @ w


def _ridge(x, y, l2, centre_x=True, centre_y=True, add=None, mean=False):
    xc = x - x.mean(0) if centre_x else x
    yc = y - y.mean() if centre_y else y
    n = len(x) if mean else 1
    w = torch.linalg.solve(xc.T @ xc / n + (add if add is not None else l2 * torch.eye(x.shape[1])), xc.T @ yc / n)
    return w


def _penalised_intercept(x, y, l2):
    a = torch.cat([x, torch.ones(len(x), 1)], 1)
    wb = torch.linalg.solve(a.T @ a + l2 * torch.eye(a.shape[1]), a.T @ y)
    return wb[:-1], wb[-1].item()


FIT_LINEAR_MISTAKES = {
    "intercept is penalised": _penalised_intercept,
    "there is no intercept": lambda x, y, l2: (_ridge(x, y, l2, centre_x=False, centre_y=False), 0.0),
    "the penalty l2 is missing": lambda x, y, l2: fit_linear(x, y, 0.0),
    "to the diagonal only": lambda x, y, l2: (_ridge(x, y, l2, add=l2), 0.0),
    "averaged the squared errors": lambda x, y, l2: (_ridge(x, y, l2, mean=True), 0.0),
    "centred y but not x": lambda x, y, l2: (_ridge(x, y, l2, centre_x=False), 0.0),
    "returns (b, w)": lambda x, y, l2: fit_linear(x, y, l2)[::-1],
    "intercept is ȳ =": lambda x, y, l2: (fit_linear(x, y, l2)[0], y.mean().item()),
    "intercept is ȳ + x̄·w": lambda x, y, l2: (lambda w, b: (w, b + 2 * float(x.mean(0) @ w)))(*fit_linear(x, y, l2)),
    "intercept is 0.0000": lambda x, y, l2: (fit_linear(x, y, l2)[0], 0.0),
    "should return a pair (w, b)": lambda x, y, l2: fit_linear(x, y, l2)[0],
    "the intercept b should be one number": lambda x, y, l2: (lambda w, b: (w, y - x @ w))(*fit_linear(x, y, l2)),
}  # fmt: skip


def neuron_cosines(direction, W_out):
    return F.cosine_similarity(W_out, direction[None, None], dim=-1)


def neuron_cosines_by_loops(direction, W_out):
    out = torch.zeros(W_out.shape[:2])
    for layer in range(W_out.shape[0]):
        for i in range(W_out.shape[1]):
            w = W_out[layer, i]
            out[layer, i] = (w @ direction) / (w.norm() * direction.norm())
    return out


NEURON_MISTAKES = {
    "those are dot products": lambda d, W: W @ d,
    "each neuron's output-weight norm as well": lambda d, W: W @ d / d.norm(),
    "the direction's norm as well": lambda d, W: W @ d / W.norm(dim=-1),
    "norm of the whole matrix W_out": lambda d, W: W @ d / (W.norm() * d.norm()),
    "norm of each layer's whole W_out": lambda d, W: W @ d / (W.norm(dim=(1, 2))[:, None] * d.norm()),
    "keep the sign": lambda d, W: neuron_cosines(d, W).abs(),
    "take each neuron's norm over d_model": lambda d, W: W @ d / (W.norm(dim=1) * d.norm()),
}


# --- every check ---------------------------------------------------------------------------------

CASES = {
    "split_by_document": (c.check_split_by_document, split_by_document, SPLIT_MISTAKES),
    "train_probe": (c.check_train_probe, _probe(), PROBE_MISTAKES),
    "probe_every_stage": (c.check_probe_every_stage, probe_every_stage, SWEEP_MISTAKES),
    "control_labels": (c.check_control_labels, control_labels, CONTROL_MISTAKES),
    "mass_mean_directions": (c.check_mass_mean_directions, mass_mean_directions, MASS_MEAN_MISTAKES),
    "pca_2d": (c.check_pca_2d, pca_2d, PCA_MISTAKES),
    "circular_correlation": (c.check_circular_correlation, circular_correlation, CIRCULAR_MISTAKES),
    "fit_linear": (c.check_fit_linear, fit_linear, FIT_LINEAR_MISTAKES),
}

MODEL_CASES = {
    "label_tokens": (c.check_label_tokens, label_tokens, LABEL_MISTAKES),
    "neuron_cosines": (c.check_neuron_cosines, neuron_cosines, NEURON_MISTAKES),
}


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_check_accepts_a_correct_solution_and_rejects_the_stub_and_each_mistake(exercise, prove_check):
    check, solution, wrong = CASES[exercise]
    with torch.no_grad():
        prove_check(check, solution, wrong)


@pytest.mark.parametrize("exercise", sorted(MODEL_CASES))
def test_model_check_accepts_a_correct_solution_and_rejects_the_stub_and_mistakes(exercise, model, prove_check):
    check, solution, wrong = MODEL_CASES[exercise]
    prove_check(check, solution, wrong, model)


CORRECT_VARIANTS = [
    (c.check_split_by_document, split_by_document_with_numpy),
    (c.check_split_by_document, _split()),
    (c.check_train_probe, _probe(weight_decay=1e-4)),  # the notebook's solution
    (c.check_train_probe, _probe(standardise="biased")),
    (c.check_train_probe, _probe(optimiser="adamw")),
    (c.check_train_probe, _probe(steps=3000)),
    (c.check_train_probe, train_probe_lbfgs),
    (c.check_train_probe, train_probe_other_start),
    (c.check_train_probe, train_probe_drawing_first),
    (c.check_probe_every_stage, _sweep()),  # the notebook's loop, the hits stacked
    (c.check_control_labels, _per_type(lambda labels, n, g, seed: _row_labels(labels, n, g))),
    (c.check_pca_2d, pca_2d_from_u_and_s),
    (c.check_pca_2d, pca_2d_lowrank_default),
    (c.check_circular_correlation, circular_correlation_over_every_ordered_pair),
    (c.check_fit_linear, fit_linear_by_augmented_rows),
]  # fmt: skip


@pytest.mark.parametrize("check,solution", CORRECT_VARIANTS, ids=lambda f: getattr(f, "__name__", ""))
def test_checks_accept_correct_solutions_written_another_way(check, solution, capsys):
    with torch.no_grad():
        check(solution)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize(
    "check,solution",
    [(c.check_label_tokens, label_tokens_from_the_angle), (c.check_neuron_cosines, neuron_cosines_by_loops)],
)
def test_model_checks_accept_correct_solutions_written_another_way(check, solution, model, capsys):
    check(solution, model)
    assert "✓" in capsys.readouterr().out


def test_checks_of_seeded_functions_leave_every_global_generator_as_it_was():
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    for wrong in (SPLIT_MISTAKES[m] for m in SPLIT_MISTAKES if "global" in m):
        with pytest.raises(CheckFailed, match="global random generator"):
            c.check_split_by_document(wrong)
    assert torch.equal(states[0], torch.get_rng_state())
    assert (states[1] == np.random.get_state()[1]).all() and states[2] == random.getstate()
