"""Every lesson-04 check accepts a correct solution and rejects the stub and a plausible mistake.

The correct solutions here are written another way than the notebook's (loops, one-hot
matrices, sklearn-free closed forms, a different optimiser), so a check that merely compared a
function with itself could not pass them all. The model checks run on both tokenizer-sharing
zoo models with MLPs.
"""

import math
import re

import pytest
import torch

from utils import storyworld
from utils.checks import lesson04_probes as c

# --- correct solutions ---------------------------------------------------------------


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


def split_by_document(doc, test_fraction, seed):
    docs = sorted(set(doc.tolist()))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(docs), generator=g).tolist()
    chosen = {docs[i] for i in order[: round(test_fraction * len(docs))]}
    return torch.tensor([d in chosen for d in doc.tolist()])


def train_probe(x, y, n_classes):
    mu, sd = x.mean(0), x.std(0)
    probe = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.SGD(probe.parameters(), lr=0.5, momentum=0.9)
    with torch.enable_grad():
        for _ in range(400):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(probe((x - mu) / sd), y).backward()
            opt.step()
    return lambda z: probe((z - mu) / sd)


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


def mass_mean_directions(x, y, n_classes):
    onehot = torch.nn.functional.one_hot(y, n_classes).float()  # [n, class]
    means = (onehot.T @ x) / onehot.sum(0)[:, None]
    return means - means.sum(0) / n_classes


def pca_2d(points):
    centred = points - points.mean(0)
    values, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending
    return centred @ vectors[:, [-1, -2]]


def circular_correlation(a, b):
    num = den_a = den_b = 0.0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            sa, sb = math.sin(a[i] - a[j]), math.sin(b[i] - b[j])
            num, den_a, den_b = num + sa * sb, den_a + sa * sa, den_b + sb * sb
    return num / math.sqrt(den_a * den_b)


def fit_linear(x, y, l2):
    xm = x.mean(0)
    xc = x - xm
    w = torch.linalg.inv(xc.T @ xc + l2 * torch.eye(x.shape[1])) @ xc.T @ (y - y.mean())
    return w, float(y.mean() - xm @ w)


def neuron_cosines(direction, W_out):
    return torch.nn.functional.cosine_similarity(W_out, direction[None, None], dim=-1)


# --- plausible mistakes ------------------------------------------------------------------


def _keeps_naming_sentences(text, offsets, sentences):
    sentences = [dict(s, names_emotion=False) for s in sentences]
    return label_tokens(text, offsets, sentences)


def _starts_inside(text, offsets, sentences):
    rows = []
    for s in sentences:
        if "emotion" in s and not s["names_emotion"]:
            for i, (a, b) in enumerate(offsets):
                if s["span"][0] <= a < s["span"][1]:
                    word = any(ch.isalpha() for ch in text[a:b])
                    rows.append(
                        (
                            i,
                            storyworld.EMOTIONS.index(s["emotion"]),
                            0 if b <= s["span"][0] + len(s["subject"]) else 1 if word else 2,
                        )
                    )
    return rows


def _all_words_predicate(text, offsets, sentences):
    return [(i, e, 1 if r == 0 else r) for i, e, r in label_tokens(text, offsets, sentences)]


def _token_split(doc, test_fraction, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(len(doc), generator=g) < test_fraction


def _last_documents(doc, test_fraction, seed):
    n = doc.max().item() + 1
    return doc >= n - round(test_fraction * n)


def _untrained(x, y, n_classes):
    return torch.nn.Linear(x.shape[1], n_classes)


def _few_steps(x, y, n_classes):
    probe = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    with torch.enable_grad():
        for _ in range(30):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(probe(x), y).backward()
            opt.step()
    return probe


def _no_grad_enabled(x, y, n_classes):
    probe = torch.nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(probe(x), y)
    loss.backward()
    return probe


def _per_row(tokens, labels, seed):
    g = torch.Generator().manual_seed(seed)
    return labels[torch.randint(len(labels), (len(labels),), generator=g)]


def _uniform(tokens, labels, seed):
    g = torch.Generator().manual_seed(seed)
    types, which = tokens.unique(return_inverse=True)
    return torch.randint(int(labels.max()) + 1, (len(types),), generator=g)[which]


def _row_mean(x, y, n_classes):
    return torch.stack([x[y == k].mean(0) for k in range(n_classes)]) - x.mean(0)


def _uncentred_pca(points):
    return points @ torch.linalg.svd(points, full_matrices=False)[2][:2].T


def _pearson(a, b):
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def _penalised_intercept(x, y, l2):
    a = torch.cat([x, torch.ones(len(x), 1)], 1)
    wb = torch.linalg.solve(a.T @ a + l2 * torch.eye(a.shape[1]), a.T @ y)
    return wb[:-1], wb[-1].item()


def _dot_products(direction, W_out):
    return W_out @ direction


CASES = {
    "split_by_document": (
        c.check_split_by_document,
        split_by_document,
        {"rows of one document": _token_split, "same split for every seed": _last_documents},
    ),
    "train_probe": (
        c.check_train_probe,
        train_probe,
        {"is it trained at all": _untrained, "Train longer": _few_steps, "enable_grad": _no_grad_enabled},
    ),
    "control_labels": (
        c.check_control_labels,
        control_labels,
        {"more than one label": _per_row, "distribution": _uniform, "own real label": _own_rows},
    ),
    "mass_mean_directions": (
        c.check_mass_mean_directions,
        mass_mean_directions,
        {"mean of all rows": _row_mean, "class means themselves": lambda x, y, k: _row_mean(x, y, k) + x.mean(0)},
    ),
    "pca_2d": (c.check_pca_2d, pca_2d, {"centre the points": _uncentred_pca}),
    "circular_correlation": (
        c.check_circular_correlation,
        circular_correlation,
        {"ordinary correlation": _pearson, "Fisher–Lee": lambda a, b: abs(circular_correlation(a, b))},
    ),
    "fit_linear": (c.check_fit_linear, fit_linear, {"intercept is penalised": _penalised_intercept}),
}

MODEL_CASES = {
    "label_tokens": (
        c.check_label_tokens,
        label_tokens,
        {"name the emotion": _keeps_naming_sentences, "no subject token": _starts_inside, "role": _all_words_predicate},
    ),
    "neuron_cosines": (c.check_neuron_cosines, neuron_cosines, {"dot products": _dot_products}),
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
