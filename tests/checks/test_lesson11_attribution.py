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
from utils.model_zoo.transcoders import decode, load_transcoders

# --- the TopK encoder --------------------------------------------------------------------------------------


def topk_encode(x, W_enc, b_enc, k):
    pre = (x @ W_enc + b_enc).clamp_min(0)
    flat = pre.reshape(-1, pre.shape[-1])  # every row of a batch [..., d_tc], one at a time
    order = flat.sort(dim=-1, descending=True)
    out = torch.zeros_like(flat)
    for row in range(len(flat)):
        out[row, order.indices[row, :k]] = order.values[row, :k]
    return out.reshape(pre.shape)


def _keep(scores, values, k, dim=-1):
    top = scores.topk(k, dim=dim).indices
    return torch.zeros_like(values).scatter(dim, top, values.gather(dim, top))


TOPK_MISTAKES = {
    "negative pre-activations are kept": lambda x, W, b, k: _keep(x @ W + b, x @ W + b, k),
    "every positive latent is kept": lambda x, W, b, k: torch.relu(x @ W + b),
    "chosen by size (absolute value)": lambda x, W, b, k: _keep((x @ W + b).abs(), torch.relu(x @ W + b), k),
    "the encoder's bias b_enc is missing": lambda x, W, b, k: _keep(torch.relu(x @ W), torch.relu(x @ W), k),
    "taken down each column": lambda x, W, b, k: _keep(torch.relu(x @ W + b), torch.relu(x @ W + b), k, dim=0),
    # right on x [pos, d_model], wrong on the batch [batch, pos, d_model] that section 1 hands it
    "fails on a batch x [batch, pos, d_model], as section 1 gives it": lambda x, W, b, k: _keep(
        torch.relu(torch.mm(x, W) + b), torch.relu(torch.mm(x, W) + b), k
    ),
    "the top k is taken over dimension 1, the positions": lambda x, W, b, k: _keep(
        torch.relu(x @ W + b), torch.relu(x @ W + b), k, dim=1
    ),
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


@torch.no_grad()
def _everywhere(model, run, transcoders, nodes, readout):
    """The write subtracted at every position (y - write), not at the feature's own."""
    out = []
    for _, layer, p, latent in nodes:
        write = run.acts[layer][p, latent] * transcoders[layer].W_dec[latent]
        with model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_mlp_out", lambda y, hook, w=write: y - w)]):
            out.append((model(run.tokens[None])[0, -1].float() - run.logits[-1]) @ readout)
    return torch.stack(out)


def _frozen(attention, norms):
    def measure(model, run, transcoders, nodes, readout):
        off = [A.intervene_frozen(model, run, transcoders, node, 0.0, attention, norms)[-1] for node in nodes]
        return torch.stack([(logits - run.logits[-1]) @ readout for logits in off])

    return measure


def _half_twice(model, run, transcoders, nodes, readout):
    """Half off, the change doubled: a linear estimate of turning it off."""
    half = [A.intervene(model, run, transcoders, node, 0.5)[-1] for node in nodes]
    return torch.stack([2 * (logits - run.logits[-1]) @ readout for logits in half])


MEASURED_MISTAKES = {
    "the feature's write is removed at every position": _everywhere,
    "turned half off and the change doubled": _half_twice,
    "the attention patterns are frozen at the prompt's": _frozen(True, False),
    "the norms' scales are frozen at the prompt's": _frozen(False, True),
    "the attention patterns and the norms' scales are both frozen": _frozen(True, True),
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
    run, readout, _ = c._check_prompt(model, tcs)
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

    with pytest.raises(CheckFailed):
        c.check_measured_effects(spoils_the_run, *zoo)
    c.check_measured_effects(measured_effects, *zoo)
    assert "✓" in capsys.readouterr().out


# --- the graph by backward passes ---------------------------------------------------------------------------------


def input_gradients(
    model, run, transcoders, targets, readout, seed="encoder", read="last", where="own", through="logits", gated=True
):
    """One backward pass per target through autograd (the notebook batches a vjp), and the named mistakes."""
    L, H = len(transcoders), model.cfg.n_heads
    outs = ([], [], [])
    for kind, layer, p, latent in targets:
        embed = run.embed.clone().requires_grad_(True)
        writes = [w.clone().requires_grad_(True) for w in _writes(run, transcoders)]
        gates = torch.ones(L, H, requires_grad=True)
        with torch.enable_grad():
            mlp_ins, final = A.linear_forward(model, run, embed, writes, gates if gated else None)
            if kind == "feature":
                column = transcoders[layer].W_enc[:, latent] if seed == "encoder" else transcoders[layer].W_dec[latent]
                value = mlp_ins[layer][p if where == "own" else -1] @ column
            elif read == "none":
                value = (final * 0).sum()
            else:
                logits = A.logits_of(model, final)
                if through == "log_softmax":  # a log-probability: the same as the logits for a zero-sum readout
                    logits = logits.log_softmax(-1)
                direction = readout - readout.mean() if through == "demeaned" else readout
                value = (logits @ direction)[-1] if read == "last" else (logits @ direction).sum()
            g = torch.autograd.grad(value, [embed, *writes, gates], allow_unused=True)
        g = [torch.zeros_like(x) if y is None else y for x, y in zip([embed, *writes, gates], g)]
        outs[0].append(g[0])
        outs[1].append(torch.stack(g[1:-1]))
        outs[2].append(g[-1])
    return tuple(torch.stack(o) for o in outs)


def _one_layer_off(*a):
    """Right but for the last layer's write, whose gradient is left at zero."""
    g_embed, g_writes, g_gates = input_gradients(*a)
    g_writes = g_writes.clone()
    g_writes[:, -1] = 0
    return g_embed, g_writes, g_gates


INPUT_GRADIENT_MISTAKES = {
    "its decoder row W_dec[latent]": lambda *a: input_gradients(*a, seed="decoder"),
    "summed over every position": lambda *a: input_gradients(*a, read="all"),
    "the readout's gradients are zero": lambda *a: input_gradients(*a, read="none"),
    "seeded at the last position": lambda *a: input_gradients(*a, where="last"),
    # right with the lesson's readout (the difference of two logits sums to zero), wrong with one token's logit
    "the readout is read through log_softmax": lambda *a: input_gradients(*a, through="log_softmax"),
    "the readout is de-meaned inside the function": lambda *a: input_gradients(*a, through="demeaned"),
    # one of the three tensors wrong: the message names it
    "returns `g_gates` all zeros": lambda *a: input_gradients(*a, gated=False),
    "gives the wrong `g_gates` [target, layer, head]": lambda *a: (
        *input_gradients(*a)[:2],
        2 * input_gradients(*a)[2],
    ),
    "gives the wrong `g_writes` [target, layer, pos, d_model]": _one_layer_off,
}


def test_input_gradients_check_accepts_one_backward_pass_per_target_and_names_each_mistake(prove_check, zoo):
    prove_check(c.check_input_gradients, input_gradients, INPUT_GRADIENT_MISTAKES, *zoo)


def edge_rows(run, transcoders, g_embed, g_writes, unit=False, through="decoder", vectors="errors", order="layer"):
    """Source by source, in a loop (the notebook takes a layer's features at once), and the named mistakes."""
    P, L = run.embed.shape[0], len(transcoders)
    columns = [torch.einsum("tpd,pd->tp", g_embed, run.embed)[:, p] for p in range(1, P)]
    for layer, tc in enumerate(transcoders):
        for p, latent in (run.acts[layer] > 0).nonzero().tolist():
            direction = tc.W_dec[latent] if through == "decoder" else tc.W_enc[:, latent]
            edge = g_writes[:, layer, p] @ direction
            columns.append(edge if unit else edge * run.acts[layer][p, latent])
    vec = run.errors if vectors == "errors" else run.mlp_out
    pairs = [(layer, p) for layer in range(L) for p in range(1, P)]
    if order == "position":
        pairs = [(layer, p) for p in range(1, P) for layer in range(L)]
    columns += [g_writes[:, layer, p] @ vec[layer][p] for layer, p in pairs]
    return torch.stack(columns, 1)


EDGE_MISTAKES = {
    "per unit of its activation": lambda *a: edge_rows(*a, unit=True),
    "read through its encoder column": lambda *a: edge_rows(*a, through="encoder"),
    "uses the MLP's whole output": lambda *a: edge_rows(*a, vectors="mlp_out"),
    "ordered position by position": lambda *a: edge_rows(*a, order="position"),
}


def test_edge_rows_check_accepts_a_loop_over_sources_and_names_each_mistake(prove_check, zoo):
    prove_check(c.check_edge_rows, edge_rows, EDGE_MISTAKES, *zoo)


def attribution_graph(model, transcoders, run, readout, through="logits", input_through="logits"):
    """Every target at once, by autograd with batched gradients (the notebook runs a vjp in batches), and the
    named mistakes: the readout read through log_softmax or de-meaned, in its edges or in its input alone."""
    L, P, H = len(transcoders), len(run.tokens), model.cfg.n_heads
    active = [(layer, p, f) for layer, a in enumerate(run.acts) for p, f in (a > 0).nonzero().tolist()]
    nodes = [("embed", -1, p, -1) for p in range(1, P)] + [("feature", *f) for f in active]
    nodes += [("error", layer, p, -1) for layer in range(L) for p in range(1, P)] + [("readout", L, P - 1, -1)]
    embed = run.embed.clone().requires_grad_(True)
    writes = torch.stack(_writes(run, transcoders)).requires_grad_(True)
    gates = torch.ones(L, H, requires_grad=True)
    with torch.enable_grad():
        mlp_ins, final = A.linear_forward(model, run, embed, writes, gates)
        pre = torch.stack([mlp_ins[layer][p] @ transcoders[layer].W_enc[:, f] for layer, p, f in active])
        logits = A.logits_of(model, final)[-1]
        logits = logits.log_softmax(-1) if through == "log_softmax" else logits
        values = torch.cat([pre, (logits @ (readout - readout.mean() if through == "demeaned" else readout))[None]])
        eye = torch.eye(len(values))
        g_embed, g_writes, g_gates = torch.autograd.grad(values, [embed, writes, gates], eye, is_grads_batched=True)
    rows = edge_rows(run, transcoders, g_embed, g_writes)
    n = len(nodes)
    adjacency, heads = torch.zeros(n, n), torch.zeros(n, L, H)
    targets = list(range(P - 1, P - 1 + len(active))) + [n - 1]
    adjacency[targets, : n - 1] = rows
    heads[targets] = g_gates
    acts = torch.tensor([run.acts[layer][p, f].item() for layer, p, f in active])
    inputs = torch.zeros(n)
    inputs[targets] = torch.cat([pre + torch.stack([transcoders[l].b_enc[f] for l, _, f in active]), values[-1:]])
    if input_through == "log_softmax":  # the edges right, the readout's input a log-probability
        inputs[-1] = run.logits[-1].log_softmax(-1) @ readout
    vals = torch.ones(n)
    vals[P - 1 : P - 1 + len(active)] = acts
    return A.Graph(nodes, adjacency.detach(), vals, inputs.detach(), readout, heads.detach())


def _changed(**change):
    def build(model, transcoders, run, readout):
        graph = A.attribution_graph(model, transcoders, run, readout)
        features = graph.index("feature")
        if change.get("values"):
            graph.values = torch.ones_like(graph.values)
        if change.get("inputs"):
            graph.inputs[features] -= torch.stack(
                [transcoders[graph.nodes[i][1]].b_enc[graph.nodes[i][3]] for i in features]
            )
        if change.get("no_readout"):
            graph.adjacency[-1] = 0
        if change.get("no_heads"):
            graph.through_heads = None
        if change.get("first_position"):
            graph.nodes = [("embed", -1, 0, -1)] + graph.nodes[:-1]
        if change.get("transposed"):
            graph.adjacency = graph.adjacency.T.clone()
        if change.get("batch_end_skipped"):  # targets[start : start + batch - 1]: each batch's last row left out
            targets = features.tolist() + [len(graph.nodes) - 1]
            graph.adjacency[targets[255::256] + targets[-1:]] = 0
        return graph

    return build


GRAPH_MISTAKES = {
    "every value is 1": _changed(values=True),
    "leaves out the encoder's bias": _changed(inputs=True),
    "the readout's row is empty": _changed(no_readout=True),
    "leaves through_heads out": _changed(no_heads=True),
    "gives the wrong nodes: node 0": _changed(first_position=True),
    "the adjacency is transposed": _changed(transposed=True),
    "targets' rows empty": _changed(batch_end_skipped=True),
    # right with the lesson's readout (the difference of two logits sums to zero), wrong with one token's logit
    "the readout is read through log_softmax": lambda *a: attribution_graph(*a, through="log_softmax"),
    "the readout is de-meaned inside the function": lambda *a: attribution_graph(*a, through="demeaned"),
    "the readout's input is its log-probability": lambda *a: attribution_graph(*a, input_through="log_softmax"),
}


def test_attribution_graph_check_accepts_batched_autograd_and_names_each_mistake(prove_check, zoo):
    prove_check(c.check_attribution_graph, attribution_graph, GRAPH_MISTAKES, *zoo)


def prune(
    graph,
    node_share=0.8,
    edge_share=0.98,
    errors_pass=False,
    passes=99,
    rank_readout=False,
    plain=False,
    full=False,
    rank_embeds=False,
    drop_crossing=False,
    per_row=False,
):
    """The reference rule with a power series and a sort by index (the notebook thresholds scores), and the mistakes."""
    n = len(graph.nodes)
    kinds = [node[0] for node in graph.nodes]

    def paths(a, with_readout):
        a = a.abs() / a.abs().sum(1, keepdim=True).clamp_min(1e-12)
        term, total = torch.zeros(n), torch.zeros(n)
        term[-1] = 1.0
        total += term if with_readout else 0
        for _ in range(n):
            term = term @ a
            total = total + term
        return total, a

    def first(scores, share, crossing=True):  # the indices holding `share` of the total, largest first
        order = scores.argsort(descending=True, stable=True)
        cumulative = scores[order].cumsum(0) / scores.sum()
        return set(order[: int((cumulative < share).sum()) + int(crossing)].tolist())

    inf, _ = paths(graph.adjacency, rank_readout)
    ranked = [i for i in range(n) if kinds[i] == "feature"] if errors_pass else list(range(n))
    kept = {ranked[i] for i in first(inf[ranked], node_share, crossing=not drop_crossing)}
    kept |= {i for i in range(n) if kinds[i] == "readout" or (kinds[i] == "embed" and not rank_embeds)}
    kept |= {i for i in range(n) if errors_pass and kinds[i] == "error"}
    mask = torch.tensor([i in kept for i in range(n)])
    a = graph.adjacency if full else graph.adjacency * (mask[:, None] & mask[None, :])
    target_inf, norm = paths(a, True)
    score = norm * (torch.ones(n) if plain else target_inf)[:, None]
    edges = {(t, s) for t, s in (score > 0).nonzero().tolist()}
    if per_row:  # each target's edges cut on their own
        by_row = {}
        for t, s in sorted(edges):
            by_row.setdefault(t, []).append(s)
        edges = set()
        for t, sources in by_row.items():
            chosen = first(torch.tensor([score[t, s].item() for s in sources]), edge_share)
            edges |= {(t, sources[k]) for k in chosen}
    else:
        flat = torch.tensor([score[t, s].item() for t, s in sorted(edges)])
        chosen = first(flat, edge_share)
        edges = {ts for k, ts in enumerate(sorted(edges)) if k in chosen}
    for _ in range(passes):
        edges = {(t, s) for t, s in edges if t in kept and s in kept}
        drop = {
            i
            for i in kept
            if kinds[i] == "feature" and not ({s for t, s in edges} >= {i} and {t for t, s in edges} >= {i})
        }
        drop |= {i for i in kept if kinds[i] == "error" and i not in {s for t, s in edges}}
        if not drop:
            break
        kept -= drop
    idx = torch.tensor(sorted(kept))
    out = A.subgraph(graph, idx)
    keep_edge = torch.zeros(n, n, dtype=torch.bool)
    for t, s in edges:
        if t in kept and s in kept:
            keep_edge[t, s] = True
    out.adjacency = out.adjacency * keep_edge[idx][:, idx]
    return out


def _wrong_prune(**mistake):
    """A prune called as the explorer calls it, by keyword, making one of the named mistakes."""

    def wrong(graph, node_share=0.8, edge_share=0.98):
        return prune(graph, node_share, edge_share, **mistake)

    return wrong


PRUNE_MISTAKES = {
    "every error node passes the node cut": _wrong_prune(errors_pass=True),
    "left dangling by an earlier removal": _wrong_prune(passes=1),
    "the readout's own influence (1) is ranked": _wrong_prune(rank_readout=True),
    "scored by their normalised weight alone": _wrong_prune(plain=True),
    "scored on the full graph": _wrong_prune(full=True),
    "embeddings are cut by the node rule": _wrong_prune(rank_embeds=True),
    "the node whose influence crosses the share is left out": _wrong_prune(drop_crossing=True),
    "the edges are cut row by row": _wrong_prune(per_row=True),
    # right at the paper's shares, wrong once the explorer's sliders move them
    "ignores both shares": lambda graph, node_share=0.8, edge_share=0.98: prune(graph),
    "ignores edge_share": lambda graph, node_share=0.8, edge_share=0.98: prune(graph, node_share),
    "cannot be called as prune(graph, node_share=0.8, edge_share=0.98)": lambda graph, nodes=0.8, edges=0.98: prune(
        graph, nodes, edges
    ),
}


def test_prune_check_accepts_sets_and_a_power_series_and_names_each_mistake(prove_check, zoo):
    prove_check(c.check_prune, prune, PRUNE_MISTAKES, *zoo)


def test_prune_check_names_a_prune_that_changes_the_graph_it_was_given(zoo):
    def prune_in_place(graph, node_share=0.8, edge_share=0.98):
        out = prune(graph, node_share, edge_share)
        graph.adjacency *= 0  # the learner's graph, spoiled for every cell after
        return out

    with pytest.raises(CheckFailed, match="changed the graph it was given in place; work on a copy"):
        c.check_prune(prune_in_place, *zoo)
