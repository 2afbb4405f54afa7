"""Checks for lesson 08, how a countdown model verifies its own work: ``check_<exercise>(your_function)``.

Each check runs the learner's function on small synthetic problems whose answer is known
(activations, weights and attention patterns with the shapes of countdown-llama's) and
compares it with the reference in ``utils.metrics.countdown``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from utils.checks.framework import CheckFailed, as_number, call, expect_close, expect_tensor, passed
from utils.metrics import countdown as ref


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


def _hook_output(hook, act: torch.Tensor, who: str = "your hook") -> torch.Tensor:
    """Run a learner's hook on a copy of ``act``; what it returns, or the copy it edited."""
    if not callable(hook):
        raise CheckFailed(f"your function should return a hook function (act, hook) -> act, not {type(hook).__name__}.")
    given = act.clone()
    out = call(hook, given, None, name=who, in_place_ok=True)
    return given if out is None else out


# --- 1. the verdict margin ------------------------------------------------------------------------


def check_verdict_margin(fn: Callable) -> None:
    """fn(logits [batch, pos, vocab], rows [site], positions [site], this_id, not_id) -> [site]."""
    name = _name(fn, "verdict_margin")
    g = torch.Generator().manual_seed(81)
    logits = torch.randn(4, 10, 12, generator=g) * 3  # one position to spare after the last site
    rows = torch.tensor([0, 0, 2, 3, 3])
    positions = torch.tensor([3, 7, 5, 2, 8])
    this_id, not_id = 9, 4
    out = expect_tensor(call(fn, logits, rows, positions, this_id, not_id, name=name), (5,), ["site"], name)
    want = logits[rows, positions, this_id] - logits[rows, positions, not_id]
    probs = logits.softmax(-1)
    late = positions + 1
    hints = [
        (-want, "that is not − this: the margin is the logit of `this` minus the logit of `not`."),
        (probs[rows, positions, this_id] - probs[rows, positions, not_id],
         "those are probabilities: take the difference of the logits themselves."),
        (logits[rows, late, this_id] - logits[rows, late, not_id],
         "you read one position late: the logits at the `(` already predict the verdict word after it."),
        (logits[rows, positions - 1, this_id] - logits[rows, positions - 1, not_id],
         "you read one position early (the result): the prediction of the verdict is made at the `(` itself."),
    ]  # fmt: skip
    expect_close(out, want, name, "margins", hints=hints)
    passed(name, "logit of `this` minus logit of `not` at every `(`")


# --- 2. the verdict probe ---------------------------------------------------------------------------


def _probe_problem(seed: int, n: int = 600, d: int = 16):
    """Two classes told apart along one direction, with a large shared noise along another that
    also shifts the class means: a difference of means points the wrong way, a fitted probe does not."""
    fixed = torch.Generator().manual_seed(80)  # the same two directions for every sample
    true = torch.nn.functional.normalize(torch.randn(d, generator=fixed), dim=0)
    other = torch.nn.functional.normalize(torch.randn(d, generator=fixed), dim=0)
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    other = torch.nn.functional.normalize(other - (other @ true) * true, dim=0)
    x = torch.randn(n, d, generator=g) * 0.3
    x += (2 * y[:, None] - 1) * 0.8 * true  # the label, along `true`
    x += (torch.randn(n, 1, generator=g) * 4 + (2 * y[:, None] - 1) * 1.5) * other  # noisy, biased nuisance
    # Features on very different scales, as in a residual stream: weights fitted on standardised
    # features point elsewhere until they are divided back by each feature's standard deviation.
    scales = torch.logspace(-1, 1, d)[torch.randperm(d, generator=fixed)]
    return x * scales, y.bool(), true


def _separates(u: torch.Tensor, x, y, x_test, y_test) -> float:
    """Fresh-point accuracy of direction u, thresholded halfway between the training classes' means."""
    s = x @ u
    thr = (s[y].mean() + s[~y].mean()) / 2
    towards_this = s[y].mean() > s[~y].mean()
    return (((x_test @ u > thr) == towards_this) == y_test).float().mean().item()


