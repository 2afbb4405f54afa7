"""Every lesson-08 check accepts a correct solution and rejects the stub and each plausible mistake.

The correct solutions here are written another way than the notebook's (loops, explicit
formulas, gradient descent instead of L-BFGS), so a check that merely compared a function
with itself could not pass them all.
"""

import re

import numpy
import pytest
import torch

from utils.checks import lesson08_verification as c
from utils.checks.framework import CheckFailed

# --- correct solutions, written another way ---------------------------------------------------


def verdict_margin(logits, rows, positions, this_id, not_id):
    return torch.stack(
        [logits[r, p, this_id] - logits[r, p, not_id] for r, p in zip(rows.tolist(), positions.tolist())]
    )


def fit_verdict_probe(x, y):
    torch.manual_seed(0)
    mu, sd = x.mean(0), x.std(0)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(((x - mu) / sd) @ w + b, y.float())
        loss.backward()
        opt.step()
    u = w.detach() / sd
    return u / u.norm()


def add_at_sites(vector, rows, positions):
    def hook(act, hook):
        out = act.clone()
        for r, p in zip(rows.tolist(), positions.tolist()):
            out[r, p] = out[r, p] + vector
        return out

    return hook


def aligned_neurons(W_out, u, k):
    cos = (W_out @ u) / (W_out.norm(dim=-1) * u.norm())
    order = sorted(((cos[l, i].item(), l, i) for l in range(cos.shape[0]) for i in range(cos.shape[1])), reverse=True)
    return torch.tensor([[l, i] for _, l, i in order[:k]])


def auroc(scores, labels):
    pos, neg = scores[labels].tolist(), scores[~labels].tolist()
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def zero_neurons_at(rows, positions, neurons):
    def hook(act, hook):
        for r, p in zip(rows.tolist(), positions.tolist()):
            act[r, p, neurons] = 0.0
        return act

    return hook


def attention_to_target(pattern, tokens, pos, target):
    keys = [k for k in range(pos - 1) if tokens[k] == target]
    return pattern[:, keys].sum(-1)


def receptive_field(o, W_gate, W_in):
    gate = torch.einsum("hd,dk->hk", o, W_gate)
    return (gate * torch.sigmoid(gate) * torch.einsum("hd,dk->hk", o, W_in)).mean(-1)


def zero_heads_hook(heads):
    def hook(z, hook):
        z[:, :, heads, :] = 0
        return None  # edited in place

    return hook


def single_head_costs(judged, sites, n_layers, n_heads):
    out = torch.zeros(n_layers, n_heads)
    for l in range(n_layers):
        for h in range(n_heads):
            out[l, h] = judged(sites, []) - judged(sites, [(l, h)])
    return out


def accepts(text):
    return "this works" in " ".join(text.split())


# --- mistakes the checks must name --------------------------------------------------------------


def test_check_verdict_margin(prove_check):
    wrong = {
        "that is not − this": lambda lg, r, p, t, n: lg[r, p, n] - lg[r, p, t],
        "those are probabilities": lambda lg, r, p, t, n: lg.softmax(-1)[r, p, t] - lg.softmax(-1)[r, p, n],
        "one position late": lambda lg, r, p, t, n: lg[r, p + 1, t] - lg[r, p + 1, n],
        "one position early": lambda lg, r, p, t, n: lg[r, p - 1, t] - lg[r, p - 1, n],
    }
    prove_check(c.check_verdict_margin, verdict_margin, wrong)


def test_check_fit_verdict_probe_says_the_lesson_turns_gradients_off():
    def adam_without_grad(x, y):
        w = torch.zeros(x.shape[1], requires_grad=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y.float())
        loss.backward()
        return w.detach()

    with torch.no_grad(), pytest.raises(CheckFailed, match="fit inside `with torch.enable_grad"):
        c.check_fit_verdict_probe(adam_without_grad)


