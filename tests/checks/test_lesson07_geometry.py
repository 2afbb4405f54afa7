"""Every lesson-07 check accepts a correct solution and rejects the stub and each plausible mistake,
naming the mistake.

The correct solutions here are written another way than the notebook's (loops, float32, Python sets,
torch.corrcoef, the augmented least-squares system, math.atan2), so a check that merely compared a
function with itself could not pass them all. The wrong answers are written as a learner would write
them, as small changes to a correct solution; each is rejected with the message that names it.
"""

import math

import pytest
import torch

from utils.checks import CheckFailed
from utils.checks import lesson07_geometry as c
from utils.metrics import geometry as ref

F = torch.nn.functional


def _stub(*args, **kwargs):
    raise NotImplementedError("exercise")


# --- distance_correlation -----------------------------------------------------------------------


def _cos_dist(m):
    return 1 - F.cosine_similarity(m[:, None], m[None], dim=-1)


def distance_correlation(x, y):
    mask = torch.ones(len(x), len(x), dtype=torch.bool).triu(1)
    return torch.corrcoef(torch.stack([_cos_dist(x)[mask], _cos_dist(y)[mask]]))[0, 1].item()


def distance_correlation_of_similarities(x, y):
    """Correlating 1 − cos or cos gives the same r."""
    mask = torch.ones(len(x), len(x), dtype=torch.bool).triu(1)
    sx, sy = 1 - _cos_dist(x), 1 - _cos_dist(y)
    return torch.corrcoef(torch.stack([sx[mask], sy[mask]]))[0, 1].item()


def distance_correlation_both_triangles(x, y):
    """Every pair twice, the diagonal left out: the same r."""
    off = ~torch.eye(len(x), dtype=torch.bool)
    a, b = _cos_dist(x)[off].double(), _cos_dist(y)[off].double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def _correlate(distances, offset=1, rank=False, full=False):
    def distance_correlation(x, y):
        a, b = distances(x.double()), distances(y.double())
        if full:
            a, b = a.flatten(), b.flatten()
        else:
            i, j = torch.triu_indices(len(x), len(x), offset)
            a, b = a[i, j], b[i, j]
        if rank:
            a, b = a.argsort().argsort().double(), b.argsort().argsort().double()
        return torch.corrcoef(torch.stack([a, b]))[0, 1].item()

    return distance_correlation


def _flipped(x, y):
    i, j = torch.triu_indices(len(x), len(x), 1)
    a, b = _cos_dist(x)[i, j], 1 - _cos_dist(y)[i, j]
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def _uncentred(x, y):
    i, j = torch.triu_indices(len(x), len(x), 1)
    a, b = _cos_dist(x)[i, j], _cos_dist(y)[i, j]
    return float((a * b).sum() / (a.norm() * b.norm()))


CORRELATION_MISTAKES = {
    "a cosine of the two distance vectors, not their correlation": _uncentred,
    "you centred the columns before the cosines": _correlate(lambda m: _cos_dist(m - m.mean(0))),
    "you used Euclidean distances": _correlate(lambda m: torch.cdist(m, m)),
    "Euclidean distances: the exercise uses cosine": _correlate(lambda m: torch.cdist(m, m) ** 2),
    "you used dot products of the raw rows": _correlate(lambda m: 1 - m @ m.T),
    "you included the diagonal": _correlate(_cos_dist, offset=0),
    "you correlated the whole matrices": _correlate(_cos_dist, full=True),
    "Spearman's rank correlation": _correlate(_cos_dist, rank=True),
    "the sign is flipped": _flipped,
    "whole 2 × 2 matrix": lambda x, y: torch.corrcoef(
        torch.stack([_cos_dist(x).triu(1).flatten(), _cos_dist(y).triu(1).flatten()])
    ),
    "return a Python float, .item()": lambda x, y: torch.tensor(distance_correlation(x, y)),
    "should return one number (the correlation r), not tuple": lambda x, y: (distance_correlation(x, y), 0.0),
}


# --- shuffled_null ------------------------------------------------------------------------------


def shuffled_null(statistic, x, y, n, seed):
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(n):
        order = torch.randperm(y.shape[0], generator=g)
        values.append(statistic(x, y[order]))
    return torch.tensor(values)