def check_fit_verdict_probe(fn: Callable) -> None:
    """fn(x [n, d], y [n] bool) -> unit direction [d] that separates y (this minus not) on fresh data."""
    name = _name(fn, "fit_verdict_probe")
    x, y, _ = _probe_problem(82)
    x_test, y_test, _ = _probe_problem(182)
    explain = {
        RuntimeError: "If that says an element does not require grad: the lesson turns gradients off "
        "(torch.set_grad_enabled(False) in its second cell), so fit inside `with torch.enable_grad():`."
    }
    u = expect_tensor(call(fn, x, y, name=name, explain=explain), (x.shape[1],), ["d_model"], name)
    if abs(u.norm().item() - 1) > 1e-3:
        raise CheckFailed(f"`{name}` should return a unit vector; its norm is {u.norm().item():.4g}.")
    u = u.detach().float().cpu()
    towards_this = (x @ u)[y].mean() > (x @ u)[~y].mean()
    thr = ((x @ u)[y].mean() + (x @ u)[~y].mean()) / 2
    said_this = (x_test @ u > thr) == towards_this  # the side of the threshold the `this` rows fall on
    acc = (said_this == y_test).float().mean().item()
    mean_diff = torch.nn.functional.normalize(x[y].mean(0) - x[~y].mean(0), dim=0)
    if not towards_this and acc >= 0.95:
        raise CheckFailed(f"`{name}` points from `this` to `not`: the direction should point towards `this`.")
    if torch.allclose(u.abs(), mean_diff.abs(), atol=1e-3):
        raise CheckFailed(
            f"`{name}` returns the difference of the class means: here a noisy feature also shifts the means, "
            "and that direction separates only "
            f"{acc:.0%} of fresh points. Fit a logistic regression, which discounts noisy directions."
        )
    if acc < 0.95:
        unscaled = torch.nn.functional.normalize(u / x.std(0), dim=0)  # if u were weights on standardised features
        if _separates(unscaled, x, y, x_test, y_test) >= 0.95:
            raise CheckFailed(
                f"`{name}`'s direction separates only {acc:.0%} of fresh points, and divided by each feature's "
                "standard deviation it would separate them. Either weights fitted on standardised features were "
                "not divided back by the standard deviations (they must be, to point the right way in the raw "
                "stream), or a fit on the raw features stopped before it converged (features on very different "
                "scales slow gradient descent down: standardise them first, then divide the weights back)."
            )
        raise CheckFailed(
            f"`{name}`'s direction separates only {acc:.0%} of fresh points (a fitted probe reaches 98%+)."
        )
    passed(name, f"its direction separates {acc:.0%} of fresh points")


# --- 3. steering at the verdict sites -------------------------------------------------------------


def check_add_at_sites(fn: Callable) -> None:
    """fn(vector [d], rows [site], positions [site]) -> hook adding vector to act[row, position] only."""
    name = _name(fn, "add_at_sites")
    g = torch.Generator().manual_seed(83)
    act = torch.randn(3, 8, 6, generator=g)
    vector = torch.randn(6, generator=g)
    rows, positions = torch.tensor([0, 2, 2]), torch.tensor([5, 1, 6])
    out = _hook_output(call(fn, vector, rows, positions, name=name), act)
    out = expect_tensor(out, act.shape, ["batch", "position", "d_model"], "your hook")
    want = act.clone()
    want[rows, positions] += vector
    replaced = act.clone()
    replaced[rows, positions] = vector
    every_position = act.clone()
    every_position[rows] += vector
    every_row = act.clone()
    every_row[:, positions] += vector
    one_early = act.clone()
    one_early[rows, positions - 1] += vector
    hints = [
        (
            one_early,
            "the vector landed one position before each site: the positions are already those of the "
            "'(' in the model's input ([BOS] included), use them as they are.",
        ),  # fmt: skip
        (act + vector, "the vector was added everywhere: add it only at each site's row and position."),
        (replaced, "the activation at the sites was replaced by the vector: add the vector to what is there."),
        (every_position, "the vector was added at every position of the sites' rows: only at their positions."),
        (every_row, "the vector was added at the sites' positions in every row: pair each position with its row."),
    ]
    expect_close(out, want, "your hook", "activations", hints=hints)
    passed(name, "the vector lands at the sites only")