def test_check_fit_verdict_probe(prove_check):
    def mean_difference(x, y):
        return torch.nn.functional.normalize(x[y].mean(0) - x[~y].mean(0), dim=0)

    def standardised_only(x, y):
        u = fit_verdict_probe(x, y) * x.std(0)  # the weights on the standardised features
        return u / u.norm()

    def raw_sgd_unconverged(x, y):  # logistic regression on the raw features, stopped after 20 steps
        w = torch.zeros(x.shape[1], requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.01)
        with torch.enable_grad():
            for _ in range(20):
                opt.zero_grad()
                torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y.float()).backward()
                opt.step()
        return torch.nn.functional.normalize(w.detach(), dim=0)

    wrong = {
        "difference of the class means": mean_difference,
        "not divided back by the standard deviations": standardised_only,
        "stopped before it converged": raw_sgd_unconverged,
        "points from `this` to `not`": lambda x, y: -fit_verdict_probe(x, y),
        "unit vector": lambda x, y: 3 * fit_verdict_probe(x, y),
    }
    prove_check(c.check_fit_verdict_probe, fit_verdict_probe, wrong)
    wrong = {"separates only": lambda x, y: torch.nn.functional.normalize(torch.ones(x.shape[1]), dim=0)}
    prove_check(c.check_fit_verdict_probe, fit_verdict_probe, wrong)


def test_check_add_at_sites(prove_check):
    def everywhere(v, r, p):
        return lambda act, hook: act + v

    def whole_rows(v, r, p):
        def hook(act, hook):
            act = act.clone()
            act[r] += v
            return act

        return hook

    def every_row(v, r, p):
        def hook(act, hook):
            act = act.clone()
            act[:, p] += v
            return act

        return hook

    def replaced(v, r, p):
        def hook(act, hook):
            act = act.clone()
            act[r, p] = v
            return act

        return hook

    def one_early(v, r, p):
        def hook(act, hook):
            act = act.clone()
            act[r, p - 1] += v
            return act

        return hook

    wrong = {
        "one position before each site": one_early,
        "added everywhere": everywhere,
        "every position of the sites' rows": whole_rows,
        "in every row": every_row,
        "replaced by the vector": replaced,
    }
    prove_check(c.check_add_at_sites, add_at_sites, wrong)


def test_check_aligned_neurons(prove_check):
    def top(scores, k, d_mlp):
        return torch.tensor([divmod(int(i), d_mlp) for i in scores.flatten().topk(k).indices])

    def cos(W, u):
        return torch.nn.functional.cosine_similarity(W, u[None, None], dim=-1)

    wrong = {
        "largest dot products": lambda W, u, k: top(W @ u, k, W.shape[1]),
        "most negative cosines": lambda W, u, k: top(-cos(W, u), k, W.shape[1]),
        "size of the cosine": lambda W, u, k: top(cos(W, u).abs(), k, W.shape[1]),
        "wrong order": lambda W, u, k: aligned_neurons(W, u, k).flip(0),
        "return an integer tensor": lambda W, u, k: aligned_neurons(W, u, k).float(),
        "the columns are swapped": lambda W, u, k: aligned_neurons(W, u, k).flip(-1),
        "by the number of layers": lambda W, u, k: top(cos(W, u), k, W.shape[0]),
        "the rows before it agree": lambda W, u, k: torch.cat(
            [aligned_neurons(W, u, k)[:2], torch.zeros(k - 2, 2)]
        ).long(),
    }
    prove_check(c.check_aligned_neurons, aligned_neurons, wrong)


def _paired_auroc(s, y):
    pos, neg = s[y], s[~y]
    m = min(len(pos), len(neg))
    return ((pos[:m] > neg[:m]).float() + 0.5 * (pos[:m] == neg[:m]).float()).mean().item()


def test_check_auroc(prove_check):
    wrong = {
        "swap the classes": lambda s, y: 1 - auroc(s, y),
        "mean scores": lambda s, y: float(s[y].mean() > s[~y].mean()),
        "ties count half: a positive": lambda s, y: (s[y][:, None] > s[~y][None, :]).float().mean().item(),
        "not as wins": lambda s, y: (s[y][:, None] >= s[~y][None, :]).float().mean().item(),
        "the i-th positive with the i-th negative": _paired_auroc,
        "accuracy at threshold 0": lambda s, y: ((s > 0) == y).float().mean().item(),
    }
    prove_check(c.check_auroc, auroc, wrong)