def shuffled_null_of_x(statistic, x, y, n, seed):
    """Shuffling x's rows instead of y's breaks the same correspondence: the same null."""
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([statistic(x[torch.randperm(len(x), generator=g)], y) for _ in range(n)])


def _shuffling(permute, generator="once", ret=torch.tensor, score=None):
    """A learner's ``shuffled_null`` with one part written as given (``score``: a statistic used in place of
    the one passed in)."""

    def shuffled_null(statistic, x, y, n, seed):
        g = torch.Generator().manual_seed(seed)
        values = []
        for i in range(n):
            if generator == "each":
                g = torch.Generator().manual_seed(seed)
            elif generator == "seed + i":
                g = torch.Generator().manual_seed(seed + i)
            elif generator == "fixed" and i == 0:
                g = torch.Generator().manual_seed(0)
            elif generator == "fresh" and i == 0:
                g = torch.Generator()
                g.seed()
            elif generator == "global":
                g = None
            values.append((score or statistic)(*permute(x, y, g)))
        return ret(values)

    return shuffled_null


def _one_permutation(statistic, x, y, n, seed):
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return torch.tensor([statistic(x, y[order]) for _ in range(n)])


def _rows_of_y(x, y, g):
    return x, y[torch.randperm(len(y), generator=g)]


def _both(x, y, g):
    p = torch.randperm(len(y), generator=g)
    return x[p], y[p]


def _columns(x, y, g):
    return x, y[:, torch.randperm(y.shape[1], generator=g)]


def _by_argsort(x, y, g):
    return x, y[torch.rand(len(y), generator=g).argsort()]


NULL_MISTAKES = {
    "every value is the unshuffled statistic": _shuffling(_both),
    "(or y's columns": _shuffling(_columns),
    "or not at all)": _shuffling(lambda x, y, g: (x, y)),
    "the generator is made afresh inside the loop": _shuffling(_rows_of_y, generator="each"),
    "or one permutation is drawn once and reused": _one_permutation,
    "seeds a new generator for each draw (seed + i)": _shuffling(_rows_of_y, generator="seed + i"),
    "uses (or reseeds) torch's global random generator": _shuffling(_rows_of_y, generator="global"),
    "gives the same values for seeds": _shuffling(_rows_of_y, generator="fixed"),
    "different values for the same seed": _shuffling(_rows_of_y, generator="fresh"),
    "returns a list": _shuffling(_rows_of_y, ret=list),
    "returns one number": _shuffling(_rows_of_y, ret=lambda v: torch.tensor(v).mean()),
    "one statistic(x, y[torch.randperm(len(y), generator=g)]) per draw": _shuffling(_by_argsort),
    "not with the `statistic` it is given": _shuffling(_rows_of_y, score=ref.distance_correlation),
}


# --- shared_neighbours --------------------------------------------------------------------------


def shared_neighbours(x, y, k):
    def nearest(m):
        u = m / m.norm(dim=-1, keepdim=True)
        sim = (u @ u.T).masked_fill(torch.eye(len(m), dtype=torch.bool), -2.0)
        return sim.argsort(dim=-1, descending=True)[:, :k]

    a, b = nearest(x), nearest(y)
    return sum(len(set(a[i].tolist()) & set(b[i].tolist())) / k for i in range(len(x))) / len(x)


def shared_neighbours_dropping_the_first(x, y, k):
    """The k + 1 nearest by cosine, the first (the token itself) dropped."""

    def nearest(m):
        u = F.normalize(m, dim=-1)
        return (u @ u.T).topk(k + 1, dim=-1).indices[:, 1:]

    a, b = nearest(x), nearest(y)
    return (a[:, :, None] == b[:, None, :]).any(-1).float().mean().item()


def _neighbours(score, itself=False, extra=0, reduce=lambda common, k: (common / k).mean()):
    """A learner's ``shared_neighbours`` ranking by ``score`` (largest first), with one part written as given."""

    def shared_neighbours(x, y, k):
        def nearest(m):
            s = score(m.double())
            if not itself:
                s = s.masked_fill(torch.eye(len(m), dtype=torch.bool), -math.inf)
            return s.topk(k + extra, dim=-1).indices

        a, b = nearest(x), nearest(y)
        common = (a[:, :, None] == b[:, None, :]).any(-1).double().sum(-1)
        return reduce(common, k + extra)

    return shared_neighbours