# --- 4. neurons aligned with the probe ------------------------------------------------------------


def check_aligned_neurons(fn: Callable) -> None:
    """fn(W_out [layer, d_mlp, d_model], u [d_model], k) -> [k, 2] long: (layer, neuron), best cosine first."""
    name = _name(fn, "aligned_neurons")
    g = torch.Generator().manual_seed(84)
    W_out = torch.randn(3, 40, 8, generator=g) * torch.rand(3, 40, 1, generator=g) * 4  # norms vary a lot
    u = torch.nn.functional.normalize(torch.randn(8, generator=g), dim=0)
    k = 6
    out = call(fn, W_out, u, k, name=name)
    out = expect_tensor(out, (k, 2), ["neuron", "(layer, index)"], name, floating=False)
    if out.is_floating_point():
        raise CheckFailed(f"`{name}` returns {out.dtype}: return an integer tensor (torch.long), as topk's "
                          "indices and // give; the lesson uses these numbers to name hook points and index "
                          "neurons.")  # fmt: skip
    cos = torch.nn.functional.cosine_similarity(W_out, u[None, None], dim=-1)
    want = torch.tensor(ref.aligned_neurons_of(W_out, u, k))

    def pairs(flat):
        return torch.tensor([divmod(int(i), W_out.shape[1]) for i in flat])

    wrong = [
        (want.flip(-1), "the columns are swapped: each row is (layer, neuron), the layer first."),
        (torch.tensor([divmod(int(i), W_out.shape[0]) for i in cos.flatten().topk(k).indices]), "you unravelled the "
         "flat index by the number of layers: with cos [layer, d_mlp] flattened, layer = i // d_mlp and "
         "neuron = i % d_mlp."),
        (pairs((W_out @ u).flatten().topk(k).indices), "those are the largest dot products: use the cosine, so "
         "that a neuron with large output weights does not win by size alone."),
        (pairs((-cos).flatten().topk(k).indices), "those are the most negative cosines: take the largest."),
        (pairs(cos.abs().flatten().topk(k).indices), "that ranks by the size of the cosine: a neuron pointing "
         "against the probe pushes towards `not`; take the largest signed cosines."),
    ]  # fmt: skip
    if torch.equal(out.long().cpu(), want):
        passed(name, f"the {k} neurons whose output weights point most along the probe")
        return
    for pairs_, message in wrong:
        if torch.equal(out.long().cpu(), pairs_):
            raise CheckFailed(f"`{name}`: {message}")
    if set(map(tuple, out.long().tolist())) == set(map(tuple, want.tolist())):
        raise CheckFailed(f"`{name}` finds the right neurons in the wrong order: sort them by cosine, largest first.")
    got = out.long().cpu()
    first = next(i for i in range(k) if not torch.equal(got[i], want[i]))
    raise CheckFailed(
        f"`{name}`: row {first} is (layer, neuron) {tuple(got[first].tolist())}; expected "
        f"{tuple(want[first].tolist())}" + (" (the rows before it agree)." if first else ".")
    )


# --- 5. AUROC ------------------------------------------------------------------------------------


