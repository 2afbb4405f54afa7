"""Shared geometry of two models' token embeddings, and maps between them (lesson 07).

Two models trained on the same corpus learn embedding (``W_E``) and unembedding (``W_U``)
matrices whose rows may be arranged alike. *Global* geometry compares the whole arrangement:
the correlation of the two models' pairwise cosine-distance matrices over the same tokens.
*Local* geometry compares neighbourhoods: the share of each token's nearest neighbours the
models agree on, and how well one model's locally linear embedding (LLE) weights rebuild the
other's rows. A linear map ``T`` fitted between the two matrices carries any vector written in
one model's coordinates into the other's (Lee et al. 2025 call steering through it Emb2Emb).

Everything here is a plain function of tensors: rows are tokens ``[n, d]``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import torch

from utils.corpora import storyworld

# ---------------------------------------------------------------------------------------
# Which rows count


def token_counts(tokenizer, seed: int, n_docs: int) -> torch.Tensor:
    """How often each vocabulary id occurs in ``n_docs`` Storyworld documents of stream ``seed``
    (every family, no BOS), ``[d_vocab]``."""
    counts: Counter = Counter()
    for doc in storyworld.sample_docs(seed, n_docs):
        counts.update(tokenizer(doc.text, add_special_tokens=False)["input_ids"])
    out = torch.zeros(len(tokenizer), dtype=torch.long)
    for i, c in counts.items():
        out[i] = c
    return out


def content_words(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """The ids among ``ids`` whose token is a whole lower- or upper-case word after a space
    (``" calm"``, ``" Ann"``): no punctuation, no unspaced piece of a word."""
    keep = []
    for i in ids.tolist():
        text = tokenizer.decode([i])
        if text.startswith(" ") and text[1:].isalpha():
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


def feeling_tokens(tokenizer) -> torch.Tensor:
    """Every token id that spells part of a word Storyworld uses to show a feeling: the 12
    emotions, the behaviours, manners and interjections, with or without a space before."""
    words = [*storyworld.EMOTIONS, *(w for group in (storyworld.BEHAVIOURS, storyworld.MANNERS,
             storyworld.INTERJECTIONS) for w, _ in group)]  # fmt: skip
    ids: set[int] = set()
    for w in words:
        for form in (w, " " + w):
            ids.update(tokenizer(form, add_special_tokens=False)["input_ids"])
    return torch.tensor(sorted(ids), dtype=torch.long)


def word_ids(tokenizer, words: Sequence[str]) -> torch.Tensor:
    """The id of each word's single token after a space (``" calm"``), ``[len(words)]``; a word
    that is not one token raises ``ValueError`` naming it."""
    out = []
    for w in words:
        ids = tokenizer(" " + w, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"{w!r} is {len(ids)} tokens in this tokenizer, not one")
        out.append(ids[0])
    return torch.tensor(out, dtype=torch.long)


# ---------------------------------------------------------------------------------------
# Global geometry


def cosine_distances(x: torch.Tensor) -> torch.Tensor:
    """``1 − cos`` between every pair of rows of ``x`` ``[n, d]``, ``[n, n]``."""
    u = torch.nn.functional.normalize(x.double(), dim=-1)
    return 1 - u @ u.T


def distance_correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    """The Pearson correlation between the upper triangles of the cosine-distance matrices of
    ``x`` ``[n, d₁]`` and ``y`` ``[n, d₂]`` (row i of each is the same token)."""
    i, j = torch.triu_indices(len(x), len(x), 1)
    a, b = cosine_distances(x)[i, j], cosine_distances(y)[i, j]
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def shuffled_null(statistic, x: torch.Tensor, y: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``statistic(x, y)`` with the rows of ``y`` shuffled, ``n`` times (one generator seeded with
    ``seed`` for all draws): what chance gives when the tokens no longer correspond (a Mantel
    permutation test when the statistic is :func:`distance_correlation`), ``[n]``."""
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([float(statistic(x, y[torch.randperm(len(y), generator=g)])) for _ in range(n)])


def ppmi_embedding(tokenizer, docs: Sequence, ids: torch.Tensor, window: int = 2, dim: int = 64) -> torch.Tensor:
    """A corpus-only embedding of the tokens ``ids``: positive pointwise mutual information of
    co-occurrence within ``window`` tokens either side in ``docs``, reduced to ``dim`` by an SVD
    (rows scaled by the singular values), ``[len(ids), dim]``. No model is involved."""
    index = {int(t): k for k, t in enumerate(ids.tolist())}
    co = torch.zeros(len(ids), len(ids), dtype=torch.float64)
    for doc in docs:
        toks = [index.get(t, -1) for t in tokenizer(doc.text, add_special_tokens=False)["input_ids"]]
        for p, a in enumerate(toks):
            if a < 0:
                continue
            for q in range(max(0, p - window), min(len(toks), p + window + 1)):
                if q != p and toks[q] >= 0:
                    co[a, toks[q]] += 1
    total = co.sum()
    row, col = co.sum(1, keepdim=True), co.sum(0, keepdim=True)
    pmi = torch.log(co * total / (row * col).clamp_min(1e-12))
    ppmi = torch.where(co > 0, pmi.clamp_min(0), torch.zeros_like(pmi))
    u, s, _ = torch.linalg.svd(ppmi, full_matrices=False)
    return (u[:, :dim] * s[:dim]).float()


