"""Checks for lesson 07, the shared geometry of two models' embeddings: ``check_<exercise>(your_function)``.

Each check runs the learner's function on small synthetic problems whose answer is known (rows of
two "models" that are noisy linear images of each other, each row with its own length and off the
origin, so that cosines, dot products and Euclidean distances rank pairs differently) and compares
with the reference in ``utils.metrics.geometry``. When an answer is wrong, the check computes the
common wrong answers the same way and names the mistake whose result the learner's matches. A
mistake that gives the same answer as the right way (cosine similarity instead of distance in a
correlation, both triangles of a symmetric matrix) is not a mistake here and is never named.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from utils.checks.framework import (
    CheckFailed,
    call,
    call_own_generator,
    expect_close,
    expect_tensor,
    passed,
)
from utils.metrics import geometry as ref
from utils.seeds import LESSON_07_CHECKS

F = torch.nn.functional


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


def _generator(offset: int) -> torch.Generator:
    """Each check's own generator, seeded from ``LESSON_07_CHECKS``."""
    return torch.Generator().manual_seed(LESSON_07_CHECKS + offset)


def _related(g: torch.Generator, n: int, d1: int, d2: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``x`` ``[n, d₁]`` and ``y`` ``[n, d₂]`` of the same n tokens, ``y`` a noisy linear image of ``x``;
    every row has its own length and both sit off the origin."""
    x = torch.randn(n, d1, generator=g) + 0.5
    y = x @ torch.randn(d1, d2, generator=g) + noise * torch.randn(n, d2, generator=g)
    x = x * torch.exp(0.6 * torch.randn(n, 1, generator=g))
    y = y * torch.exp(0.6 * torch.randn(n, 1, generator=g))
    return x, y


def _as_float(x) -> float:
    """A Python float from a number, a NumPy scalar or a one-element tensor; NaN for anything else."""
    if isinstance(x, torch.Tensor):
        return x.item() if x.numel() == 1 else math.nan
    if isinstance(x, (bool, str)) or not hasattr(x, "__float__"):
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _number(out, name: str, what: str) -> float:
    """A learner's number (a float or a one-element tensor), or a sentence saying what came back instead."""
    if isinstance(out, torch.Tensor) and out.numel() != 1:
        raise CheckFailed(f"`{name}` should return one number ({what}), not a tensor of shape {tuple(out.shape)}.")
    value = _as_float(out)
    if math.isnan(value) and (isinstance(out, (bool, str)) or not hasattr(out, "__float__")):
        raise CheckFailed(f"`{name}` should return one number ({what}), not {type(out).__name__}.")
    if not math.isfinite(value):
        raise CheckFailed(f"`{name}` returns {value} for {what}; expected a finite number (a division by zero?).")
    return value


def _expect_value(
    value: float, want: float, name: str, what: str, mistakes: Sequence[tuple[float, str]], tol: float
) -> None:
    """Compare a number with the reference; if a known wrong answer matches instead, say which."""
    if abs(value - want) <= tol:
        return
    for wrong, message in mistakes:
        if abs(value - wrong) <= tol:
            raise CheckFailed(f"`{name}`: {message}")
    raise CheckFailed(f"`{name}` gives {what} = {value:.4g}; expected {want:.4g}.")


# --- 1. global geometry: the correlation of two distance matrices ------------------------------------


def _upper(m: torch.Tensor, offset: int = 1) -> torch.Tensor:
    i, j = torch.triu_indices(len(m), len(m), offset)
    return m[i, j]


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1].item()


def _uncentred(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a * b).sum() / (a.norm() * b.norm())).item()


def _ranks(a: torch.Tensor) -> torch.Tensor:
    return a.argsort().argsort().double()


def _correlation_mistakes(x: torch.Tensor, y: torch.Tensor) -> list[tuple[float, str]]:
    """Wrong ways to correlate the distance matrices of x and y, with what each gets wrong."""
    x, y = x.double(), y.double()
    dx, dy = ref.cosine_distances(x), ref.cosine_distances(y)
    want = _pearson(_upper(dx), _upper(dy))
    euclid = (
        "you used Euclidean distances: the exercise uses cosine distances, 1 − cos, which ignore each row's length."
    )
    return [
        (_pearson(_upper(torch.cdist(x, x)), _upper(torch.cdist(y, y))), euclid),
        (_pearson(_upper(torch.cdist(x, x) ** 2), _upper(torch.cdist(y, y) ** 2)), euclid),
        (_pearson(_upper(1 - x @ x.T), _upper(1 - y @ y.T)), "you used dot products of the raw rows: normalise "
         "each row to length 1 first (F.normalize(x, dim=-1)), so that 1 − x̂ x̂ᵀ is the cosine distance."),
        (_pearson(_upper(dx, 0), _upper(dy, 0)), "you included the diagonal (every token's zero distance to itself): "
         "keep the entries strictly above it, torch.triu_indices(n, n, 1)."),
        (_pearson(dx.flatten(), dy.flatten()), "you correlated the whole matrices, diagonal included (every token's "
         "zero distance to itself): keep the entries strictly above the diagonal, torch.triu_indices(n, n, 1)."),
        (_pearson(_ranks(_upper(dx)), _ranks(_upper(dy))), "that is Spearman's rank correlation: the exercise asks "
         "for Pearson's, on the distances themselves (torch.corrcoef)."),
        (-want, "the sign is flipped: you correlated a similarity (cos) with a distance (1 − cos); use the same "
         "kind for both matrices."),
        (_uncentred(_upper(dx), _upper(dy)), "that is a cosine of the two distance vectors, not their correlation: "
         "subtract each vector's mean before the dot product, a − a.mean() (or use torch.corrcoef)."),
        (_pearson(_upper(ref.cosine_distances(x - x.mean(0))), _upper(ref.cosine_distances(y - y.mean(0)))),
         "you centred the columns before the cosines: the exercise takes cosines of the rows as they are "
         "(a model's embedding rows are not centred before Lee et al.'s comparison)."),
    ]  # fmt: skip


def check_distance_correlation(fn: Callable) -> None:
    """fn(x [n, d₁], y [n, d₂]) -> float: Pearson r of the upper triangles of the cosine-distance matrices.

    Two wrong-looking ways give the right r and are accepted: correlating cosine *similarities*
    (r is unchanged by 1 − ·) and using both triangles without the diagonal (each pair twice).
    """
    name = _name(fn, "distance_correlation")
    g = _generator(1)
    for n, d1, d2, noise in ((24, 5, 8, 1.5), (30, 7, 4, 0.5)):
        x, y = _related(g, n, d1, d2, noise)
        out = call(fn, x, y, name=name)
        if isinstance(out, torch.Tensor):
            if tuple(out.shape) == (2, 2):
                raise CheckFailed(f"`{name}` returns torch.corrcoef's whole 2 × 2 matrix: take its off-diagonal entry, "
                                  "[0, 1], as a Python float (.item()).")  # fmt: skip
            if out.numel() == 1:
                raise CheckFailed(f"`{name}` returns a tensor ({out.item():.4g}): return a Python float, .item(), "
                                  "as the exercise asks (the lesson formats, compares and plots these "
                                  "numbers).")  # fmt: skip
        value = _number(out, name, "the correlation r")
        want = ref.distance_correlation(x, y)
        _expect_value(value, want, name, "r", _correlation_mistakes(x, y), tol=1e-4)
    passed(name, "Pearson r of the cosine distances above the diagonal")