def check_auroc(fn: Callable) -> None:
    """fn(scores [n], labels [n] bool) -> the chance a random positive outscores a random negative (ties half)."""
    name = _name(fn, "auroc")
    g = torch.Generator().manual_seed(85)
    labels = torch.rand(200, generator=g) < 0.3
    scores = (torch.randn(200, generator=g) + labels.float()).round(decimals=1)  # rounded: many ties
    out = as_number(call(fn, scores, labels, name=name))
    want = ref.auroc(scores, labels)
    pos, neg = scores[labels], scores[~labels]
    strict = (pos[:, None] > neg[None, :]).float().mean().item()
    ties_full = (pos[:, None] >= neg[None, :]).float().mean().item()
    acc = ((scores > 0) == labels).float().mean().item()
    m = min(len(pos), len(neg))
    paired = ((pos[:m] > neg[:m]).float() + 0.5 * (pos[:m] == neg[:m]).float()).mean().item()
    means = float(pos.mean() > neg.mean())
    for value, message in (
        (
            means,
            "that compares the two classes' mean scores (0 or 1): AUROC is the share of (positive, negative) "
            "pairs in which the positive scores higher, pos[:, None] > neg[None, :], ties counting half.",
        ),
        (
            paired,
            "you compared the i-th positive with the i-th negative only: AUROC compares every positive "
            "with every negative, pos[:, None] against neg[None, :].",
        ),
        (1 - want, "that is the chance a negative outscores a positive: swap the classes."),
        (strict, "ties count half: a positive and a negative with the same score are a coin flip."),
        (ties_full, "ties count half, not as wins."),
        (acc, "that is an accuracy at threshold 0: AUROC compares every positive with every negative."),
    ):
        if abs(out - value) < 1e-6 and abs(out - want) > 1e-6:
            raise CheckFailed(f"`{name}`: {message}")
    if abs(out - want) > 1e-6:
        raise CheckFailed(f"`{name}` gives {out:.4f}; expected {want:.4f}.")
    passed(name, f"AUROC {want:.3f} on 200 scores with ties")


# --- 6. zeroing neurons at the sites ----------------------------------------------------------------


def check_zero_neurons_at(fn: Callable) -> None:
    """fn(rows [site], positions [site], neurons [k] long) -> hook on hook_post [batch, pos, d_mlp]
    that zeroes those neurons at the sites only."""
    name = _name(fn, "zero_neurons_at")
    g = torch.Generator().manual_seed(86)
    act = torch.randn(3, 7, 10, generator=g)
    rows, positions, neurons = torch.tensor([0, 1, 1]), torch.tensor([4, 2, 6]), torch.tensor([1, 7, 3])
    out = _hook_output(call(fn, rows, positions, neurons, name=name), act)
    out = expect_tensor(out, act.shape, ["batch", "position", "d_mlp"], "your hook")
    want = act.clone()
    want[rows[:, None], positions[:, None], neurons[None, :]] = 0
    all_pos = act.clone()
    all_pos[:, :, neurons] = 0
    all_neurons = act.clone()
    all_neurons[rows, positions] = 0
    diagonal = act.clone()
    diagonal[rows, positions, neurons] = 0
    first_site = act.clone()
    first_site[rows[0], positions[0], neurons] = 0
    hints = [
        (first_site, "only the first site lost its neurons: zero them at every site (rows[i], positions[i])."),
        (
            act,
            "nothing was zeroed. Indexing twice, as in act[rows, positions][:, neurons] = 0, writes into a "
            "copy: index the three dimensions in one go.",
        ),
        (all_pos, "the neurons were zeroed at every position: only at the sites."),
        (all_neurons, "every neuron was zeroed at the sites: only the chosen ones."),
        (diagonal, "each site lost only one neuron (site i, neuron i): zero every chosen neuron at every site."),
    ]
    expect_close(out, want, "your hook", "activations", hints=hints)
    passed(name, "the chosen neurons are silenced at the sites only")


# --- 7. attention to the earlier target -------------------------------------------------------------