# ---------------------------------------------------------------------------------------
# Local geometry


def nearest_neighbours(x: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's ``k`` nearest other rows by cosine, nearest first, ``[n, k]``."""
    u = torch.nn.functional.normalize(x.double(), dim=-1)
    sim = u @ u.T
    sim.fill_diagonal_(-math.inf)
    return sim.topk(k, dim=-1).indices


def shared_neighbours(x: torch.Tensor, y: torch.Tensor, k: int) -> float:
    """The mean share of each token's ``k`` nearest neighbours in ``x`` that are also among its
    ``k`` nearest in ``y`` (0 to 1; chance is about ``k / (n − 1)``)."""
    a, b = nearest_neighbours(x, k), nearest_neighbours(y, k)
    same = (a[:, :, None] == b[:, None, :]).any(-1)
    return same.float().mean().item()


def lle_weights(x: torch.Tensor, neighbours: torch.Tensor, reg: float = 1e-3) -> torch.Tensor:
    """Locally linear embedding weights (Roweis & Saul 2000): for each row, the weights ``[k]``
    summing to 1 that best rebuild it from its ``neighbours`` ``[n, k]`` (least squares, the
    local Gram matrix regularised by ``reg × its trace``), ``[n, k]``."""
    x = x.double()
    diff = x[neighbours] - x[:, None, :]  # [n, k, d]
    gram = diff @ diff.transpose(1, 2)  # [n, k, k]
    k = neighbours.shape[1]
    trace = gram.diagonal(dim1=1, dim2=2).sum(-1)
    gram = gram + reg * trace[:, None, None] * torch.eye(k, dtype=x.dtype)
    w = torch.linalg.solve(gram, torch.ones(len(x), k, dtype=x.dtype))
    return (w / w.sum(-1, keepdim=True)).float()


def rebuild_error(y: torch.Tensor, neighbours: torch.Tensor, weights: torch.Tensor) -> float:
    """How badly ``weights`` on ``neighbours`` rebuild the rows of ``y``: the median over tokens of
    ``‖y − Σ w y_nbr‖² / ‖y − ȳ‖²`` (0: exactly; 1: no better than the mean row)."""
    y = y.double()
    rebuilt = (weights.double()[:, :, None] * y[neighbours]).sum(1)
    err = (y - rebuilt).pow(2).sum(-1) / (y - y.mean(0)).pow(2).sum(-1)
    return err.median().item()


# ---------------------------------------------------------------------------------------
# Maps between models


def fit_ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """The map ``T`` ``[d₁, d₂]`` minimising ``‖x T − y‖² + lam · ‖T‖²`` (``lam = 0``: least
    squares), for centred rows ``x`` ``[n, d₁]`` and ``y`` ``[n, d₂]``."""
    x, y = x.double(), y.double()
    a = x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype)
    return torch.linalg.lstsq(a, x.T @ y).solution.float()


