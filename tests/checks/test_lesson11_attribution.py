"""Every lesson-11 check accepts a correct solution and rejects the stub and each plausible mistake, naming it.

The correct solutions here are written another way than the notebook's (a sort instead of topk, a power series
instead of a solve, a gradient instead of a difference), so a check that merely compared a function with itself
could not pass them all. The wrong answers are small changes to a correct solution, as a learner would write them.
"""

import pytest
import torch

from utils.checks import CheckFailed
from utils.checks import lesson11_attribution as c
from utils.metrics import attribution as A
from utils.model_zoo.models import load_model
from utils.model_zoo.transcoders import decode, encode, load_transcoders

# --- the TopK encoder --------------------------------------------------------------------------------------


def topk_encode(x, W_enc, b_enc, k):
    pre = (x @ W_enc + b_enc).clamp_min(0)
    order = pre.sort(dim=-1, descending=True)
    out = torch.zeros_like(pre)
    for row in range(len(pre)):
        out[row, order.indices[row, :k]] = order.values[row, :k]
    return out


def _keep(scores, values, k, dim=-1):
    top = scores.topk(k, dim=dim).indices
    return torch.zeros_like(values).scatter(dim, top, values.gather(dim, top))


TOPK_MISTAKES = {
    "negative pre-activations are kept": lambda x, W, b, k: _keep(x @ W + b, x @ W + b, k),
    "every positive latent is kept": lambda x, W, b, k: torch.relu(x @ W + b),
    "chosen by size (absolute value)": lambda x, W, b, k: _keep((x @ W + b).abs(), torch.relu(x @ W + b), k),
    "the encoder's bias b_enc is missing": lambda x, W, b, k: _keep(torch.relu(x @ W), torch.relu(x @ W), k),
    "taken down each column": lambda x, W, b, k: _keep(torch.relu(x @ W + b), torch.relu(x @ W + b), k, dim=0),
}


def test_topk_encode_check_accepts_a_sort_and_names_each_mistake(prove_check):
    prove_check(c.check_topk_encode, topk_encode, TOPK_MISTAKES)


def test_topk_encode_check_names_a_missing_dimension():
    with pytest.raises(CheckFailed, match="dimensions"):
        c.check_topk_encode(lambda x, W, b, k: topk_encode(x, W, b, k).sum(0))


# --- the direct effect -------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["storyworld-4l", "storyworld-llama"])
def zoo(request):
    """A zoo model with transcoders, as the lesson loads them."""
    return load_model(request.param, device="cpu"), load_transcoders(f"{request.param}-transcoders")


def _writes(run, tcs):
    return [decode(tc, a) + e for tc, a, e in zip(tcs, run.acts, run.errors)]


def direct_effect(model, run, transcoders, source, target):
    """By gradient: d(target's pre-activation)/d(source's activation) in the replacement model, times the activation."""
    _, ls, ps, fs = source
    _, lt, pt, ft = target
    amount = torch.ones((), requires_grad=True)
    writes = _writes(run, transcoders)
    writes[ls] = writes[ls] + torch.zeros_like(writes[ls]).index_put(
        (torch.tensor([ps]),), ((amount - 1) * run.acts[ls][ps, fs] * transcoders[ls].W_dec[fs])[None]
    )
    mlp_ins, _ = A.linear_forward(model, run, run.embed, writes)
    pre = mlp_ins[lt][pt] @ transcoders[lt].W_enc[:, ft] + transcoders[lt].b_enc[ft]
    (grad,) = torch.autograd.grad(pre, amount)
    return grad.detach()


def _with_and_without(model, run, tcs, source, target, post=False, at=None):
    """The target's change when the source's write is removed, at the source's position or at position ``at``."""
    _, ls, ps, fs = source
    _, lt, pt, ft = target
    writes = _writes(run, tcs)
    without = [w.clone() for w in writes]
    without[ls][ps if at is None else at] -= run.acts[ls][ps, fs] * tcs[ls].W_dec[fs]
    values = []
    for ws in (writes, without):
        mlp_ins, _ = A.linear_forward(model, run, run.embed, ws)
        x = mlp_ins[lt][pt]
        values.append(encode(tcs[lt], x)[ft] if post else x @ tcs[lt].W_enc[:, ft] + tcs[lt].b_enc[ft])
    return values[0] - values[1]


@torch.no_grad()
def _real_model(model, run, tcs, source, target):
    _, ls, ps, fs = source
    _, lt, pt, ft = target

    def read(remove):
        seen = {}

        def cut(y, hook):
            y = y.clone()
            y[:, ps] -= run.acts[ls][ps, fs] * tcs[ls].W_dec[fs]
            return y

        def keep(x, hook):
            seen["x"] = x[0, pt]

        hooks = [(f"blocks.{ls}.hook_mlp_out", cut)] if remove else []
        with model.hooks(fwd_hooks=[*hooks, (f"blocks.{lt}.mlp.hook_in", keep)]):
            model(run.tokens[None])
        return seen["x"] @ tcs[lt].W_enc[:, ft] + tcs[lt].b_enc[ft]

    return read(False) - read(True)


DIRECT_MISTAKES = {
    "this is the total effect, measured in the real model": _real_model,
    "this compares the target's activation": lambda m, r, t, s, g: _with_and_without(m, r, t, s, g, post=True),
    "per unit of the source's activation": lambda m, r, t, s, g: (
        _with_and_without(m, r, t, s, g) / r.acts[s[1]][s[2], s[3]]
    ),
    "the sign is reversed": lambda m, r, t, s, g: -_with_and_without(m, r, t, s, g),
    "removed at the target's position": lambda m, r, t, s, g: _with_and_without(m, r, t, s, g, at=g[2]),
}