# --- 2. the shuffled-token null ---------------------------------------------------------------------


def _row_sum_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """A cheap statistic between -1 and 1 that depends on which row of b goes with which row of a, and on
    nothing else (shuffling the columns of either leaves it as it is)."""
    return float(torch.corrcoef(torch.stack([a.double().sum(1), b.double().sum(1)]))[0, 1])


def _null_variant(stat: Callable, x: torch.Tensor, y: torch.Tensor, n: int, seed: int, shuffle: str) -> torch.Tensor:
    """The null drawn another way: ``shuffle="x"``, the same draws applied to x's rows (the same null);
    ``"fresh"``, a new generator for each draw, seeded ``seed + i``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        if shuffle == "fresh":
            g = torch.Generator().manual_seed(seed + i)
        p = torch.randperm(len(y), generator=g)
        out.append(stat(x[p], y) if shuffle == "x" else stat(x, y[p]))
    return torch.tensor(out, dtype=torch.float64)


def check_shuffled_null(fn: Callable) -> None:
    """fn(statistic, x [n, d₁], y [n, d₂], n_draws, seed) -> [n_draws]: statistic(x, y[perm]) for one
    ``torch.randperm`` per draw, all drawn from one ``torch.Generator().manual_seed(seed)``.

    The check passes its own statistic (so a null that ignores the argument shows). Shuffling x's rows
    instead of y's, with the same draws, is the same null and is accepted.
    """
    name = _name(fn, "shuffled_null")
    g = _generator(2)
    x, y = _related(g, 20, 5, 7, noise=0.5)
    n = 30
    stat = _row_sum_correlation

    def run(seed: int) -> torch.Tensor:
        out = call_own_generator(fn, stat, x, y, n, seed, name=name)
        if isinstance(out, (list, tuple)):
            raise CheckFailed(f"`{name}` returns a {type(out).__name__}: return a float tensor [n], "
                              "torch.tensor(values).")  # fmt: skip
        if isinstance(out, (int, float)) or (isinstance(out, torch.Tensor) and out.ndim == 0):
            raise CheckFailed(f"`{name}` returns one number: return all n values of the null, a tensor [n] (the "
                              "lesson takes their mean, spread and largest size itself).")  # fmt: skip
        return expect_tensor(out, (n,), ["draw"], name).detach().double().cpu()

    seeds = (LESSON_07_CHECKS, LESSON_07_CHECKS + 1)
    outs = [run(s) for s in seeds]
    again = run(seeds[0])

    def matches(out: torch.Tensor, want: torch.Tensor) -> bool:
        return torch.allclose(out, want, atol=1e-5, rtol=0)

    def expected(seed: int, shuffle: str = "y", statistic: Callable = stat) -> torch.Tensor:
        if shuffle == "y":
            return ref.shuffled_null(statistic, x, y, n, seed).double()
        return _null_variant(statistic, x, y, n, seed, shuffle)

    if all(matches(o, expected(s)) or matches(o, expected(s, "x")) for o, s in zip(outs, seeds)):
        passed(name, f"{n} draws from one generator, each scored with the statistic it is given")
        return
    out, seed = outs[0], seeds[0]
    if not torch.equal(out, again):
        raise CheckFailed(f"`{name}` gives different values for the same seed: draw every permutation from "
                          "g = torch.Generator().manual_seed(seed), made once.")  # fmt: skip
    if matches(out, expected(seed, statistic=ref.distance_correlation)):
        raise CheckFailed(f"`{name}` scores every draw with distance_correlation, not with the `statistic` it is "
                          "given: call statistic(x, y_shuffled), so the same null serves any comparison.")  # fmt: skip
    if matches(out, torch.full_like(out, stat(x, y))):
        raise CheckFailed(f"`{name}`'s every value is the unshuffled statistic: shuffling x and y the same way "
                          "(or y's columns, or not at all) keeps every token with its own row, so nothing changes. "
                          "Shuffle the rows of y alone, y[torch.randperm(len(y), generator=g)].")  # fmt: skip
    if (out.max() - out.min()).item() < 1e-9:
        raise CheckFailed(f"`{name}` gives the same value for all {n} draws: every draw used the same permutation. "
                          "Either the generator is made afresh inside the loop (torch.Generator().manual_seed(seed) "
                          "for each draw), or one permutation is drawn once and reused. Make the generator once, "
                          "before the loop, and draw a new torch.randperm(len(y), generator=g) inside it, for every "
                          "draw.")  # fmt: skip
    if torch.equal(outs[0], outs[1]):
        raise CheckFailed(f"`{name}` gives the same values for seeds {seeds[0]} and {seeds[1]}: seed the generator "
                          "with the `seed` argument, torch.Generator().manual_seed(seed).")  # fmt: skip
    if matches(out, expected(seed, "fresh")):
        raise CheckFailed(f"`{name}` seeds a new generator for each draw (seed + i): make one generator, "
                          "torch.Generator().manual_seed(seed), before the loop, and draw every permutation from "
                          "it.")  # fmt: skip
    want = expected(seed)
    i = int((out - want).abs().argmax())
    raise CheckFailed(
        f"`{name}`'s values are not the null the exercise draws: draw {i} is {out[i]:.4f}, expected {want[i]:.4f}. "
        "The check rebuilds the null with one generator g = torch.Generator().manual_seed(seed), made before the "
        "loop, and one statistic(x, y[torch.randperm(len(y), generator=g)]) per draw."
    )


# --- 3. local geometry: shared nearest neighbours -------------------------------------------------------


def _knn(m: torch.Tensor, k: int, how: str = "cosine", itself: bool = False) -> torch.Tensor:
    """Each row's k nearest rows ``[n, k]`` by ``how`` (cosine, dot, euclidean; farthest: the k farthest by
    cosine); ``itself``: the row itself may count as one of them."""
    m = m.double()
    if how == "euclidean":
        score = -torch.cdist(m, m)
    elif how == "dot":
        score = m @ m.T
    else:
        u = F.normalize(m, dim=-1)
        score = u @ u.T if how == "cosine" else 1 - u @ u.T
    if not itself:
        score.fill_diagonal_(-math.inf)
    return score.topk(k, dim=-1).indices


def _common(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How many of each row's entries of a are among its entries of b, ``[n]``."""
    return (a[:, :, None] == b[:, None, :]).any(-1).double().sum(-1)