def _cosine(m):
    u = F.normalize(m, dim=-1)
    return u @ u.T


def _mixed(score_x, score_y):
    """A learner's ``shared_neighbours`` that ranks the neighbours in x one way and those in y another."""

    def shared_neighbours(x, y, k):
        def nearest(m, score):
            return score(m.double()).masked_fill(torch.eye(len(m), dtype=torch.bool), -math.inf).topk(k, dim=-1).indices

        a, b = nearest(x, score_x), nearest(y, score_y)
        return (a[:, :, None] == b[:, None, :]).any(-1).double().mean().item()

    return shared_neighbours


def _dot(m):
    return m @ m.T


def _closeness(m):
    return -torch.cdist(m, m)


def _by_position(x, y, k):
    def nearest(m):
        return _cosine(m.double()).masked_fill(torch.eye(len(m), dtype=torch.bool), -math.inf).topk(k, dim=-1).indices

    return (nearest(x) == nearest(y)).float().mean().item()


def _self_dropped(x, y, k):
    def nearest(m):
        return _cosine(m.double()).topk(k, dim=-1).indices[:, 1:]  # the token itself first, then k - 1 others

    a, b = nearest(x), nearest(y)
    return ((a[:, :, None] == b[:, None, :]).any(-1).double().sum(-1) / k).mean().item()


NEIGHBOUR_MISTAKES = {
    "you counted each token as its own neighbour": _neighbours(_cosine, itself=True),
    "its own neighbour (it is always nearest": _neighbours(_cosine, itself=True, extra=1),
    "you ranked neighbours by dot product": _neighbours(lambda m: m @ m.T),
    "you ranked neighbours by Euclidean distance": _neighbours(lambda m: -torch.cdist(m, m)),
    "the k *farthest* tokens": _neighbours(lambda m: 1 - _cosine(m)),
    "that is the mean number of shared neighbours": _neighbours(_cosine, reduce=lambda common, k: common.mean().item()),
    "(Jaccard)": _neighbours(_cosine, reduce=lambda common, k: (common / (2 * k - common)).mean().item()),
    "one share per token": _neighbours(_cosine, reduce=lambda common, k: common / k),
    "compared the two lists position by position": _by_position,
    "you kept only k − 1 other tokens": _self_dropped,
    "ranks the neighbours in `x` by cosine similarity and those in `y` by Euclidean distance": _mixed(
        _cosine, _closeness
    ),
    "ranks the neighbours in `x` by Euclidean distance and those in `y` by cosine similarity": _mixed(
        _closeness, _cosine
    ),
    "ranks the neighbours in `x` by dot product and those in `y` by cosine similarity": _mixed(_dot, _cosine),
    "ranks the neighbours in `x` by Euclidean distance and those in `y` by dot product": _mixed(_closeness, _dot),
}


# --- lle_weights --------------------------------------------------------------------------------


def lle_weights(x, neighbours, reg):
    out = []
    for i in range(len(x)):
        z = x[neighbours[i]] - x[i]
        gram = z @ z.T
        gram = gram + reg * torch.trace(gram) * torch.eye(len(gram))
        w = torch.linalg.solve(gram, torch.ones(len(gram)))
        out.append(w / w.sum())
    return torch.stack(out)


def _lle(rows=lambda x, nb: x[nb] - x[:, None], ridge=lambda gram, reg: reg * _trace(gram)[:, None, None], norm=True):
    """A learner's ``lle_weights`` with one part written as given."""

    def lle_weights(x, neighbours, reg):
        z = rows(x.double(), neighbours)
        gram = z @ z.transpose(1, 2)
        k = neighbours.shape[1]
        gram = gram + ridge(gram, reg) * torch.eye(k, dtype=gram.dtype)
        w = torch.linalg.lstsq(gram, torch.ones(len(x), k, 1, dtype=gram.dtype)).solution[..., 0]
        return w / w.sum(-1, keepdim=True) if norm else w

    return lle_weights


def _trace(gram):
    return gram.diagonal(dim1=1, dim2=2).sum(-1)


def _every_entry(x, neighbours, reg):
    z = (x[neighbours] - x[:, None]).double()
    gram = z @ z.transpose(1, 2)
    gram = gram + reg * _trace(gram)[:, None, None]  # no identity: every entry
    w = torch.linalg.solve(gram, torch.ones(len(x), neighbours.shape[1], dtype=gram.dtype))
    return w / w.sum(-1, keepdim=True)