def test_direct_effect_check_accepts_a_gradient_and_names_each_mistake(prove_check, zoo):
    prove_check(c.check_direct_effect, direct_effect, DIRECT_MISTAKES, *zoo)


# --- influence ---------------------------------------------------------------------------------------------


def influence(adjacency):
    a = adjacency.abs()
    a = a / a.sum(1, keepdim=True).clamp_min(1e-12)
    total, term = torch.eye(len(a)), torch.eye(len(a))
    for _ in range(len(a)):  # a graph with no cycles: paths are at most n - 1 steps long
        term = term @ a
        total = total + term
    return total[-1]


def _series(a, skip_identity=False):
    total, term = torch.zeros_like(a) if skip_identity else torch.eye(len(a)), torch.eye(len(a))
    for _ in range(len(a)):
        term = term @ a
        total = total + term
    return total[-1]


INFLUENCE_MISTAKES = {
    "only the direct edges into the readout count": lambda a: (a.abs() / a.abs().sum(1, keepdim=True).clamp_min(1e-12))[
        -1
    ],
    "the weights are signed": lambda a: _series(a / a.abs().sum(1, keepdim=True).clamp_min(1e-12)),
    "the weights are not normalised": lambda a: _series(a.abs()),
    "the columns are normalised": lambda a: _series(a.abs() / a.abs().sum(0, keepdim=True).clamp_min(1e-12)),
    "the readout's own influence should be 1": lambda a: _series(
        a.abs() / a.abs().sum(1, keepdim=True).clamp_min(1e-12), skip_identity=True
    ),
}


def test_influence_check_accepts_a_power_series_and_names_each_mistake(prove_check):
    prove_check(c.check_influence, influence, INFLUENCE_MISTAKES)


# --- turning features off ----------------------------------------------------------------------------------


@torch.no_grad()
def measured_effects(model, run, transcoders, nodes, readout):
    out = []
    for _, layer, p, latent in nodes:
        write = run.acts[layer][p, latent] * transcoders[layer].W_dec[latent]

        def off(y, hook, p=p, write=write):
            y[:, p] = y[:, p] - write
            return y

        with model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_mlp_out", off)]):
            logits = model(run.tokens[None])[0, -1].float()
        out.append((logits - run.logits[-1]) @ readout)
    return torch.stack(out)


def _replacement(model, run, tcs, nodes, readout):
    out = []
    base = run.logits[-1] @ readout
    for _, layer, p, latent in nodes:
        writes = _writes(run, tcs)
        writes[layer][p] -= run.acts[layer][p, latent] * tcs[layer].W_dec[latent]
        _, final = A.linear_forward(model, run, run.embed, writes)
        out.append(A.readout_value(model, final, readout) - base)
    return torch.stack(out)


def _graph_prediction(model, run, tcs, nodes, readout):
    """The graph's own prediction: minus each feature's effect on the readout through every path of the graph."""
    graph = A.attribution_graph(model, tcs, run, readout)
    return -A.total_effects(graph)[[graph.nodes.index(node) for node in nodes]]


MEASURED_MISTAKES = {
    "the sign is reversed": lambda m, r, t, n, ro: -measured_effects(m, r, t, n, ro),
    "subtract the readout as it was": lambda m, r, t, n, ro: measured_effects(m, r, t, n, ro) + r.logits[-1] @ ro,
    "minus the feature's direct edge into the readout": _replacement,
    "minus the graph's `total_effects`, the graph's own prediction": _graph_prediction,
    "at the last position only": lambda m, r, t, n, ro: torch.stack(
        [(A.intervene(m, r, t, node, 0.0) - r.logits).mean(0) @ ro for node in n]
    ),
}


def test_measured_effects_check_accepts_its_own_hook_and_names_each_mistake(prove_check, zoo):
    prove_check(c.check_measured_effects, measured_effects, MEASURED_MISTAKES, *zoo)


def test_the_two_graph_answers_are_minus_the_direct_edge_and_minus_the_total_effect(zoo):
    """The hints name what each wrong answer is: holding every other MLP's write in the replacement model gives minus
    the feature's direct edge into the readout, which on the check's features is not the graph's full prediction."""
    model, tcs = zoo
    run = c._prompt_run(model, tcs)
    readout = A.readout_direction(run.logits.shape[-1], int(run.tokens[1]), int(run.tokens[3]))
    graph = A.attribution_graph(model, tcs, run, readout)
    features = graph.index("feature")
    top = features[A.influence(graph)[features].argsort(descending=True)[:5]]
    nodes = [graph.nodes[i] for i in top]
    held = _replacement(model, run, tcs, nodes, readout)
    torch.testing.assert_close(held, -graph.adjacency[-1, top], atol=1e-3, rtol=1e-3)
    assert not torch.allclose(held, _graph_prediction(model, run, tcs, nodes, readout), atol=1e-3, rtol=1e-3)


def test_measured_effects_check_accepts_a_list_of_numbers(zoo, capsys):
    c.check_measured_effects(lambda *a: [float(v) for v in measured_effects(*a)], *zoo)
    assert "✓" in capsys.readouterr().out


def test_a_function_that_changes_the_run_it_is_given_leaves_the_next_check_as_it_was(zoo, capsys):
    # the checks build their cases once per model and give each call a copy of the prompt's run
    def spoils_the_run(model, run, transcoders, *rest):
        for acts in run.acts:
            acts.zero_()
        run.errors.clear()
        return torch.tensor(0.0) if len(rest) == 2 and isinstance(rest[0], tuple) else torch.zeros(5)

    for check, solution in ((c.check_direct_effect, direct_effect), (c.check_measured_effects, measured_effects)):
        with pytest.raises(CheckFailed):
            check(spoils_the_run, *zoo)
        check(solution, *zoo)
        assert "✓" in capsys.readouterr().out