def _neighbour_mistakes(x: torch.Tensor, y: torch.Tensor, k: int) -> list[tuple[float, str]]:
    def share(how: str = "cosine", itself: bool = False, kk: int = k) -> float:
        return (_common(_knn(x, kk, how, itself), _knn(y, kk, how, itself)) / kk).mean().item()

    itself = ("you counted each token as its own neighbour (it is always nearest to itself, in both models): set the "
              "diagonal of the similarity matrix to -inf before topk, so that the k are *other* tokens.")  # fmt: skip
    common = _common(_knn(x, k), _knn(y, k))
    return [
        (share(itself=True), itself),
        (share(itself=True, kk=k + 1), itself),
        (share("dot"), "you ranked neighbours by dot product: normalise the rows first (cosine similarity), so that a "
         "long row is not everyone's nearest neighbour."),
        (share("euclidean"), "you ranked neighbours by Euclidean distance: the exercise uses cosine similarity "
         "(normalise the rows, then x̂ x̂ᵀ)."),
        (share("farthest"), "you took the k *farthest* tokens: topk of a similarity gives the nearest; topk of a "
         "distance needs largest=False."),
        (common.mean().item(), "that is the mean number of shared neighbours: divide by k, for a share from 0 "
         "to 1."),
        ((common / (2 * k - common)).mean().item(), "you divided the shared neighbours by the size of the union "
         "(Jaccard): the share is of the k, |A ∩ B| / k."),
        ((_knn(x, k) == _knn(y, k)).double().mean().item(), "you compared the two lists position by position (the "
         "1st nearest with the 1st, ...): compare them as sets, a neighbour counts wherever it is in the other "
         "list, (a[:, :, None] == b[:, None, :]).any(-1)."),
        ((_common(_knn(x, k - 1), _knn(y, k - 1)) / k).mean().item(), "you kept only k − 1 other tokens (topk(k) "
         "with the token itself among them, then dropped it): mask the diagonal with -inf first, then take topk(k)."),
        ((_common(_knn(x, k - 1), _knn(y, k - 1)) / (k - 1)).mean().item(), "you kept only k − 1 other tokens "
         "(topk(k) with the token itself among them, then dropped it): mask the diagonal with -inf first, then take "
         "topk(k)."),
    ]  # fmt: skip


_RANKINGS = {"cosine": "cosine similarity", "dot": "dot product", "euclidean": "Euclidean distance"}


def _ranking_of_each_side(fn: Callable, x: torch.Tensor, name: str) -> dict[str, str | None]:
    """Which ranking the learner's function uses on each side, read from its neighbour sets.

    Rows of length 1 rank alike by cosine, dot product and Euclidean distance, so with ``x`` on one side and
    ``x``'s rows scaled to length 1 on the other, the function's answer compares the neighbour sets its ranking
    gives ``x`` with the cosine neighbour sets. The side's ranking is the one whose sets give that answer, for
    k = 5 and k = 3 alike; None if no ranking, or more than one, does.
    """
    unit = F.normalize(x, dim=-1)
    found = {}
    for side, args in (("x", (x, unit)), ("y", (unit, x))):
        fits = set(_RANKINGS)
        for k in (5, 3):
            value = _as_float(call(fn, *args, k, name=name))
            fits &= {how for how in _RANKINGS if abs(value - (_common(_knn(x, k, how), _knn(x, k)) / k).mean()) <= 1e-6}
        found[side] = fits.pop() if len(fits) == 1 else None
    return found


def check_shared_neighbours(fn: Callable) -> None:
    """fn(x [n, d₁], y [n, d₂], k) -> float: the mean share of each token's k nearest other tokens (cosine)
    that the two matrices agree on.

    A wrong answer is put down to a known mistake only if it matches that mistake for both k values tried (the
    shares are multiples of 1 / (n k), so one k alone can match by chance); a ranking that differs between
    ``x`` and ``y`` is read from the neighbour sets themselves, each side against unit rows on the other.
    """
    name = _name(fn, "shared_neighbours")
    g = _generator(3)
    x, y = _related(g, 40, 6, 9, noise=1.0)
    values, wants = {}, {}
    for k in (5, 3):
        out = call(fn, x, y, k, name=name)
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (len(x),):
            raise CheckFailed(f"`{name}` returns one share per token: average them into one number, the mean "
                              "over tokens.")  # fmt: skip
        values[k] = _number(out, name, f"the mean share for k = {k}")
        wants[k] = ref.shared_neighbours(x, y, k)
    if all(abs(values[k] - wants[k]) <= 1e-6 for k in values):
        passed(name, "the share of each token's k nearest other tokens (cosine) the two agree on")
        return
    side = _ranking_of_each_side(fn, x, name)
    if None not in side.values() and side["x"] != side["y"]:
        raise CheckFailed(f"`{name}` ranks the neighbours in `x` by {_RANKINGS[side['x']]} and those in `y` by "
                          f"{_RANKINGS[side['y']]}: rank both by cosine similarity (normalise the rows, then "
                          "x̂ x̂ᵀ), or the two lists differ because the rankings do, not the models.")  # fmt: skip
    mistakes = {k: _neighbour_mistakes(x, y, k) for k in values}
    for i, (_, message) in enumerate(mistakes[5]):
        if all(abs(values[k] - mistakes[k][i][0]) <= 1e-6 for k in values):
            raise CheckFailed(f"`{name}`: {message}")
    k = next(k for k in values if abs(values[k] - wants[k]) > 1e-6)
    raise CheckFailed(f"`{name}` gives the share for k = {k} = {values[k]:.4g}; expected {wants[k]:.4g}.")


# --- 4. LLE weights --------------------------------------------------------------------------------------


def _lle(x: torch.Tensor, nb: torch.Tensor, reg: float, diff: bool = True, ridge: str = "trace") -> torch.Tensor:
    """LLE weights the reference's way, or with one part written as given, unnormalised ``[n, k]``."""
    x = x.double()
    rows = x[nb] - x[:, None, :] if diff else x[nb]
    gram = rows @ rows.transpose(1, 2)
    k = nb.shape[1]
    trace = gram.diagonal(dim1=1, dim2=2).sum(-1)
    size = {"trace": reg * trace, "absolute": reg * torch.ones_like(trace), "none": 0 * trace,
            "pooled": reg * trace.sum() * torch.ones_like(trace), "per_neighbour": reg * trace / k}[ridge]  # fmt: skip
    gram = gram + size[:, None, None] * torch.eye(k, dtype=x.dtype)
    return torch.linalg.lstsq(gram, torch.ones(len(x), k, 1, dtype=x.dtype)).solution[..., 0]


def _sum_to_one(w: torch.Tensor) -> torch.Tensor:
    return w / w.sum(-1, keepdim=True)