def fit_procrustes(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The scaled semi-orthogonal map ``T`` ``[d₁, d₂]`` (``s · U Vᵀ`` from the SVD of ``xᵀ y``)
    closest to taking ``x`` to ``y``: it may rotate and scale, never stretch one direction more
    than another. When ``d₁ > d₂`` it keeps only ``d₂`` directions of ``x`` (all scaled alike) and
    sends the other ``d₁ − d₂`` to zero; when ``d₁ < d₂`` its image is a ``d₁``-dimensional subspace."""
    u, s, vh = torch.linalg.svd(x.double().T @ y.double(), full_matrices=False)
    t = u @ vh
    scale = s.sum() / (x.double() @ t).pow(2).sum()  # the best scale for that rotation
    return (scale * t).float()


def ridge_penalty(x: torch.Tensor, share: float) -> float:
    """A ridge penalty ``share`` × the mean eigenvalue of ``xᵀx`` (of centred rows ``x``): a scale
    that means the same for two matrices of different sizes."""
    x = x.double()
    return share * torch.linalg.eigvalsh(x.T @ x).mean().item()


def r_squared(pred: torch.Tensor, y: torch.Tensor) -> float:
    """The share of the variance of ``y`` ``[n, d]`` (about its own mean) that ``pred`` explains:
    1 is perfect, 0 is no better than the mean row, below 0 worse."""
    y, pred = y.double(), pred.double()
    return (1 - (y - pred).pow(2).sum() / (y - y.mean(0)).pow(2).sum()).item()


def retrieval(pred: torch.Tensor, y: torch.Tensor) -> float:
    """How often row i of ``pred`` is closer (cosine) to row i of ``y`` than to any other row."""
    sim = torch.nn.functional.normalize(pred.double(), dim=-1) @ torch.nn.functional.normalize(y.double(), dim=-1).T
    return (sim.argmax(-1) == torch.arange(len(y))).float().mean().item()


def token_split(n: int, test_share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random split of ``range(n)`` into training and held-out indices."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = round(test_share * n)
    return perm[n_test:], perm[:n_test]


# ---------------------------------------------------------------------------------------
# The two matrices of a model, as rows per token


def embedding_rows(model) -> tuple[torch.Tensor, torch.Tensor]:
    """A model's embedding and unembedding, one row per vocabulary id: ``W_E`` ``[d_vocab, d]``
    and ``W_U`` transposed ``[d_vocab, d]``. Takes a TransformerBridge or a Hugging Face model."""
    if hasattr(model, "W_E") and hasattr(model, "W_U"):
        return model.W_E.detach().float().cpu(), model.W_U.detach().float().cpu().T
    return (
        model.get_input_embeddings().weight.detach().float().cpu(),
        model.get_output_embeddings().weight.detach().float().cpu(),
    )


def initial_rows(name: str, seed_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``embedding_rows`` of zoo model ``name`` as its training run initialised it, before any
    step (``seed_offset`` ≠ 0: another initialisation of the same architecture)."""
    from dataclasses import replace

    from utils.model_zoo.registry import SPECS
    from utils.model_zoo.train import build_model, corpus_tokenizer

    spec = SPECS[name]
    return embedding_rows(build_model(replace(spec, seed=spec.seed + seed_offset), len(corpus_tokenizer(spec.corpus))))


# ---------------------------------------------------------------------------------------
# Carrying vectors across


def stream_alignment(t: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """How well a map ``t`` ``[d₁, d₂]`` takes one model's activations ``source`` ``[n, d₁]`` to
    the other's at the same tokens ``target`` ``[n, d₂]``, both centred on their own mean: the R²
    after one best overall scale factor, and the mean cosine between mapped and true rows."""
    x = (source - source.mean(0)).double() @ t.double()
    y = (target - target.mean(0)).double()
    scale = (x * y).sum() / x.pow(2).sum().clamp_min(1e-30)
    r2 = 1 - (y - scale * x).pow(2).sum() / y.pow(2).sum()
    cos = torch.nn.functional.cosine_similarity(x, y, dim=-1).mean()
    return r2.item(), cos.item()


def transfer(vectors: torch.Tensor, t: torch.Tensor, norm: float, c: float) -> torch.Tensor:
    """Vectors ``[k, d₁]`` carried by the map ``t`` ``[d₁, d₂]``, each rescaled to length
    ``c × norm`` (``norm``: the target stream's typical length where the vector will be added),
    ``[k, d₂]``."""
    mapped = vectors.double() @ t.double()
    return (c * norm * torch.nn.functional.normalize(mapped, dim=-1)).float()


def random_drops(
    score: Callable[[torch.Tensor], float], used: torch.Tensor, feeling: torch.Tensor, k: int, seed: int
) -> torch.Tensor:
    """The like-for-like control for leaving a token set out of a map's fit: ``k`` refits, each without as many
    random tokens as ``feeling`` takes out of ``used``, drawn from the used tokens that are not in ``feeling`` (in
    ``used``'s order, one ``torch.randperm`` per draw from one generator seeded with ``seed``). ``score(kept)`` fits
    on the token ids ``kept`` and returns a number; the result is the ``k`` scores, ``[k]``."""
    is_feeling = torch.isin(used, feeling)
    pool, n = used[~is_feeling], int(is_feeling.sum())
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(k):
        drop = pool[torch.randperm(len(pool), generator=g)[:n]]
        out.append(float(score(used[~torch.isin(used, drop)])))
    return torch.tensor(out)


def angles_in_plane(vectors: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Where vectors ``[k, d]`` point in the plane of the orthonormal pair ``u``, ``v``: their
    angles ``atan2(x·v, x·u)`` in radians ``[k]``, and the share of their summed squared length
    that lies in the plane."""
    a, b = vectors @ u, vectors @ v
    return torch.atan2(b, a), ((a.pow(2) + b.pow(2)).sum() / vectors.pow(2).sum()).item()


def top_tokens(unembed_rows: torch.Tensor, vector: torch.Tensor, k: int, among: torch.Tensor) -> torch.Tensor:
    """The ``k`` token ids of ``among`` whose unembedding rows ``[d_vocab, d]`` have the largest dot
    product with ``vector`` ``[d]`` (the logit lens of a direction), largest first."""
    scores = unembed_rows[among] @ vector
    return among[scores.topk(k).indices]


def lens_rows(model) -> torch.Tensor:
    """The rows a direction in the last residual stream is read through, one per vocabulary id,
    ``[d_vocab, d]``: ``W_U`` with the final norm's weights folded in (a direction ``v`` raises
    token ``i``'s logit by ``v · row_i``, the norm's scale and bias aside)."""
    _, u = embedding_rows(model)
    weight = getattr(getattr(model, "ln_final", None), "w", None)
    return u if weight is None else u * weight.detach().float().cpu()[None, :]