def test_check_zero_neurons_at(prove_check):
    def every_position(r, p, n):
        def hook(act, hook):
            act[:, :, n] = 0
            return act

        return hook

    def every_neuron(r, p, n):
        def hook(act, hook):
            act[r, p] = 0
            return act

        return hook

    def diagonal(r, p, n):
        def hook(act, hook):
            act[r, p, n] = 0
            return act

        return hook

    def chained(r, p, n):
        def hook(act, hook):
            act[r, p][:, n] = 0  # writes into a copy
            return act

        return hook

    def first_site(r, p, n):
        def hook(act, hook):
            act[r[0], p[0], n] = 0
            return act

        return hook

    wrong = {
        "only the first site": first_site,
        "at every position": every_position,
        "every neuron was zeroed": every_neuron,
        "only one neuron": diagonal,
        "writes into a copy": chained,
    }
    prove_check(c.check_zero_neurons_at, zero_neurons_at, wrong)


def first_and_latest(pattern, tokens, pos, target):
    """The prompt's copy of the target and the latest earlier one, the copies between left out."""
    idx = torch.nonzero((tokens == target) & (torch.arange(len(tokens)) < pos - 1)).flatten()
    return pattern[:, idx[0]] + pattern[:, idx[-1]]


def first_two(pattern, tokens, pos, target):
    """The first two earlier copies of the target only."""
    idx = torch.nonzero((tokens == target) & (torch.arange(len(tokens)) < pos - 1)).flatten()
    return pattern[:, idx[:2]].sum(-1)


def test_check_attention_to_target(prove_check):
    wrong = {
        "leave it out": lambda pat, tok, pos, t: (pat * (tok == t)).sum(-1),
        "prompt's target only": lambda pat, tok, pos, t: pat[:, 4],
        "not its position": lambda pat, tok, pos, t: (pat * ((tok == tok[t]) & (torch.arange(len(tok)) < pos - 1))).sum(
            -1
        ),
        "keys after the query count too": lambda pat, tok, pos, t: (
            pat * ((tok == t) & (torch.arange(len(tok)) != pos - 1))
        ).sum(-1),
        "previous token": lambda pat, tok, pos, t: pat[:, pos - 1],
        "the earlier copies of the number just written": lambda pat, tok, pos, t: (
            pat * ((tok == tok[pos - 1]) & (torch.arange(len(tok)) < pos - 1))
        ).sum(-1),
        "you averaged over the occurrences": lambda pat, tok, pos, t: (
            (pat * ((tok == t) & (torch.arange(len(tok)) < pos - 1))).sum(-1)
            / ((tok == t) & (torch.arange(len(tok)) < pos - 1)).sum()
        ),
        "the latest earlier occurrence only": lambda pat, tok, pos, t: pat[
            :, int(torch.nonzero((tok == t) & (torch.arange(len(tok)) < pos - 1)).max())
        ],
        "do not take the largest": lambda pat, tok, pos, t: (
            (pat * ((tok == t) & (torch.arange(len(tok)) < pos - 1))).max(-1).values
        ),
        "it leaves out some of them": first_and_latest,
        "2 of the target's 3 earlier copies": first_two,
    }
    prove_check(c.check_attention_to_target, attention_to_target, wrong)


def test_check_receptive_field(prove_check):
    silu = torch.nn.functional.silu

    def rms(o):
        return o / o.pow(2).mean(-1, keepdim=True).sqrt()

    wrong = {
        "not ReLU": lambda o, g, u: (torch.relu(o @ g) * (o @ u)).mean(-1),
        "not through the sigmoid alone": lambda o, g, u: (torch.sigmoid(o @ g) * (o @ u)).mean(-1),
        "not GELU": lambda o, g, u: (torch.nn.functional.gelu(o @ g) * (o @ u)).mean(-1),
        "not the up one": lambda o, g, u: (silu(o @ u) * (o @ g)).mean(-1),
        "not SiLU of the product": lambda o, g, u: silu((o @ g) * (o @ u)).mean(-1),
        "goes through SiLU before the product": lambda o, g, u: ((o @ g) * (o @ u)).mean(-1),
        "its own RMS": lambda o, g, u: (silu(rms(o) @ g) * (rms(o) @ u)).mean(-1),
        "normalised to length 1": lambda o, g, u: (
            silu(torch.nn.functional.normalize(o, dim=-1) @ g) * (torch.nn.functional.normalize(o, dim=-1) @ u)
        ).mean(-1),
        "do not sum": lambda o, g, u: (silu(o @ g) * (o @ u)).sum(-1),
    }
    prove_check(c.check_receptive_field, receptive_field, wrong)