def _d_by_d(x, neighbours, reg):
    z = x[neighbours] - x[:, None]
    gram = z.transpose(1, 2) @ z  # [n, d, d]
    return torch.linalg.solve(gram, torch.ones(len(x), neighbours.shape[1]))


LLE_MISTAKES = {
    "the Gram matrix is not regularised": _lle(ridge=lambda gram, reg: 0.0),
    "comes to the same as nothing": _every_entry,
    "the regulariser is absolute": _lle(ridge=lambda gram, reg: reg),
    "one trace for all the rows together": _lle(ridge=lambda gram, reg: reg * _trace(gram).sum()),
    "you divided the trace by k": _lle(ridge=lambda gram, reg: reg * _trace(gram)[:, None, None] / gram.shape[-1]),
    "the weights do not sum to 1": _lle(norm=False),
    "of the neighbours' rows themselves": _lle(rows=lambda x, nb: x[nb]),
    "each Gram matrix is k × k": _d_by_d,
    "dimension 0 (row) is 4 but should be 30": lambda x, nb, reg: _lle()(x, nb, reg).T,
    "each row's weights sum to 1": lambda x, nb, reg: F.normalize(_lle(norm=False)(x, nb, reg), dim=-1),
    "expected a floating-point tensor": lambda x, nb, reg: (_lle()(x, nb, reg) * 100).round().long(),
}


# --- fit_ridge ----------------------------------------------------------------------------------


def fit_ridge(x, y, lam):
    """Least squares on x stacked over √lam · I, y over zeros: the same minimiser."""
    d1 = x.shape[1]
    a = torch.cat([x, math.sqrt(lam) * torch.eye(d1)])
    b = torch.cat([y, torch.zeros(d1, y.shape[1])])
    return torch.linalg.lstsq(a, b).solution


def fit_ridge_by_pseudo_inverse_after_centring(x, y, lam):
    """Centring over the tokens again changes nothing; the pseudo-inverse copes with a singular xᵀx."""
    x, y = x - x.mean(0), y - y.mean(0)
    return torch.linalg.pinv(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype)) @ x.T @ y


def _ridge(gram_plus, scale=1.0, centre=lambda m: m, transpose=False):
    def fit_ridge(x, y, lam):
        x, y = centre(x.double()), centre(y.double())
        eye = torch.eye(x.shape[1], dtype=x.dtype)
        t = torch.linalg.solve(gram_plus(x.T @ x / scale, lam, eye), x.T @ y / scale)
        return t.T if transpose else t

    return fit_ridge


RIDGE_MISTAKES = {
    "the penalty is missing": lambda x, y, lam: torch.linalg.lstsq(x, y).solution,
    "added lam to every entry": _ridge(lambda a, lam, eye: a + lam),
    "you subtracted lam · I": _ridge(lambda a, lam, eye: a - lam * eye),
    "that is the penalty lam²": _ridge(lambda a, lam, eye: a + lam**2 * eye),
    "penalty n times stronger": _ridge(lambda a, lam, eye: a + lam * eye, scale=40),
    "centred each row on its own mean": _ridge(
        lambda a, lam, eye: a + lam * eye, centre=lambda m: m - m.mean(1)[:, None]
    ),
    "That is Tᵀ": _ridge(lambda a, lam, eye: a + lam * eye, transpose=True),
    "or a map from y to x": lambda x, y, lam: _ridge(lambda a, lam, eye: a + lam * eye)(y, x, lam),
    "the identity must match xᵀx": lambda x, y, lam: torch.linalg.solve(x.T @ x + lam * torch.eye(y.shape[1]), x.T @ y),
    "singular when lam = 0": lambda x, y, lam: x.T @ torch.linalg.solve(x @ x.T + lam * torch.eye(len(x)), y),
    "a row per token": lambda x, y, lam: torch.linalg.solve(x @ x.T + (lam + 1e-3) * torch.eye(len(x)), y),
    # right whenever xᵀx is invertible, wrong with more dimensions than rows at lam = 0
    "torch.linalg.solve or torch.linalg.inv on it has no answer": lambda x, y, lam: torch.linalg.solve(
        x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y
    ),
    "with more dimensions than rows": lambda x, y, lam: (
        torch.linalg.inv(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype)) @ x.T @ y
    ),
    "xᵀx is singular at lam = 0": lambda x, y, lam: torch.linalg.solve(
        x.float().T @ x.float() + lam * torch.eye(x.shape[1]), x.float().T @ y.float()
    ),
}


