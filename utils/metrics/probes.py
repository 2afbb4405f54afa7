"""Linear probes for the feeling Storyworld's narratives never name.

Every narrative sentence is annotated with its subject's current emotion (one of 12 on a
circle). A probe reads it from the residual stream at the sentence's tokens; the sentences
that name the emotion are left out, so the probe must read the latent, not the word.
"""

from __future__ import annotations

import torch

from utils.corpora import storyworld
from utils.corpora.tokenizer import encode_doc, token_spans
from utils.metrics.common import device_of, tokenizer_of

PROBE_ROLES = ("subject", "predicate", "punctuation")


def emotion_dataset(
    model, docs: list[storyworld.Doc], layers: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Residual stream after every layer at every token of the narrative sentences that do
    not name the emotion, labelled with the subject's current emotion.

    Returns activations ``[n_layers, n_tokens, d_model]``, labels ``[n_tokens]``, each
    token's role ``[n_tokens]`` (an index into ``PROBE_ROLES``: the subject's name, a word
    of the predicate, or punctuation), the size of its story's cast ``[n_tokens]`` (1 or 2
    characters), and the number of sentences they come from. Documents are tokenized by the
    model's own tokenizer; a token belongs to a sentence when its characters overlap it.
    ``layers`` keeps the stream after these layers only (``[len(layers), n_tokens, d_model]``).
    """
    tok = tokenizer_of(model)
    names = [f"blocks.{l}.hook_resid_post" for l in (range(model.cfg.n_layers) if layers is None else layers)]
    L = len(names)
    acts, labels, roles, casts, n_sentences = [[] for _ in range(L)], [], [], [], 0
    for d in docs:
        if d.family != "narrative":
            continue
        spans = token_spans(d.text, tok)
        rows, ys = [], []
        for s in d.annotations["sentences"]:
            if s["names_emotion"] or "emotion" not in s:
                continue
            subject_end = s["span"][0] + len(s["subject"])
            n_sentences += 1
            for i, (a, b) in enumerate(spans):
                if a < s["span"][1] and b > s["span"][0]:
                    rows.append(i + 1)  # +1 for BOS
                    ys.append(storyworld.EMOTIONS.index(s["emotion"]))
                    word = any(ch.isalnum() for ch in d.text[a:b])
                    roles.append(0 if b <= subject_end else (1 if word else 2))
                    casts.append(len(d.annotations["characters"]))
        if not rows:
            continue
        x = torch.tensor([encode_doc(d.text, tok)[:-1]], device=device_of(model))
        with torch.no_grad():
            # only the cache is read: the head unembeds the last position alone (the same activations)
            _, cache = model.run_with_cache(x, names_filter=lambda n: n in names, logits_to_keep=1)
        for l in range(L):
            acts[l].append(cache[names[l]][0, rows].float().cpu())
        labels += ys
    return (
        torch.stack([torch.cat(a) for a in acts]),
        torch.tensor(labels),
        torch.tensor(roles),
        torch.tensor(casts),
        n_sentences,
    )


def fit_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float = 1e-3, steps: int = 200) -> torch.nn.Linear:
    """Multinomial logistic regression on standardised features, fitted with L-BFGS."""
    torch.manual_seed(0)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    probe = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1, max_iter=steps, line_search_fn="strong_wolfe")
    z = (x - mu) / sd

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(z), y) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():  # fold the standardisation into the weights
        probe.weight /= sd
        probe.bias -= probe.weight @ mu
    return probe


def story_standard_error(values: torch.Tensor, story: torch.Tensor) -> float:
    """The standard error of ``values.mean()`` when the rows of one story are not independent.

    ``values`` ``[row]`` is one number per test token (a hit, 0 or 1, or a difference of two
    hits on the same token), ``story`` ``[row]`` the story it comes from. Stories are drawn
    independently, tokens of one story are not (they share its characters and feelings), so
    each story's deviations from the mean are summed before they are squared: the
    cluster-robust estimate ``sqrt(G / (G - 1) * sum over stories of (sum of v - mean)^2) / n``
    for ``G`` stories and ``n`` rows. With one row per story it is the usual ``std / sqrt(n)``.
    """
    values = values.detach().double().flatten()
    groups = torch.unique(story.flatten(), return_inverse=True)[1]
    n, g = len(values), int(groups.max()) + 1
    if g < 2:
        raise ValueError("a story-level standard error needs rows from at least two stories")
    sums = torch.zeros(g, dtype=torch.float64).index_add_(0, groups, values - values.mean())
    return float((g / (g - 1) * sums.pow(2).sum()).sqrt() / n)


def emotion_probe(model, train_docs, test_docs, layers: list[int] | None = None) -> dict:
    """Fit a probe per layer on the word tokens (the subject's name and the predicate's
    words) of ``train_docs``; report its accuracy on the word tokens of ``test_docs``, by
    layer and by role. A second probe per layer, fitted and tested on all tokens
    punctuation included, gives ``emotion_probe_accuracy_all_tokens``.

    ``layers`` probes after these layers only (every layer when None, as on the zoo's cards); then
    ``emotion_probe_accuracy_by_layer`` follows their order and ``emotion_probe_layer`` is the best
    one's number."""
    xtr, ytr, rtr, _, _ = emotion_dataset(model, train_docs, layers)
    xte, yte, rte, cte, n_test_sentences = emotion_dataset(model, test_docs, layers)
    word_tr, word_te = rtr != PROBE_ROLES.index("punctuation"), rte != PROBE_ROLES.index("punctuation")
    accs, accs_all, hits = [], [], []
    for l in range(xtr.shape[0]):
        probe = fit_probe(xtr[l][word_tr], ytr[word_tr], len(storyworld.EMOTIONS))
        with torch.no_grad():
            hit = probe(xte[l]).argmax(-1) == yte
        hits.append(hit)
        accs.append(hit[word_te].float().mean().item())
        probe_all = fit_probe(xtr[l], ytr, len(storyworld.EMOTIONS))
        with torch.no_grad():
            accs_all.append((probe_all(xte[l]).argmax(-1) == yte).float().mean().item())
    best = max(range(len(accs)), key=accs.__getitem__)
    by_role = {r: hits[best][rte == i].float().mean().item() for i, r in enumerate(PROBE_ROLES)}
    # Two-character stories need binding: which character feels what.
    by_cast = {
        f"{r} ({n} character{'s' if n > 1 else ''})": hits[best][(rte == i) & (cte == n)].float().mean().item()
        for n in (1, 2)
        for i, r in enumerate(PROBE_ROLES[:2])
    }
    return {
        "emotion_probe_accuracy": accs[best],
        "emotion_probe_layer": best if layers is None else list(layers)[best],
        "emotion_probe_accuracy_by_layer": accs,
        "emotion_probe_accuracy_by_role": by_role,
        "emotion_probe_accuracy_by_cast": by_cast,
        "emotion_probe_accuracy_all_tokens": max(accs_all),
        "emotion_probe_train_tokens": int(word_tr.sum()),
        "emotion_probe_test_tokens": int(word_te.sum()),
        "emotion_probe_test_sentences": n_test_sentences,
    }