def test_check_zero_heads_hook(prove_check):
    def zeroing(*places):
        """A wrong hook factory: for ``heads``, a hook that zeroes ``z[place(heads, z)]`` for each place."""

        def factory(heads):
            def hook(z, hook):
                z = z.clone()
                for place in places:
                    z[place(heads, z)] = 0
                return z

            return hook

        return factory

    wrong = {
        "not heads": zeroing(lambda heads, z: (slice(None), heads)),
        "components of every head": zeroing(
            lambda heads, z: (..., heads[:1]), lambda heads, z: (..., [h for h in heads if h < z.shape[-1]])
        ),
        "at the last position only": zeroing(lambda heads, z: (slice(None), -1, heads)),
        "the first in the list": zeroing(lambda heads, z: (slice(None), slice(None), heads[0])),
    }
    prove_check(c.check_zero_heads_hook, zero_heads_hook, wrong)


def test_check_single_head_costs(prove_check):
    def grid(entry):
        """A wrong loop: entry(judged, sites, layer, head) for every head, as [layer, head]."""
        return lambda j, s, nl, nh: torch.tensor([[entry(j, s, l, h) for h in range(nh)] for l in range(nl)])

    def growing(j, s, nl, nh):
        heads, out = [], torch.zeros(nl, nh)
        for l in range(nl):
            for h in range(nh):
                heads.append((l, h))
                out[l, h] = j(s, []) - j(s, heads)
        return out

    def short(heads_short):
        def loop(j, s, nl, nh):
            out = torch.zeros(nl, nh)
            for l in range(nl - (not heads_short)):
                for h in range(nh - heads_short):
                    out[l, h] = j(s, []) - j(s, [(l, h)])
            return out

        return loop

    wrong = {
        "not what ablating it costs": grid(lambda j, s, l, h: j(s, [(l, h)])),
        "the wrong way round": grid(lambda j, s, l, h: j(s, [(l, h)]) - j(s, [])),
        "a perfect score, 1": grid(lambda j, s, l, h: 1 - j(s, [(l, h)])),
        "the ablations add up": growing,
        "the sign was dropped": grid(lambda j, s, l, h: abs(j(s, []) - j(s, [(l, h)]))),
        "the cost was floored at 0": grid(lambda j, s, l, h: max(0.0, j(s, []) - j(s, [(l, h)]))),
        "the sweep over heads stopped one short": short(True),
        "the sweep over layers stopped one short": short(False),
        "does not have": lambda j, s, nl, nh: torch.tensor(
            [[j(s, []) - j(s, [(l, h)]) for h in range(nh + 1)] for l in range(nl)]
        ),
        "dimension 0 (layer)": lambda j, s, nl, nh: single_head_costs(j, s, nl, nh).T.contiguous(),
        "judged takes a list of heads": grid(lambda j, s, l, h: j(s, []) - j(s, (l, h))),
        "other than the `sites`": grid(lambda j, s, l, h: j(s, []) - j(["VALID"], [(l, h)])),
    }
    prove_check(c.check_single_head_costs, single_head_costs, wrong)


def test_check_accepts(prove_check):
    wrong = {
        "look for the words 'this works' together": lambda t: "works" in t,
        "a lone 'this'": lambda t: "this" in t,
        "'this' and 'works' apart": lambda t: "this" in t and "works" in t,
        "a number stands between them": lambda t: "this" in t.split() and "works" in t.split() and "none" not in t,
        "one right after the other": lambda t: bool(re.search(r"\bthis\b.*\bworks\b", t)),
        "anywhere, not only at the start": lambda t: t.startswith("this works"),
        "whatever else it holds": lambda t: "not" not in t,
        "'works' stands without 'this'": lambda t: "works" in t and "none works" not in t,
        "not numpy.bool": lambda t: numpy.bool_("this works" in t),
        "')' stands between them": lambda t: bool(re.search(r"\bthis\W+works\b", t)),
        "the verdict closed after 'this'": lambda t: (
            "this works" in " ".join(t.replace("(", " ").replace(")", " ").split())
        ),
    }
    prove_check(c.check_accepts, accepts, wrong)