# --- stream_alignment ---------------------------------------------------------------------------


def stream_alignment(t, source, target):
    """R² after the best scale is the squared correlation of the entries (the centred columns make their
    mean zero); centring after mapping is the same as before; the results stay tensors."""
    mapped = source @ t
    x, y = mapped - mapped.mean(0), target - target.mean(0)
    r2 = torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1] ** 2
    cos = torch.stack([F.cosine_similarity(x[i], y[i], dim=0) for i in range(len(x))]).mean()
    return r2, cos


def _alignment(
    centre=(True, True), scale="one", cos=lambda x, y, sc: F.cosine_similarity(x, y, dim=-1).mean(), transpose=False
):
    """A learner's ``stream_alignment`` with one part written as given."""

    def stream_alignment(t, source, target):
        sc = source - source.mean(0) if centre[0] else source
        y = target - target.mean(0) if centre[1] else target
        x = sc @ (t.T if transpose else t)
        if scale == "one":
            s = (x * y).sum() / (x * x).sum()
        elif scale == "row":
            s = ((x * y).sum(-1) / (x * x).sum(-1))[:, None]
        elif scale == "inverse":
            s = (x * y).sum() / (y * y).sum()
        else:
            s = 1.0
        r2 = 1 - ((y - s * x) ** 2).sum() / (y**2).sum()
        return r2.item(), float(cos(x, y, sc))

    return stream_alignment


def _scalar_mean_alignment(t, source, target):
    """R² whose denominator centres the target on one overall mean (the rest right)."""
    x, y = (source - source.mean(0)) @ t, target - target.mean(0)
    s = (x * y).sum() / (x * x).sum()
    r2 = 1 - ((y - s * x) ** 2).sum() / ((target - target.mean()) ** 2).sum()
    return r2.item(), F.cosine_similarity(x, y, dim=-1).mean().item()


ALIGNMENT_MISTAKES = {
    "centres the target on one overall number": _scalar_mean_alignment,
    "plain R² of the mapped rows": _alignment(scale="none"),
    "each row by its own best factor": _alignment(scale="row"),
    "the scale divides by the wrong length": _alignment(scale="inverse"),
    "neither source nor target is centred": _alignment(centre=(False, False)),
    "the source is not centred": _alignment(centre=(False, True)),
    "the target is not centred": _alignment(centre=(True, False)),
    "cosines of columns (dim 0)": _alignment(cos=lambda x, y, sc: F.cosine_similarity(x, y, dim=0).mean()),
    "one cosine between the whole matrices": _alignment(
        cos=lambda x, y, sc: F.cosine_similarity(x.flatten(), y.flatten(), dim=0)
    ),
    "the rows before mapping": _alignment(cos=lambda x, y, sc: F.cosine_similarity(sc, y, dim=-1).mean()),
    "you mapped with t.T": _alignment(transpose=True),
    "take the cosine of the unscaled mapped rows": _alignment(
        cos=lambda x, y, sc: F.cosine_similarity(((x * y).sum() / (x * x).sum()) * x, y, dim=-1).mean()
    ),
    "returns (cos, r2)": lambda t, s, tg: stream_alignment(t, s, tg)[::-1],
    "should return a pair of numbers": lambda t, s, tg: dict(zip(("r2", "cos"), stream_alignment(t, s, tg))),
}


# --- alignment_by_stage -------------------------------------------------------------------------


def alignment_by_stage(fit, score, acts_s, acts_t, stage_pairs, scored):
    """Row indices in place of the mask, each pair's scores stacked as a float64 tensor."""
    held_out, train = scored.nonzero().flatten(), (~scored).nonzero().flatten()
    rows = []
    for s, u in stage_pairs:
        t = fit(acts_s[s, train], acts_t[u, train])
        rows.append(torch.tensor(score(t, acts_s[s, held_out], acts_t[u, held_out]), dtype=torch.float64))
    return torch.stack(rows)