def _attention_hints(pattern: torch.Tensor, tokens: torch.Tensor, pos: int, target: int) -> list:
    """The known wrong answers to Exercise 7 on one query, each with what to fix."""
    keys = torch.arange(len(tokens))
    earlier = (tokens == target) & (keys < pos - 1)
    hints = [
        ((pattern * ((tokens == tokens[pos - 1]) & (keys < pos - 1))).sum(-1), "that sums the attention over the "
         "earlier copies of the number just written (tokens[pos - 1]); on an invalid attempt that number is not "
         "the target: sum over the target's earlier places, tokens == target."),
        ((pattern * ((tokens == tokens[target]) & (keys < pos - 1))).sum(-1), "`target` is the target's token id, "
         "not its position: compare the tokens with it directly, tokens == target."),
        ((pattern * ((tokens == target) & (keys != pos - 1))).sum(-1), "keys after the query count too in your mask: "
         "keep only the keys before the result just written, keys < pos - 1."),
        ((pattern * (tokens == target)).sum(-1), "the result just written (at position − 1) is the target too, "
         "but it is not an earlier occurrence: leave it out."),
        (pattern[:, 4], "that is the prompt's target only: sum over every earlier occurrence."),
        (pattern[:, pos - 1], "that is the attention to the previous token: sum over the target's earlier places."),
        ((pattern * earlier).max(-1).values, "sum the attention over the occurrences; do not take the largest."),
        ((pattern * earlier).sum(-1) / earlier.sum(), "you averaged over the occurrences: sum the attention over "
         "them (the share of the head's attention that lands on the target)."),
        (pattern[:, int(torch.nonzero(earlier).max())], "that is the latest earlier occurrence only: sum over every "
         "earlier occurrence, the prompt's included."),
    ]  # fmt: skip
    places = torch.nonzero(earlier).flatten().tolist()
    if len(places) > 2:  # two copies picked out of three or more: the sum leaves the others out
        some = [[places[0], places[-1]], places[:2], places[-2:]]
        hints += [(pattern[:, keep].sum(-1), f"that sums the attention over {len(keep)} of the target's "
                   f"{len(places)} earlier copies (keys {keep}; the target stands at keys {places}): it leaves out "
                   "some of them. Sum over all of them, tokens == target before the result just written.")
                  for keep in some]  # fmt: skip
    return hints


def check_attention_to_target(fn: Callable) -> None:
    """fn(pattern [head, key] of one query, tokens [key], position of the query, target token) -> [head]."""
    name = _name(fn, "attention_to_target")
    g = torch.Generator().manual_seed(87)
    # Both queries are the "(" at 14. The target (token 3) sits at 4 and 7 (and at 3 nowhere: a token id is not a
    # position), and in the first also at 10: after two rejected attempts a trace holds three or more earlier
    # copies, so a sum over two of them shows. In the first the result just written (13) equals the target, a
    # valid attempt; in the second it is 7, which also stands earlier (5 and 11), an invalid attempt. Keys 15 and
    # 16 come after the query: a causal head puts no weight there, but these patterns do, so that a mask that lets
    # them in shows.
    cases = [
        torch.tensor([0, 5, 9, 1, 3, 7, 2, 3, 6, 1, 3, 7, 1, 3, 4, 3, 2]),
        torch.tensor([0, 5, 9, 1, 3, 7, 2, 3, 6, 1, 8, 7, 1, 7, 4, 3, 7]),
    ]
    pos, target = 14, 3
    keys = torch.arange(17)
    for tokens in cases:
        pattern = torch.rand(4, 17, generator=g)
        pattern[:2, 7] += 1.0  # two heads prefer the later occurrence, two the prompt's
        pattern[2:, 4] += 1.0
        pattern[:, 10] += 0.5  # and every head some of the third copy's, where there is one
        pattern = pattern / pattern.sum(-1, keepdim=True)
        out = expect_tensor(call(fn, pattern, tokens, pos, target, name=name), (4,), ["head"], name)
        want = (pattern * ((tokens == target) & (keys < pos - 1))).sum(-1)
        expect_close(out, want, name, "attention", hints=_attention_hints(pattern, tokens, pos, target))
    passed(name, "attention summed over the target's earlier occurrences, whether or not the result matches it")


# --- 8. the receptive-field score ----------------------------------------------------------------