def check_lle_weights(fn: Callable) -> None:
    """fn(x [n, d], neighbours [n, k] long, reg) -> [n, k]: weights summing to 1 that best rebuild each row
    from its neighbours, the Gram matrix of the differences regularised by reg × its trace.

    The first case has fewer neighbours than dimensions (every Gram matrix invertible) and a large
    reg, so that each way of regularising gives its own weights; the second has more neighbours
    than dimensions, where the Gram matrices are singular and only a regularised solve works.
    """
    name = _name(fn, "lle_weights")
    g = _generator(4)
    explain = {
        torch.linalg.LinAlgError: "The Gram matrices are singular when there are more neighbours than dimensions: "
        "add reg · trace(G) · I to each before solving.",
        RuntimeError: "If that is a size mismatch, each Gram matrix is k × k: with diff = x[neighbours] − x[:, None] "
        "[n, k, d], it is diff @ diff.transpose(1, 2).",
    }
    for n, d, k, reg in ((30, 6, 4, 0.1), (30, 3, 6, 1e-3)):
        x = 4 * torch.randn(n, d, generator=g) + 1.0
        nb = ref.nearest_neighbours(x, k)
        out = expect_tensor(call(fn, x, nb, reg, name=name, explain=explain), (n, k), ["row", "neighbour"], name)
        want = ref.lle_weights(x, nb, reg)
        hints = [
            (_sum_to_one(_lle(x, nb, reg, ridge="none")), "the Gram matrix is not regularised: add reg × its trace "
             "to its diagonal, G + reg · trace(G) · I, before solving (adding it to every entry comes to the same "
             "as nothing, once w is divided by its sum)."),
            (_sum_to_one(_lle(x, nb, reg, ridge="absolute")), "the regulariser is absolute, G + reg · I: make it "
             "relative to each Gram matrix's size, G + reg · trace(G) · I, so that it means the same whatever the "
             "scale of the rows."),
            (_sum_to_one(_lle(x, nb, reg, ridge="per_neighbour")), "you divided the trace by k (reg · trace(G) / k, as "
             "some LLE codes do): the exercise regularises with reg · trace(G) · I."),
            (_sum_to_one(_lle(x, nb, reg, ridge="pooled")), "you took one trace for all the rows together: each "
             "row's Gram matrix is regularised by reg × its *own* trace, gram.diagonal(dim1=1, dim2=2).sum(-1)."),
            (_lle(x, nb, reg), "the weights do not sum to 1: divide each row's solution w by its sum."),
            (_sum_to_one(_lle(x, nb, reg, diff=False)), "that Gram matrix is of the neighbours' rows themselves: "
             "take it of the differences x_nbr(j) − xᵢ, which is what makes the weights rebuild xᵢ."),
        ]  # fmt: skip
        try:
            expect_close(out, want, name, f"weights ({k} neighbours in {d} dimensions)", atol=1e-4, rtol=1e-3,
                         hints=hints)  # fmt: skip
        except CheckFailed as e:
            sums = out.detach().double().cpu().sum(-1)
            if "gives the wrong" in e.args[0] and not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
                i = int((sums - 1).abs().argmax())
                raise CheckFailed(f"`{name}`'s weights for row {i} sum to {sums[i]:.4g}: each row's weights sum to 1 "
                                  "(divide the solution w by its sum).") from None  # fmt: skip
            raise
    passed(name, "weights summing to 1, the Gram matrix of the differences regularised by reg × its trace")


# --- 5. a ridge map ----------------------------------------------------------------------------------------


def _solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.lstsq(a.double(), b.double()).solution