def _by_stage(fit_rows="others", score_rows="scored", stages="pair", pairs=lambda p: p, once=False, ret=torch.tensor):
    """A learner's ``alignment_by_stage`` with one part written as given."""

    def alignment_by_stage(fit, score, acts_s, acts_t, stage_pairs, scored):
        masks = {"scored": scored, "others": ~scored, "every": torch.ones_like(scored)}
        out, t = [], None
        for i, (s, u) in enumerate(pairs(stage_pairs)):
            a, b = (acts_s[s], acts_t[u]) if stages == "pair" else (acts_s[i], acts_t[i]) if stages == "i" else (
                acts_s[s], acts_t[s])  # fmt: skip
            if t is None or not once:
                t = fit(a[masks[fit_rows]], b[masks[fit_rows]])
            out.append(score(t, a[masks[score_rows]], b[masks[score_rows]]))
        return ret(out)

    return alignment_by_stage


def _last_for_last(fit, score, acts_s, acts_t, stage_pairs, scored):
    """Stage i of both models for the i-th pair, and the last stage of both for the last pair: the pairs' own stages
    are never read, which only pairs that are all (i, i) but the last would let through."""
    rows = []
    for i in range(len(stage_pairs)):
        a, b = (acts_s[-1], acts_t[-1]) if i == len(stage_pairs) - 1 else (acts_s[i], acts_t[i])
        rows.append(score(fit(a[~scored], b[~scored]), a[scored], b[scored]))
    return torch.tensor(rows)


def _target_first(fit, score, acts_s, acts_t, stage_pairs, scored):
    rows = []
    for s, u in stage_pairs:
        a, b = acts_s[s], acts_t[u]
        rows.append(score(fit(b[~scored], a[~scored]), a[scored], b[scored]))
    return torch.tensor(rows)


STAGE_MISTAKES = {
    "fits the map on the rows it then scores": _by_stage(fit_rows="scored"),
    "fits the map on every row": _by_stage(fit_rows="every"),
    "scores every row": _by_stage(score_rows="every"),
    "scores the rows the map was fitted on": _by_stage(fit_rows="others", score_rows="others"),
    "takes stage 2 of both models for pair 2, (3, 2)": _by_stage(stages="i"),
    "that is the pair's place in the list, not its stages": _last_for_last,
    "the two models need not be equally deep": _by_stage(stages="same index"),
    "scores 3 of the 4 stage pairs, one left out (an off-by-one": _by_stage(pairs=lambda p: p[:-1]),
    "fits the map once and scores that one map at every stage": _by_stage(once=True),
    "each row holds (cosine, R²)": _by_stage(ret=lambda rows: torch.tensor(rows).flip(1)),
    "returns a list": _by_stage(ret=list),
    "returns shape (2, 4)": _by_stage(ret=lambda rows: torch.tensor(rows).T),
    "dimension 1 ((R², cosine)) is 1 but should be 2": _by_stage(ret=lambda rows: torch.tensor(rows)[:, 1:]),
    "calls score with shapes (4, 5)": _target_first,
}


# --- random_drops ---------------------------------------------------------------------------------


def random_drops(score, used, feeling, k, seed):
    keep_out = torch.isin(used, feeling)
    pool, n = used[~keep_out], int(keep_out.sum())
    g = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(k):
        drop = pool[torch.randperm(len(pool), generator=g)[:n]]
        scores.append(score(used[~torch.isin(used, drop)]))
    return torch.tensor(scores)


def _drops(pool="non-feeling", n="in used", passed="kept", generator="once", order="used"):
    """A learner's ``random_drops`` with one choice made wrongly."""

    def random_drops(score, used, feeling, k, seed):
        source = used if order == "used" else used.sort().values
        candidates = source[~torch.isin(source, feeling)] if pool == "non-feeling" else source
        size = int(torch.isin(used, feeling).sum()) if n == "in used" else len(feeling)
        g = torch.Generator().manual_seed(seed)
        scores = []
        for _ in range(k):
            if generator == "in loop":
                g = torch.Generator().manual_seed(seed)
            elif generator == "seed + i":
                g = torch.Generator().manual_seed(seed + len(scores))
            elif generator == "seed * (i + 1)":
                g = torch.Generator().manual_seed(seed * (len(scores) + 1))
            elif generator == "seed + 7i":
                g = torch.Generator().manual_seed(seed + 7 * len(scores))
            drop = candidates[torch.randperm(len(candidates), generator=g)[:size]]
            if generator == "twice":
                torch.randperm(len(candidates), generator=g)  # a second draw, thrown away
            kept = used[~torch.isin(used, drop)]
            scores.append(score(drop if passed == "dropped" else kept))
        return torch.tensor(scores)

    return random_drops