def check_receptive_field(fn: Callable) -> None:
    """fn(o [head, d_model], W_gate [d_model, k], W_in [d_model, k]) -> [head]: the mean over the k
    neurons of SiLU(o · g) × (o · v), with o used as it is (the paper's score, no normalisation)."""
    name = _name(fn, "receptive_field")
    g = torch.Generator().manual_seed(88)
    o = torch.randn(4, 8, generator=g) * torch.tensor([0.3, 1.0, 2.0, 4.0])[:, None]  # sizes differ
    W_gate, W_in = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    out = expect_tensor(call(fn, o, W_gate, W_in, name=name), (4,), ["head"], name)
    silu = torch.nn.functional.silu
    want = (silu(o @ W_gate) * (o @ W_in)).mean(-1)
    own_rms = o / o.pow(2).mean(-1, keepdim=True).sqrt()
    unit = torch.nn.functional.normalize(o, dim=-1)
    hints = [
        ((torch.relu(o @ W_gate) * (o @ W_in)).mean(-1), "the gate goes through SiLU (x·sigmoid(x)), not ReLU."),
        ((torch.sigmoid(o @ W_gate) * (o @ W_in)).mean(-1), "the gate goes through SiLU, x·sigmoid(x), not "
         "through the sigmoid alone."),
        ((torch.nn.functional.gelu(o @ W_gate) * (o @ W_in)).mean(-1), "the gate goes through SiLU, not GELU."),
        ((silu(o @ W_in) * (o @ W_gate)).mean(-1), "the activation goes on the gate's projection, not the up one."),
        (silu((o @ W_gate) * (o @ W_in)).mean(-1), "apply SiLU to the gate's projection alone, then multiply by "
         "the up projection; not SiLU of the product."),
        (((o @ W_gate) * (o @ W_in)).mean(-1), "the gate's projection goes through SiLU before the product."),
        ((silu(own_rms @ W_gate) * (own_rms @ W_in)).mean(-1), "the paper's score uses the head's vector as it "
         "is: dividing it by its own RMS makes every head the same size and changes the ranking."),
        ((silu(unit @ W_gate) * (unit @ W_in)).mean(-1), "the paper's score uses the head's vector as it is, "
         "not normalised to length 1."),
        ((silu(o @ W_gate) * (o @ W_in)).sum(-1), "average over the neurons; do not sum."),
        ((silu(o @ W_gate) * (o @ W_in)).mean(0), "average over the neurons (the last dimension), not the heads."),
    ]  # fmt: skip
    hints = [(h, m) for h, m in hints if h.shape == want.shape]
    expect_close(out, want, name, "scores", hints=hints)
    passed(name, "SiLU(o · gate) × (o · up), averaged over the neurons, on the raw head vector")


# --- 9. ablating heads -----------------------------------------------------------------------------


def check_zero_heads_hook(fn: Callable) -> None:
    """fn(heads [list of head indices]) -> hook on hook_z [batch, pos, head, d_head] zeroing them everywhere."""
    name = _name(fn, "zero_heads_hook")
    g = torch.Generator().manual_seed(89)
    z = torch.randn(2, 6, 4, 3, generator=g)
    heads = [1, 3]
    out = _hook_output(call(fn, heads, name=name), z)
    out = expect_tensor(out, z.shape, ["batch", "position", "head", "d_head"], "your hook")
    want = z.clone()
    want[:, :, heads] = 0
    positions = z.clone()
    positions[:, heads] = 0
    dims = z.clone()
    dims[..., [h for h in heads if h < z.shape[-1]]] = 0
    last = z.clone()
    last[:, -1, heads] = 0
    first_head = z.clone()
    first_head[:, :, heads[0]] = 0
    hints = [
        (last, "you zeroed the heads at the last position only: ablate them at every position, z[:, :, heads]."),
        (first_head, f"you zeroed only head {heads[0]}, the first in the list: zero every head in `heads`."),
        (positions, "you zeroed positions 1 and 3, not heads: heads are dimension 2 of hook_z."),
        (dims, "you zeroed components of every head: heads are dimension 2 of hook_z."),
    ]
    expect_close(out, want, "your hook", "hook_z", hints=hints)
    passed(name, "the chosen heads write nothing at any position")


# --- 10. the single-head ablation ranking ----------------------------------------------------------


class _Sites:
    """The sites a check hands the learner's loop: it only passes them on to ``judged``."""

    def __repr__(self) -> str:
        return "<the check's sites>"