def check_fit_ridge(fn: Callable) -> None:
    """fn(x [n, d₁], y [n, d₂], lam) -> T [d₁, d₂] = (xᵀx + lam I)⁻¹ xᵀy, for centred rows.

    The rows come centred, as the exercise says; a penalty of half the mean eigenvalue of xᵀx and
    then lam = 0 (least squares); then lam = 0 with more dimensions than rows, where xᵀx is singular.
    """
    name = _name(fn, "fit_ridge")
    g = _generator(5)
    n, d1, d2 = 40, 4, 6
    x = torch.randn(n, d1, generator=g) * torch.tensor([0.3, 1.0, 2.0, 4.0])
    y = x @ torch.randn(d1, d2, generator=g) + torch.randn(n, d2, generator=g)
    x, y = x - x.mean(0), y - y.mean(0)
    explain = {
        torch.linalg.LinAlgError: "With lam = 0 the n × n system x xᵀ is singular: solve the d₁ × d₁ one, "
        "(xᵀx + lam I) T = xᵀy, with torch.linalg.lstsq.",
        RuntimeError: "If that is a size mismatch, the identity must match xᵀx, [d₁, d₁]: torch.eye(x.shape[1]).",
    }
    for lam in (ref.ridge_penalty(x, 0.5), 0.0):
        out = call(fn, x, y, lam, name=name, explain=explain)
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (d2, d1):
            raise CheckFailed(f"`{name}` returns shape {(d2, d1)}: dimension 0 is d₂ = {d2} (y's columns) where it "
                              f"should be d₁ = {d1} (x's columns). That is Tᵀ, or a map from y to x: T is [d₁, d₂], "
                              "so that x @ T ≈ y.")  # fmt: skip
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (n, d2):
            raise CheckFailed(f"`{name}` returns shape {(n, d2)}, [n, d₂]: that is a row per token (x @ T, or a solve "
                              "with the n × n matrix x xᵀ): return the map T itself, [d₁, d₂].")  # fmt: skip
        out = expect_tensor(out, (d1, d2), ["d₁", "d₂"], name)
        want = ref.fit_ridge(x, y, lam)
        eye = torch.eye(d1, dtype=torch.float64)
        gram, xy = x.double().T @ x.double(), x.double().T @ y.double()
        xr, yr = (x - x.mean(1, keepdim=True)).double(), (y - y.mean(1, keepdim=True)).double()
        hints = [
            (_solve(gram, xy), "the penalty is missing, (xᵀx)⁻¹ xᵀy: solve (xᵀx + lam I) T = xᵀy."),
            (_solve(gram + lam, xy), "you added lam to every entry of xᵀx: add it to the diagonal only, "
             "xᵀx + lam · I (torch.eye(d₁))."),
            (_solve(gram - lam * eye, xy), "you subtracted lam · I: the penalty adds it, xᵀx + lam · I."),
            (_solve(gram + lam**2 * eye, xy), "that is the penalty lam²: if you stacked lam · I under x, stack "
             "√lam · I (its square is lam · I)."),
            (_solve(gram / n + lam * eye, xy / n), "you divided xᵀx and xᵀy by n (the mean squared error), which "
             "makes the penalty n times stronger: the objective sums the squared errors."),
            (_solve(xr.T @ xr + lam * eye, xr.T @ yr), "you centred each row on its own mean (dim 1): the rows come "
             "centred over the tokens already; use x and y as given."),
        ]  # fmt: skip
        what = "map (least squares, lam = 0)" if lam == 0 else f"map (lam = {lam:.4g})"
        try:
            expect_close(out, want, name, what, atol=1e-4, rtol=1e-3, hints=hints)
        except CheckFailed as e:
            if lam == 0 and "gives the wrong" in e.args[0]:  # the penalised map passed
                raise CheckFailed(f"`{name}` is right with a penalty but not with lam = 0 (least squares). If you "
                                  "solved the n × n system x xᵀ + lam I (the dual form), it is singular when lam = 0: "
                                  "solve the d₁ × d₁ one, (xᵀx + lam I) T = xᵀy, with "
                                  "torch.linalg.lstsq.") from None  # fmt: skip
            raise
    # More dimensions than rows, as in the lesson's least squares (about 200 tokens, 256 dimensions): xᵀx is singular
    # at lam = 0, and the answer is the least-squares map of smallest norm. Built in float64, so that the centred
    # rows have no rounding direction of their own and every correct method agrees.
    n, d1 = 12, 16
    x = torch.randn(n, d1, generator=g, dtype=torch.float64) * torch.linspace(0.3, 3.0, d1, dtype=torch.float64)
    y = x @ torch.randn(d1, d2, generator=g, dtype=torch.float64) + torch.randn(n, d2, generator=g, dtype=torch.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    singular = (
        f"With more dimensions than rows (here n = {n}, d₁ = {d1}; in the lesson about 200 tokens and 256 "
        "dimensions), xᵀx is singular at lam = 0, and torch.linalg.solve or torch.linalg.inv on it has no answer: "
        "they raise, or return huge, meaningless numbers. Use torch.linalg.lstsq, which returns the least-squares "
        "map of smallest norm."
    )
    out = call(fn, x, y, 0.0, name=name, explain={torch.linalg.LinAlgError: singular})
    out = expect_tensor(out, (d1, d2), ["d₁", "d₂"], name)
    try:
        expect_close(out, ref.fit_ridge(x, y, 0.0), name, "map (lam = 0, d₁ > n)", atol=1e-4, rtol=1e-3)
    except CheckFailed:
        raise CheckFailed(f"`{name}` is right when there are more rows than dimensions but not with more "
                          f"dimensions than rows. {singular}") from None  # fmt: skip
    passed(name, "T = (xᵀx + lam I)⁻¹ xᵀy, [d₁, d₂], with a penalty and without, and with more dimensions than rows")


# --- 6. scoring a map on activations -------------------------------------------------------------------


def _alignment_variants(t, source, target) -> dict[str, tuple[float, float]]:
    """(r2, cos) of the right way and of each wrong one, by name."""
    t, source, target = t.double(), source.double(), target.double()

    def score(x, y, scale="one", cos_of=None, cos_dim=-1):
        if scale == "one":
            s = (x * y).sum() / x.pow(2).sum()
        elif scale == "row":
            s = ((x * y).sum(-1) / x.pow(2).sum(-1))[:, None]
        elif scale == "inverse":
            s = (x * y).sum() / y.pow(2).sum()
        else:
            s = 1.0
        r2 = 1 - (y - s * x).pow(2).sum() / y.pow(2).sum()
        a, b = cos_of if cos_of is not None else (x, y)
        cos = F.cosine_similarity(a, b, dim=cos_dim).mean()
        return r2.item(), cos.item()

    def score_scale(x, y):
        return (x * y).sum() / x.pow(2).sum()

    sc, tc = source - source.mean(0), target - target.mean(0)
    x = sc @ t
    out = {
        "right": score(x, tc),
        "plain": score(x, tc, scale="none"),
        "row": score(x, tc, scale="row"),
        "inverse": score(x, tc, scale="inverse"),
        "neither centred": score(source @ t, target),
        "source not centred": score(source @ t, tc),
        "target not centred": score(x, target),
        "columns": score(x, tc, cos_dim=0),
        "scalar mean": (
            (1 - (tc - score_scale(x, tc) * x).pow(2).sum() / (target - target.mean()).pow(2).sum()).item(),
            F.cosine_similarity(x, tc, dim=-1).mean().item(),
        ),
        "flat": score(x, tc, cos_of=(x.flatten(), tc.flatten()), cos_dim=0),
        "scaled": score(x, tc, cos_of=(score_scale(x, tc) * x, tc)),
    }
    if t.shape[0] == t.shape[1]:
        out["before mapping"] = score(x, tc, cos_of=(sc, tc))
        out["t.T"] = score(sc @ t.T, tc)
    return out


_ALIGNMENT_MISTAKES = {
    "plain": "that is the plain R² of the mapped rows: first scale them by the one best overall factor "
    "s = Σ⟨x̂, y⟩ / Σ‖x̂‖², then R² = 1 − ‖y − s x̂‖² / ‖y‖².",
    "row": "you scaled each row by its own best factor: use one factor for all the rows, s = Σ⟨x̂, y⟩ / Σ‖x̂‖² "
    "with the sums over every entry.",
    "inverse": "the scale divides by the wrong length: s = Σ⟨x̂, y⟩ / Σ‖x̂‖², the *mapped* rows' squared length.",
    "neither centred": "neither source nor target is centred: subtract each one's mean row (the mean over the "
    "tokens, dim 0) before mapping.",
    "source not centred": "the source is not centred: subtract its mean row, source − source.mean(0), before mapping.",
    "target not centred": "the target is not centred: subtract its mean row, target − target.mean(0).",
    "scalar mean": "the R²'s denominator centres the target on one overall number, target.mean(): centre each "
    "column on its own mean, y = target − target.mean(0), and divide by ‖y‖². A residual stream's columns have "
    "different means, and the overall one leaves their spread in the denominator.",
    "columns": "those are cosines of columns (dim 0): compare rows, F.cosine_similarity(x̂, y, dim=-1), then average.",
    "flat": "that is one cosine between the whole matrices: take each row's cosine with its true row, then the mean.",
    "before mapping": "the cosines are of the rows before mapping: compare the mapped rows x̂ = (source − mean) @ t "
    "with the target's rows.",
    "t.T": "you mapped with t.T: source rows [n, d₁] map by x @ t, with t [d₁, d₂].",
    "scaled": "take the cosine of the unscaled mapped rows x̂: the best scale s is negative here, and s x̂ turns "
    "every row round.",
}


def check_stream_alignment(fn: Callable) -> None:
    """fn(t [d₁, d₂], source [n, d₁], target [n, d₂]) -> (r2, cos): R² after one best overall scale and the mean
    row cosine, both matrices centred on their own means and the source mapped by t.

    The first case has d₁ = d₂, so that mapping with t.T or comparing the unmapped rows gives
    numbers to recognise; the second has d₁ ≠ d₂. In both the target is 2.5 times the size the
    map gives, so that the scale factor matters, and both sit far from the origin, the target's columns each at
    its own mean, so that centring on one overall mean shows. The third is the second with the target turned round,
    −2.5 times, so that the best scale is negative and a cosine taken after scaling changes sign.
    """
    name = _name(fn, "stream_alignment")
    g = _generator(6)
    explain = {RuntimeError: "If that is a size mismatch: map the centred source first, x̂ = (source − source.mean(0)) "
               "@ t is [n, d₂], the target's shape, and compare x̂ with the target's rows."}  # fmt: skip
    for d1, d2, size in ((6, 6, 2.5), (5, 8, 2.5), (5, 8, -2.5)):
        n = 80
        source = torch.randn(n, d1, generator=g) * torch.linspace(0.5, 2, d1) + 3.0
        t = torch.randn(d1, d2, generator=g)
        truth = t + 0.5 * torch.randn(d1, d2, generator=g)
        offsets = torch.linspace(-3.0, 1.0, d2)  # each column sits at its own place, as a stream's do
        target = size * (source - source.mean(0)) @ truth + torch.randn(n, d2, generator=g) + offsets
        out = call(fn, t, source, target, name=name, explain=explain)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise CheckFailed(f"`{name}` should return a pair of numbers, (r2, cos), not {type(out).__name__}.")
        r2, cos = _number(out[0], name, "r2"), _number(out[1], name, "cos")
        variants = _alignment_variants(t, source, target)
        want_r2, want_cos = variants.pop("right")
        if abs(r2 - want_cos) <= 1e-4 and abs(cos - want_r2) <= 1e-4 and abs(r2 - want_r2) > 1e-4:
            raise CheckFailed(f"`{name}` returns (cos, r2): return R² first, (r2, cos).")
        case = f"d₁ = {d1}, d₂ = {d2}" + (", a negative best scale" if size < 0 else "")
        mistakes = [(v[0], _ALIGNMENT_MISTAKES[k]) for k, v in variants.items()]
        _expect_value(r2, want_r2, name, f"R² ({case})", mistakes, tol=1e-4)
        mistakes = [(v[1], _ALIGNMENT_MISTAKES[k]) for k, v in variants.items()]
        _expect_value(cos, want_cos, name, f"the mean cosine ({case})", mistakes, tol=1e-4)
    passed(name, "R² after one best overall scale, and the mean row cosine, of the centred rows")


# --- 7. the map at every stage of the stream ------------------------------------------------------------


def _stage_problem(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]], torch.Tensor]:
    """Two made-up models' streams at the same n tokens: a source 4 layers deep (5 stages, ``[5, n, d₁]``) and a
    target 3 deep (4 stages, ``[4, n, d₂]``), each target stage a noisy linear image of the source stage paired with
    it, noisier at some stages than at others; the pairs ``(0, 0), (1, 1), (3, 2), (4, 3)`` (the source's stage 2
    in none, so that a middle pair, not only the last, sets two different stages side by side), and a mask ``[n]``
    of the rows to score, in no pattern."""
    n, d1, d2 = 48, 5, 4
    pairs = [(0, 0), (1, 1), (3, 2), (4, 3)]
    acts_s = torch.randn(5, n, d1, generator=g) * torch.linspace(0.5, 2.0, d1) + torch.randn(5, 1, d1, generator=g)
    acts_t = torch.zeros(4, n, d2)
    for (s, u), noise in zip(pairs, (0.3, 1.0, 2.0, 0.6)):
        image = acts_s[s] @ torch.randn(d1, d2, generator=g)
        acts_t[u] = image + noise * torch.randn(n, d2, generator=g) + torch.randn(d2, generator=g)
    scored = torch.randperm(n, generator=g) < 18  # 18 rows scored, 30 to fit on
    return acts_s, acts_t, pairs, scored