DROP_MISTAKES = {
    "leaves out feeling tokens": _drops(pool="every used"),
    "but only 7 of them are in `used`": _drops(n="len(feeling)"),
    "passes the 7 dropped tokens to `score`": _drops(passed="dropped"),
    "drops the same tokens in every draw": _drops(generator="in loop"),
    "but not the draws the exercise asks for (draw 0 scores": _drops(order="sorted"),
    "makes a new generator in every draw (seeded seed + i): draw 0 is right, draw 1 is not": _drops(
        generator="seed + i"
    ),
    "makes a new generator in every draw (seeded seed * (i + 1))": _drops(generator="seed * (i + 1)"),
    "draw 0 is right, but draw 1 is not (it scores": _drops(generator="seed + 7i"),
    "and so does drawing from g more than once per draw": _drops(generator="twice"),
    "called `score` 5 times": lambda f, u, fe, k, s: random_drops(f, u, fe, k - 1, s).tolist() + [0.0],
    "return score(kept) of each draw, in the order drawn": lambda f, u, fe, k, s: random_drops(f, u, fe, k, s).flip(0),
    "dimension 0 (draw) is 5 but should be 6": lambda f, u, fe, k, s: random_drops(f, u, fe, k, s)[:-1],
}


# --- angles_in_plane ----------------------------------------------------------------------------


def angles_in_plane(vectors, u, v):
    """math.atan2 in a loop, angles in [0, 2π); the share from the projection on [u, v], a 0-d tensor."""
    angles = torch.tensor([math.atan2(float(x @ v), float(x @ u)) % (2 * math.pi) for x in vectors])
    proj = vectors @ torch.stack([u, v], 1)
    return angles, proj.pow(2).sum() / vectors.pow(2).sum()


def _angles(angle=lambda a, b: torch.atan2(b, a), share=lambda a, b, x: ((a**2 + b**2).sum() / (x**2).sum()).item()):
    def angles_in_plane(vectors, u, v):
        a, b = vectors @ u, vectors @ v
        return angle(a, b), share(a, b, vectors)

    return angles_in_plane


ANGLE_MISTAKES = {
    "the arguments of atan2 are swapped": _angles(angle=lambda a, b: torch.atan2(a, b)),
    "uses atan(x·v / x·u)": _angles(angle=lambda a, b: torch.atan(b / a)),
    "returns degrees": _angles(angle=lambda a, b: torch.rad2deg(torch.atan2(b, a))),
    "returns a share per vector": _angles(share=lambda a, b, x: (a**2 + b**2) / (x**2).sum(-1)),
    "averaged each vector's own share": _angles(share=lambda a, b, x: ((a**2 + b**2) / (x**2).sum(-1)).mean().item()),
    "that share uses lengths (norms)": _angles(share=lambda a, b, x: (a**2 + b**2).sqrt().sum() / x.norm(dim=-1).sum()),
    "use squared lengths, Σ((x·u)² + (x·v)²) / Σ‖x‖²": _angles(
        share=lambda a, b, x: math.sqrt((a**2 + b**2).sum() / (x**2).sum())
    ),
    "that is a percentage": _angles(share=lambda a, b, x: 100 * ((a**2 + b**2).sum() / (x**2).sum()).item()),
    "the share along u alone": _angles(share=lambda a, b, x: ((a**2).sum() / (x**2).sum()).item()),
    "returns (share, angles)": lambda x, u, v: _angles()(x, u, v)[::-1],
    "should return a pair (angles, share)": lambda x, u, v: torch.atan2(x @ v, x @ u),
    "returned a tensor with 2 dimensions": lambda x, u, v: (torch.atan2(x @ v, x @ u)[:, None], 0.5),
}


# --- every check ----------------------------------------------------------------------------------