def check_single_head_costs(fn: Callable) -> None:
    """fn(judged, sites, n_layers, n_heads) -> [layer, head]: judged(sites, []) − judged(sites, [(layer, head)]).

    ``judged`` here is a made-up model of 3 layers of 4 heads in which each head, ablated, costs a known share of
    the verdicts (the costs of several heads add up; one head costs nothing and one, ablated, helps), so the loop
    runs in no time and its answer is known."""
    name = _name(fn, "single_head_costs")
    n_layers, n_heads = 3, 4
    g = torch.Generator().manual_seed(810)
    cost = (torch.rand(n_layers, n_heads, generator=g) * 0.3).double()  # what each head costs, ablated alone
    cost[1, 2] = 0.0  # one head the verdict does not need
    cost[2, 1] = -0.05  # and one whose ablation helps it: a negative cost
    base = 0.93  # the share judged right with nothing ablated
    sites = _Sites()

    def judged(given, heads) -> float:
        if given is not sites:
            raise CheckFailed(
                f"`{name}` gave judged something other than the `sites` it was given ({given!r}); pass `sites` on to "
                "judged, not a global such as VALID."
            )
        if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, int) for x in heads):
            raise CheckFailed(
                f"`{name}` gave judged the head {heads} itself as `heads`; judged takes a list of heads: "
                "judged(sites, [(layer, head)])."
            )
        if not isinstance(heads, (list, tuple)):
            raise CheckFailed(f"`{name}` gave judged {type(heads).__name__} as `heads`; give it a list of "
                              "(layer, head) pairs, [] for nothing ablated.")  # fmt: skip
        total = 0.0
        for lh in set(map(tuple, heads)):
            l, h = (int(x) for x in lh)
            if not (0 <= l < n_layers and 0 <= h < n_heads):
                raise CheckFailed(
                    f"`{name}` asked judged to ablate head {lh}, which a model of {n_layers} layers of {n_heads} "
                    "heads does not have; each head is a (layer, head) pair, with layer in range(n_layers) and head "
                    "in range(n_heads)."
                )
            total += cost[l, h].item()
        return min(1.0, max(0.0, base - total))

    out = call(fn, judged, sites, n_layers, n_heads, name=name)
    out = expect_tensor(out, (n_layers, n_heads), ["layer", "head"], name)
    want = cost.float()
    after = base - want
    running = (base - cost.flatten().cumsum(0).clamp(max=base)).clamp(max=1).view(n_layers, n_heads).float()
    last_head, last_layer = want.clone(), want.clone()
    last_head[:, -1] = 0
    last_layer[-1] = 0
    hints = [
        (after, "you returned the share judged right with each head ablated, not what ablating it costs; subtract "
                "it from the share with nothing ablated, judged(sites, [])."),
        (-want, "you subtracted the wrong way round (ablated minus unablated), so the costs come out negative; take "
                "judged(sites, []) minus judged(sites, [(layer, head)])."),
        (1 - after, "you measured against a perfect score, 1, not against the model with nothing ablated; the "
                    "baseline is judged(sites, []), the share the model judges right on its own."),
        (base - running, "the ablations add up: each entry ablates its head and every head before it (one list "
                         "kept growing through the loop); ablate each head alone, with a fresh list [(layer, head)] "
                         "each time."),
        (want.abs(), "a head whose ablation helps the verdict comes out with a positive cost (the sign was dropped, "
                     "as abs() drops it); keep judged(sites, []) - judged(sites, [(layer, head)]) as it is: a "
                     "negative entry says the verdict does better without that head."),
        (want.clamp(min=0), "a head whose ablation helps the verdict comes out at 0 (the cost was floored at 0); keep "
                            "the difference as it is: a negative entry says the verdict does better without that "
                            "head."),
        (last_head, "the last head of each layer stays 0, so the sweep over heads stopped one short; loop over "
                    "range(n_heads), which ends at n_heads - 1."),
        (last_layer, "the last layer stays 0, so the sweep over layers stopped one short; loop over range(n_layers), "
                     "which ends at n_layers - 1."),
    ]  # fmt: skip
    expect_close(out, want, name, "costs", hints=hints)
    passed(name, "each head's cost, ablated alone, against the unablated model")