def _rows_of(m, stack: torch.Tensor, scored: torch.Tensor) -> tuple[int, str] | None:
    """Which stage of ``stack``, and which of its rows ("scored", "others", "every"), the block ``m`` is; None if
    it is none of them (rows centred or changed on the way, say)."""
    if not isinstance(m, torch.Tensor) or m.ndim != 2:
        return None
    m = m.detach().double().cpu()
    for stage in range(len(stack)):
        for rows, mask in (("scored", scored), ("others", ~scored), ("every", torch.ones_like(scored))):
            want = stack[stage][mask].double()
            if m.shape == want.shape and torch.allclose(m, want, atol=1e-5, rtol=0):
                return stage, rows
    return None


def _alignment_by_stage(fit, score, acts_s, acts_t, pairs, fit_rows, score_rows) -> torch.Tensor:
    """The loop with the rows it fits and scores on given: ``[pair, (R², cosine)]``."""
    out = []
    for s, u in pairs:
        a, b = acts_s[s], acts_t[u]
        out.append(score(fit(a[fit_rows], b[fit_rows]), a[score_rows], b[score_rows]))
    return torch.tensor(out, dtype=torch.float64)


def _stage_fault(name: str, i: int, pair: tuple[int, int], found: tuple, what: str) -> str | None:
    """What is wrong with the stages or rows that ``what`` ("fit", "score") got for pair i, or None."""
    (src, tgt), fix = found, "acts_s[s] and acts_t[u] for (s, u) in stage_pairs"
    if src is None or tgt is None:
        return None
    if (src[0], tgt[0]) != pair:
        if (src[0], tgt[0]) == (i, i):
            return (f"`{name}` takes stage {i} of both models for pair {i}, {pair}: that is the pair's place in the "
                    f"list, not its stages; take each pair's own stages, {fix}. The two models need not be equally "
                    "deep, and a pair's two stages need not be equal, in the middle as at the end.")  # fmt: skip
        return (f"`{name}` gives `{what}` the source's stage {src[0]} and the target's stage {tgt[0]} for pair {i}, "
                f"{pair}; take that pair's stages, {fix}.")  # fmt: skip
    rows = {src[1], tgt[1]}
    if what == "score" and rows == {"every"}:
        return (f"`{name}` scores every row, the rows the map was fitted on among them; score only the held-out "
                "rows, score(t, a[scored], b[scored]).")  # fmt: skip
    if what == "score" and rows == {"others"}:
        return (f"`{name}` scores the rows the map was fitted on (those not in `scored`), an in-sample score; score "
                "the held-out rows, score(t, a[scored], b[scored]), and fit on the others.")  # fmt: skip
    if what == "fit" and rows == {"scored"}:
        return (f"`{name}` fits the map on the rows it then scores, so a map fitted on the streams is scored in "
                "sample and looks better than it is; fit on the other rows, fit(a[~scored], b[~scored]), and score "
                "on `scored`.")  # fmt: skip
    if what == "fit" and rows == {"every"}:
        return (f"`{name}` fits the map on every row, the scored ones among them; fit on the rows not scored, "
                "fit(a[~scored], b[~scored]), so that every score is on rows the map never saw.")  # fmt: skip
    return None