CASES = {
    "distance_correlation": (c.check_distance_correlation, distance_correlation, CORRELATION_MISTAKES),
    "shared_neighbours": (c.check_shared_neighbours, shared_neighbours, NEIGHBOUR_MISTAKES),
    "lle_weights": (c.check_lle_weights, lle_weights, LLE_MISTAKES),
    "fit_ridge": (c.check_fit_ridge, fit_ridge, RIDGE_MISTAKES),
    "stream_alignment": (c.check_stream_alignment, stream_alignment, ALIGNMENT_MISTAKES),
    "alignment_by_stage": (c.check_alignment_by_stage, alignment_by_stage, STAGE_MISTAKES),
    "random_drops": (c.check_random_drops, random_drops, DROP_MISTAKES),
    "angles_in_plane": (c.check_angles_in_plane, angles_in_plane, ANGLE_MISTAKES),
}


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_check_accepts_a_correct_solution_and_rejects_the_stub_and_each_mistake(exercise, prove_check):
    check, solution, wrong = CASES[exercise]
    prove_check(check, solution, wrong)


def test_shuffled_null_check_accepts_a_correct_null_and_rejects_the_stub_and_each_mistake(prove_check):
    prove_check(c.check_shuffled_null, shuffled_null, NULL_MISTAKES)


REFERENCES = {
    c.check_distance_correlation: ref.distance_correlation,
    c.check_shared_neighbours: ref.shared_neighbours,
    c.check_lle_weights: ref.lle_weights,
    c.check_fit_ridge: ref.fit_ridge,
    c.check_stream_alignment: ref.stream_alignment,
    c.check_random_drops: ref.random_drops,
    c.check_angles_in_plane: ref.angles_in_plane,
}


@pytest.mark.parametrize("check", list(REFERENCES), ids=lambda f: f.__name__)
def test_checks_accept_the_reference(check, capsys):
    check(REFERENCES[check])
    assert "✓" in capsys.readouterr().out


def test_shuffled_null_check_accepts_the_reference(capsys):
    c.check_shuffled_null(ref.shuffled_null)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize(
    "check,solution",
    [
        (c.check_distance_correlation, distance_correlation_of_similarities),
        (c.check_distance_correlation, distance_correlation_both_triangles),
        (c.check_shared_neighbours, shared_neighbours_dropping_the_first),
        (c.check_fit_ridge, fit_ridge_by_pseudo_inverse_after_centring),
    ],
    ids=lambda f: getattr(f, "__name__", ""),
)
def test_checks_accept_correct_solutions_written_another_way(check, solution, capsys):
    check(solution)
    assert "✓" in capsys.readouterr().out


def test_shuffling_the_rows_of_x_instead_of_y_is_accepted_as_the_same_null(capsys):
    c.check_shuffled_null(shuffled_null_of_x)
    assert "✓" in capsys.readouterr().out


def test_the_null_check_leaves_the_global_generator_as_it_was():
    state = torch.get_rng_state()
    with pytest.raises(CheckFailed, match="global random generator"):
        c.check_shuffled_null(NULL_MISTAKES["uses (or reseeds) torch's global random generator"])
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    "check,wrong,message",
    [
        (c.check_shuffled_null, lambda f, x, y, n, seed: shuffled_null(f, x, y, n, seed)[:, None], r"2 dimensions"),
        (c.check_shuffled_null, lambda f, x, y, n, seed: shuffled_null(f, x, y, n - 1, seed), r"dimension 0 \(draw\)"),
        (c.check_lle_weights, lambda x, nb, reg: lle_weights(x, nb[:, :-1], reg), r"dimension 1 \(neighbour\)"),
        (c.check_fit_ridge, lambda x, y, lam: fit_ridge(x, y, lam)[:, :-1], r"dimension 1 \(d₂\)"),
        (c.check_random_drops, lambda *a: random_drops(*a)[:, None], r"2 dimensions"),
        (c.check_random_drops, lambda *a: random_drops(*a).long(), r"dtype torch.int64"),
        (c.check_angles_in_plane, lambda x, u, v: (torch.atan2(x @ v, x @ u)[1:], 0.5), r"dimension 0 \(vector\)"),
    ],
    ids=["null-rank", "null-length", "lle-k", "ridge-d2", "drops-rank", "drops-dtype", "angles-k"],
)
def test_wrong_shapes_and_dtypes_name_the_dimension_or_dtype(check, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check(wrong)