# --- 11. reading a continuation ----------------------------------------------------------------------


CONTINUATIONS = [
    ("this works )\nSo 9 + 6 - 7 = 8", "accepts"),
    ("not 8 )\n9 - 7 - 6 = -4 ( not 8 )\n7 - 9 - 6 = -8 ( not 8 )\nSo none works", "rejects"),
    ("not 8 )\n9 - 7 - 6 = -4 ( this works )\nSo 9 - 7 - 6 = 8", "accepts"),
    ("not 8 )\nSo none works", "rejects"),
    ("not 8 ) this", "rejects"),
    ("this is not 8", "rejects"),
    ("not 8 )\n9 - 7 - 6 = -4 ( not 8 )\nSo none works ( this", "rejects"),  # cut mid-way: nothing accepted
    ("not 8 )\n9 - 7 - 6 = -4 ( -> 8 ) works )", "rejects"),  # off format, as an ablated model can write
    ("not 8 )\n9 - 7 - 6 = -4 ( this 8 ) works )", "rejects"),  # a number between the two words, likewise
    ("not 8 )\n9 - 7 - 6 = -4 ( this ) works )", "rejects"),  # a bracket between them: closed after 'this'
]


def _accepts_at_start(fn: Callable) -> bool:
    """Whether fn accepts the continuations that open with "this works" (its rule looks at the start)."""
    return all(fn(text) for text, want in CONTINUATIONS if want == "accepts" and text.startswith("this works"))


def check_accepts(fn: Callable) -> None:
    """fn(continuation text after a "(") -> True when it accepts an answer ("this works" anywhere)."""
    name = _name(fn, "accepts")
    for text, want in CONTINUATIONS:
        out = call(fn, text, name=name)
        if not isinstance(out, bool):
            kind = f"{type(out).__module__}.{type(out).__name__}".removeprefix("builtins.")
            raise CheckFailed(f"`{name}` should return a Python bool (True or False), not {kind}: wrap the test in "
                              "bool(...) if it comes from NumPy or torch.")  # fmt: skip
        if out != (want == "accepts"):
            if "this" in text and "works" in text and "this works" not in text and out:
                between = text[text.rfind("this") + 4 : text.rfind("works")]
                if "none works" in text:
                    apart = "'none works' rejects and the 'this' that follows was cut off"
                elif any(ch.isdigit() for ch in between):
                    apart = "a number stands between them, as an ablated model can write in the verdict slot"
                else:
                    apart = (f"{between.strip()!r} stands between them: the verdict closed after 'this', off "
                             "format, and the 'works' after it accepts nothing")  # fmt: skip
                why = (f"on {text!r} 'this' and 'works' apart accept nothing (here {apart}): a continuation "
                       "accepts only where the words 'this works' stand together, one right after the "
                       "other.")  # fmt: skip
            elif "works" in text and "none works" not in text and "this works" not in text and out:
                why = (f"on {text!r} 'works' stands without 'this' before it, as an ablated model can write off "
                       "format: a continuation accepts only where the words 'this works' stand together.")  # fmt: skip
            elif "none works" in text and out:
                why = "'none works' says no attempt worked: look for the words 'this works' together."
            elif "this" in text and "this works" not in text and out:
                why = "a lone 'this' does not accept anything: look for 'this works'."
            elif "this works" in text and not out:
                if _accepts_at_start(fn) and not fn("9 - 7 - 6 = 8 ( this works )"):
                    why = "a later attempt can accept too: look for 'this works' anywhere, not only at the start."
                else:
                    why = (f"on {text!r} a later attempt accepts after earlier ones were rejected ('not ...'): "
                           "the continuation accepts when 'this works' appears anywhere, whatever else it "
                           "holds.")  # fmt: skip
            else:
                why = f"on {text!r} it should say {want == 'accepts'}."
            raise CheckFailed(f"`{name}`: {why}")
    passed(name, f"{len(CONTINUATIONS)} continuations: 'this works' found wherever it appears, nowhere else")