def check_alignment_by_stage(fn: Callable) -> None:
    """fn(fit, score, acts_s [stages, n, d₁], acts_t [stages, n, d₂], stage_pairs, scored [n] bool) -> [pairs, 2]:
    for each (s, u) in stage_pairs, t = fit(a[~scored], b[~scored]) with a, b = acts_s[s], acts_t[u], then
    score(t, a[scored], b[scored]) = (R², cosine); one row per pair, in order.

    The check passes its own ``fit`` (a ridge map of the rows it is given, so a map fitted on the scored rows scores
    higher) and ``score`` (the reference's R² and cosine), both of which record what they are given: the stages and
    rows each call got say which mistake was made. The two made-up models differ in depth, and a middle pair as well
    as the last sets two different stages side by side, so that no loop over the pairs' places in the list, (i, i)
    with the last stage kept for the last pair or not, gets them right; the scored rows follow no pattern.
    """
    name = _name(fn, "alignment_by_stage")
    g = _generator(7)
    acts_s, acts_t, pairs, scored = _stage_problem(g)
    d1, d2, n_pairs = acts_s.shape[-1], acts_t.shape[-1], len(pairs)
    fits: list[tuple] = []  # what fit was given
    scores: list[tuple] = []  # what score was given

    def fit(a, b):
        fits.append((a, b))
        x, y = a.double() - a.double().mean(0), b.double() - b.double().mean(0)
        return ref.fit_ridge(x, y, ref.ridge_penalty(x, 0.05))

    def score(t, a, b):
        scores.append((a, b))
        shapes = [tuple(getattr(v, "shape", ())) for v in (t, a, b)]
        if not (shapes[0] == (d1, d2) and len(shapes[1]) == 2 and shapes[1][1] == d1 and shapes[2][1:] == (d2,)):
            raise CheckFailed(f"`{name}` calls score with shapes {shapes[0]}, {shapes[1]}, {shapes[2]}: pass the map "
                              f"fit returned [d₁, d₂] = {(d1, d2)}, then the source's rows [rows, d₁], then the "
                              "target's [rows, d₂], score(t, a[scored], b[scored]), with t = fit(a[~scored], "
                              "b[~scored]) (the source's rows first there too).")  # fmt: skip
        return ref.stream_alignment(t, a, b)

    explain = {IndexError: "If that is a stage out of range: take each pair's own stages, acts_s[s] and acts_t[u] for "
               "(s, u) in stage_pairs; the two models need not be equally deep (here the source has 5 stages and "
               "the target 4)."}  # fmt: skip
    out = call(fn, fit, score, acts_s, acts_t, pairs, scored, name=name, explain=explain)
    if len(scores) == n_pairs - 1 and len(fits) <= n_pairs - 1:
        raise CheckFailed(f"`{name}` scores {n_pairs - 1} of the {n_pairs} stage pairs, one left out (an off-by-one: "
                          "range(len(stage_pairs) - 1), or a range over the layers that stops before the last "
                          "stage); loop over every (s, u) in stage_pairs: the last pair, after the last layer, is "
                          "where the map fitted on W_U holds.")  # fmt: skip
    if len(fits) == 1 and len(scores) == n_pairs:
        raise CheckFailed(f"`{name}` fits the map once and scores that one map at every stage; fit it anew at each "
                          "pair, t = fit(a[~scored], b[~scored]) inside the loop: a map fitted on the streams is "
                          "fitted on each stage's own rows.")  # fmt: skip
    if len(fits) != n_pairs or len(scores) != n_pairs:
        raise CheckFailed(f"`{name}` calls fit {len(fits)} times and score {len(scores)} times for {n_pairs} stage "
                          "pairs: fit once and score once for each pair, in stage_pairs' order.")  # fmt: skip
    for what, calls in (("fit", fits), ("score", scores)):
        for i, (a, b) in enumerate(calls):
            fault = _stage_fault(name, i, pairs[i], (_rows_of(a, acts_s, scored), _rows_of(b, acts_t, scored)), what)
            if fault:
                raise CheckFailed(fault)
    if isinstance(out, (list, tuple)):
        raise CheckFailed(f"`{name}` returns a {type(out).__name__}; return a float tensor [stage pair, 2], "
                          "torch.tensor(rows) of the (r2, cos) pairs, which the lesson slices by column.")  # fmt: skip
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (2, n_pairs):
        raise CheckFailed(f"`{name}` returns shape (2, {n_pairs}), [(R², cosine), stage pair]; return one row per "
                          f"stage pair, [stage pair, 2] = ({n_pairs}, 2): torch.tensor(rows) of the list of (r2, cos) "
                          "pairs, or torch.stack along dim 0.")  # fmt: skip
    out = expect_tensor(out, (n_pairs, 2), ["stage pair", "(R², cosine)"], name).detach().double().cpu()
    want = _alignment_by_stage(fit, score, acts_s, acts_t, pairs, ~scored, scored)
    hints = [(want.flip(1), "each row holds (cosine, R²), the cosine first; keep score's order, (R², cosine), as "
              "stream_alignment returns it.")]  # fmt: skip
    expect_close(out, want, name, "(R², cosine) per stage pair", atol=1e-5, rtol=1e-4, hints=hints)
    passed(name, "one (R², cosine) per stage pair, each map fitted on the rows not scored and scored on the others")


# --- 8. the look-up's own control ------------------------------------------------------------------------


def check_random_drops(fn: Callable) -> None:
    """fn(score, used [n], feeling [m], k, seed) -> [k]: k refits, each without as many random non-feeling used tokens
    as the feeling tokens take out of ``used``, drawn with one generator; ``score(kept)`` for each, in draw order.

    The check passes its own ``score``, which records the tokens each refit keeps and returns a number made from
    them, so every way of choosing the dropped tokens shows. ``feeling`` holds ids that are not in ``used`` too.
    """
    name = _name(fn, "random_drops")
    g = _generator(9)
    used = torch.randperm(60, generator=g)[:40] + 100  # ids in no particular order
    feeling = torch.cat([used[torch.randperm(40, generator=g)[:7]], torch.tensor([5, 6, 7, 8])])  # 7 used + 4 not
    n_feel = int(torch.isin(used, feeling).sum())
    k, seed = 6, LESSON_07_CHECKS + 9
    weights = torch.randn(200, generator=g).double()
    calls: list[torch.Tensor] = []  # the tokens each refit kept
    given: list[float] = []  # and the score it got back

    def score(kept) -> float:
        kept = torch.as_tensor(kept).long().flatten()
        calls.append(kept)
        given.append(float(weights[kept % 200].sum()))
        return given[-1]

    out = call_own_generator(fn, score, used, feeling, k, seed, name=name)
    if isinstance(out, (list, tuple)):
        out = torch.tensor([_as_float(v) for v in out])
    out = expect_tensor(out, (k,), ["draw"], name).detach().double().cpu()
    if len(calls) != k:
        raise CheckFailed(f"`{name}` called `score` {len(calls)} times for k = {k} draws: refit once per draw, "
                          "score(kept) with the tokens that draw keeps.")  # fmt: skip
    used_set, feel_set = set(used.tolist()), set(feeling.tolist())
    for i, kept in enumerate(calls):
        ids = kept.tolist()
        if not set(ids) <= used_set:
            extra = sorted(set(ids) - used_set)[:4]
            raise CheckFailed(f"`{name}`'s refit {i} fits on tokens that are not in `used` ({extra}...): keep "
                              "`used` without the dropped tokens, used[~torch.isin(used, drop)].")  # fmt: skip
        if len(ids) == n_feel and set(ids) <= used_set - feel_set:
            raise CheckFailed(f"`{name}` passes the {n_feel} dropped tokens to `score`: pass the tokens the map is "
                              "fitted on, `used` without the dropped ones.")  # fmt: skip
        if not (used_set & feel_set) <= set(ids):
            raise CheckFailed(f"`{name}`'s refit {i} leaves out feeling tokens: draw the dropped tokens from the used "
                              "tokens that are NOT feeling tokens, used[~torch.isin(used, feeling)]. A control that "
                              "also removes feeling tokens shares part of the effect it is a control for.")  # fmt: skip
        dropped = len(used_set) - len(set(ids))
        if dropped != n_feel:
            hint = (f" (len(feeling) is {len(feel_set)}, but only {n_feel} of them are in `used`: count "
                    "torch.isin(used, feeling).sum())" if dropped == len(feel_set) else "")  # fmt: skip
            raise CheckFailed(f"`{name}`'s refit {i} drops {dropped} tokens: drop as many as the feeling tokens take "
                              f"out of `used`, {n_feel}{hint}, so that only which tokens go differs.")  # fmt: skip
    if len({tuple(sorted(c.tolist())) for c in calls}) == 1:
        raise CheckFailed(f"`{name}` drops the same tokens in every draw: make one generator "
                          "torch.Generator().manual_seed(seed) before the loop, a new permutation in it "
                          "each draw.")  # fmt: skip
    scores = torch.tensor(given).double()
    if not torch.allclose(out, scores, atol=1e-6, rtol=0):
        raise CheckFailed(f"`{name}` returns {out[0]:.4f} for draw 0, but `score` gave {scores[0]:.4f}: return "
                          "score(kept) of each draw, in the order drawn.")  # fmt: skip
    learner = [sorted(c.tolist()) for c in calls]
    calls.clear()
    want = ref.random_drops(score, used, feeling, k, seed).double()
    if torch.allclose(out, want, atol=1e-6, rtol=0):
        passed(name, f"{k} refits, each without {n_feel} random used tokens that are not feeling tokens")
        return
    i = next((j for j, c in enumerate(calls) if sorted(c.tolist()) != learner[j]), 0)  # the first draw that differs
    pool = used[~torch.isin(used, feeling)]

    def first_draw(s: int) -> list[int]:
        """The tokens kept by the first draw of a new generator seeded s."""
        drop = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(s))[:n_feel]]
        return sorted(used[~torch.isin(used, drop)].tolist())

    for how, seed_of in (("seed + i", lambda j: seed + j), ("seed * (i + 1)", lambda j: seed * (j + 1))):
        if all(learner[j] == first_draw(seed_of(j)) for j in range(k)):
            raise CheckFailed(f"`{name}` makes a new generator in every draw (seeded {how}): draw 0 is right, draw "
                              f"{i} is not. Make one generator, g = torch.Generator().manual_seed(seed), before the "
                              "loop, and draw every permutation from it.")  # fmt: skip
    if i > 0:
        raise CheckFailed(f"`{name}`'s draw 0 is right, but draw {i} is not (it scores {out[i]:.4f}, expected "
                          f"{want[i]:.4f}): every draw must come from the one generator, in turn. A new generator in "
                          "every draw (seeded from i, say) does this, and so does drawing from g more than once per "
                          "draw: make g = torch.Generator().manual_seed(seed) once, before the loop, and draw one "
                          "torch.randperm(len(pool), generator=g) per draw.")  # fmt: skip
    raise CheckFailed(f"`{name}` drops the right number of non-feeling tokens, but not the draws the exercise asks "
                      f"for (draw 0 scores {out[0]:.4f}, expected {want[0]:.4f}): take pool = used[~torch.isin(used, "
                      "feeling)] in `used`'s order, and drop pool[torch.randperm(len(pool), generator=g)[:n]] each "
                      "time, from one generator.")  # fmt: skip


def check_angles_in_plane(fn: Callable) -> None:
    """fn(vectors [k, d], u [d], v [d]) -> (angles [k], share): each vector's angle atan2(x·v, x·u) in radians,
    and the share of the summed squared length that lies in the plane of u and v.

    Angles are compared on the circle (an answer in [0, 2π) is as right as one in (−π, π]). The
    vectors point into all four quadrants of the plane and have out-of-plane parts of different
    sizes, so that per-vector shares, lengths and squared lengths give different numbers.
    """
    name = _name(fn, "angles_in_plane")
    g = _generator(8)
    d = 7
    basis = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    u, v, rest = basis[:, 0], basis[:, 1], basis[:, 2:]
    theta = torch.tensor([-2.8, -1.9, -0.7, 0.3, 1.2, 2.0, 2.9, -1.2, 0.9])
    k = len(theta)
    radius = 0.5 + 2.5 * torch.rand(k, generator=g)
    off = torch.randn(k, d - 2, generator=g) * (3 * torch.rand(k, 1, generator=g))
    vectors = radius[:, None] * (theta.cos()[:, None] * u + theta.sin()[:, None] * v) + off @ rest.T
    out = call(fn, vectors, u, v, name=name)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise CheckFailed(f"`{name}` should return a pair (angles, share), not {type(out).__name__}.")
    angles, share = out
    if isinstance(share, torch.Tensor) and share.numel() == k and math.isfinite(_as_float(angles)):
        raise CheckFailed(f"`{name}` returns (share, angles): return the angles first, (angles, share).")
    angles = expect_tensor(angles, (k,), ["vector"], name + " (angles)").detach().double().cpu()
    want, want_share = ref.angles_in_plane(vectors.double(), u.double(), v.double())
    a, b = vectors.double() @ u.double(), vectors.double() @ v.double()

    def on_circle(x: torch.Tensor, y: torch.Tensor) -> bool:
        return bool((torch.cos(x - y) > 1 - 1e-7).all())

    if not on_circle(angles, want):
        if on_circle(angles, torch.atan2(a, b)):
            raise CheckFailed(f"`{name}`: the arguments of atan2 are swapped: it takes the v part first, "
                              "atan2(x·v, x·u).")  # fmt: skip
        if on_circle(angles, torch.atan(b / a)):
            raise CheckFailed(f"`{name}` uses atan(x·v / x·u), which cannot tell opposite directions apart (its "
                              "angles lie within ±90°): use atan2(x·v, x·u), which sees both signs.")  # fmt: skip
        if on_circle(torch.deg2rad(angles), want):
            raise CheckFailed(f"`{name}` returns degrees: return radians, as torch.atan2 gives them.")
        i = int((1 - torch.cos(angles - want)).argmax())
        raise CheckFailed(f"`{name}` gives angle {angles[i]:.4f} rad for vector {i}; atan2(x·v, x·u) is "
                          f"{want[i]:.4f} rad.")  # fmt: skip
    if isinstance(share, torch.Tensor) and share.numel() == k:
        raise CheckFailed(f"`{name}` returns a share per vector: sum the squared projections over every vector, and "
                          "divide by the summed squared lengths: one number for the set.")  # fmt: skip
    value = _number(share, name, "the share in the plane")
    in_plane, length2 = a.pow(2) + b.pow(2), vectors.double().pow(2).sum(-1)
    mistakes = [
        ((in_plane / length2).mean().item(), "you averaged each vector's own share, which weighs a short vector as "
         "much as a long one: divide the summed squared projections by the summed squared lengths."),
        ((in_plane.sqrt().sum() / length2.sqrt().sum()).item(), "that share uses lengths (norms): use squared "
         "lengths, Σ((x·u)² + (x·v)²) / Σ‖x‖², which add up over orthogonal directions."),
        (math.sqrt(want_share), "that share uses lengths (norms): use squared lengths, Σ((x·u)² + (x·v)²) / Σ‖x‖², "
         "which add up over orthogonal directions."),
        (100 * want_share, "that is a percentage: return a share from 0 to 1."),
        ((a.pow(2).sum() / length2.sum()).item(), "that is the share along u alone: add the part along v, "
         "(x·u)² + (x·v)²."),
    ]  # fmt: skip
    _expect_value(value, want_share, name, "the share in the plane", mistakes, tol=1e-5)
    passed(name, "atan2(x·v, x·u) in radians, and one share of squared length for the whole set")
