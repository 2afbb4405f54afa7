"""Checks for lesson 11, transcoders and attribution graphs: ``check_<exercise>(your_function, ...)``.

Each check runs the learner's function on inputs whose answer :mod:`utils.model_zoo.transcoders` or
:mod:`utils.metrics.attribution` computes, and names the common wrong answers when one of them matches
instead. The inputs are built so that the mistakes give different numbers: rows with fewer positive
pre-activations than ``k``, feature pairs two layers apart (where a direct effect and a total effect
differ), graphs with negative edges and paths longer than one step.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable

import torch

from utils.checks.framework import CheckFailed, call, expect_close, expect_tensor, passed
from utils.corpora.tokenizer import encode_doc
from utils.metrics import attribution as A
from utils.model_zoo.transcoders import Transcoder, decode, encode
from utils.seeds import LESSON_11_CHECKS

_PROMPT = "Ava and Tom went to the market. Tom gave a cup to"


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


def _prompt_run(model, transcoders: list[Transcoder]) -> A.PromptRun:
    tokens = torch.tensor(encode_doc(_PROMPT, model.tokenizer)[:-1])
    return A.run_prompt(model, transcoders, tokens)


# --- the TopK encoder -----------------------------------------------------------------------------------


def check_topk_encode(fn: Callable) -> None:
    """``fn(x [pos, d_model], W_enc [d_model, d_tc], b_enc [d_tc], k)`` -> ``acts [pos, d_tc]``."""
    name = _name(fn, "topk_encode")
    g = torch.Generator().manual_seed(LESSON_11_CHECKS)
    pos, d, d_tc, k = 6, 8, 20, 4
    x = torch.randn(pos, d, generator=g)
    W_enc = torch.randn(d, d_tc, generator=g) / d**0.5
    b_enc = torch.randn(d_tc, generator=g) * 0.5 - 0.8  # most pre-activations negative: some rows have < k positive
    x[0] *= 0.01  # a row whose pre-activations are nearly all the (negative) bias
    tc = Transcoder(0, k, W_enc, b_enc, torch.zeros(d_tc, d), torch.zeros(d))
    out = call(fn, x, W_enc, b_enc, k, name=name)
    out = expect_tensor(out, (pos, d_tc), ("position", "latent"), name)
    ref = encode(tc, x)
    pre = x @ W_enc + b_enc

    def keep_top(scores: torch.Tensor, values: torch.Tensor, dim: int = -1) -> torch.Tensor:
        top = scores.topk(k, dim=dim).indices
        return torch.zeros_like(values).scatter(dim, top, values.gather(dim, top))

    no_bias = torch.relu(x @ W_enc)
    expect_close(
        out,
        ref,
        name,
        hints=[
            (keep_top(pre, pre), "negative pre-activations are kept: apply the ReLU (a latent is never negative)."),
            (torch.relu(pre), "every positive latent is kept: keep only the k largest in each row."),
            (
                keep_top(pre.abs(), torch.relu(pre)),
                "the k largest are chosen by size (absolute value); choose them by value, after the ReLU.",
            ),
            (keep_top(no_bias, no_bias), "the encoder's bias b_enc is missing: pre = x @ W_enc + b_enc."),
            (
                keep_top(torch.relu(pre), torch.relu(pre), dim=0),
                "the k largest are taken down each column (over positions); take them along each row (over latents).",
            ),
        ],
    )
    if not ((out > 0).sum(-1) <= k).all():
        raise CheckFailed(f"`{name}` keeps more than k latents in some row.")
    active = (out > 0).sum(-1).tolist()
    passed(
        name, f"active latents per row {active} (k = {k}): a row with fewer positive pre-activations keeps only those"
    )


# --- the direct effect of one feature on another ---------------------------------------------------------


def _pre(run: A.PromptRun, transcoders: list[Transcoder], model, writes, target) -> torch.Tensor:
    _, layer, p, latent = target
    mlp_ins, _ = A.linear_forward(model, run, run.embed, writes)
    return mlp_ins[layer][p] @ transcoders[layer].W_enc[:, latent] + transcoders[layer].b_enc[latent]


def _without(run: A.PromptRun, transcoders: list[Transcoder], writes: list[torch.Tensor], node: tuple) -> list:
    """A copy of the MLP ``writes`` with feature ``node``'s own write removed from its layer and position."""
    _, layer, p, latent = node
    out = [w.clone() for w in writes]
    out[layer][p] -= run.acts[layer][p, latent] * transcoders[layer].W_dec[latent]
    return out


def _writes(run: A.PromptRun, transcoders: list[Transcoder]) -> list[torch.Tensor]:
    return [decode(tc, a) + e for tc, a, e in zip(transcoders, run.acts, run.errors)]


# What a check compares the learner's function with depends only on the model and its transcoders, and takes
# seconds to build (an attribution graph, and the model run again for each reference), so it is built once for each
# pair and kept while the model lives. The learner's function is given a copy of the prompt's run each time: what it
# changes in that copy reaches neither the reference nor the next check.
_CASES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _case(kind: str, build: Callable, model, transcoders: list[Transcoder]) -> dict:
    for_model = _CASES.setdefault(model, {})
    kept = for_model.get(kind)
    if kept is None or kept[0] is not transcoders:
        kept = for_model[kind] = (transcoders, build(model, transcoders))
    return kept[1]


def _direct_effect_case(model, transcoders: list[Transcoder]) -> dict:
    """The edges the direct-effect check asks about, with each one's reference and its named mistakes' values."""
    run = _prompt_run(model, transcoders)
    readout = A.readout_direction(run.logits.shape[-1], int(run.tokens[1]), int(run.tokens[3]))
    graph = A.attribution_graph(model, transcoders, run, readout)
    features = graph.index("feature").tolist()
    nodes = graph.nodes
    # the strongest edges between features, one with a layer gap of one and two with a gap of two or more
    pairs = sorted(
        ((t, s) for t in features for s in features if nodes[s][1] < nodes[t][1] and graph.adjacency[t, s] != 0),
        key=lambda ts: -abs(graph.adjacency[ts].item()),
    )
    far = [ts for ts in pairs if nodes[ts[0]][1] - nodes[ts[1]][1] >= 2]
    near = [ts for ts in pairs if nodes[ts[0]][1] - nodes[ts[1]][1] == 1]
    if not far or not near:
        raise RuntimeError("the check's prompt has no feature pairs one and two layers apart: a changed zoo model?")
    writes = _writes(run, transcoders)
    # and, among the strongest 200, one edge whose removal changes the target's activation otherwise than its
    # pre-activation (the target drops out of its TopK, or to zero), so that the two cannot be confused
    crossing = next(
        (ts for ts in pairs[:200] if _activation_moves_otherwise(run, transcoders, model, writes, ts, nodes)), None
    )
    chosen = near[:1] + far[:2] + ([crossing] if crossing is not None else [])
    # and the strongest edge whose source and target sit at different positions, which a head carries across
    across = next((ts for ts in pairs if nodes[ts[0]][2] != nodes[ts[1]][2]), None)
    if across is None:
        raise RuntimeError("the check's prompt has no feature pair at different positions: a changed zoo model?")
    if across not in chosen:
        chosen.append(across)
    refs, hints = [], {k: [] for k in ("total", "post", "unit", "sign", "position")}
    for t, s in chosen:
        source, target = nodes[s], nodes[t]
        _, ls, ps, fs = source
        without = _without(run, transcoders, writes, source)
        ref = _pre(run, transcoders, model, writes, target) - _pre(run, transcoders, model, without, target)
        refs.append(ref)
        hints["total"].append(_real_model_effect(model, run, transcoders, source, target))
        hints["post"].append(_activation_change(run, transcoders, model, writes, without, target))
        hints["unit"].append(ref / run.acts[ls][ps, fs])
        hints["sign"].append(-ref)
        at_target = [w.clone() for w in writes]  # the source's write removed at the target's position
        at_target[ls][nodes[t][2]] -= run.acts[ls][ps, fs] * transcoders[ls].W_dec[fs]
        hints["position"].append(
            _pre(run, transcoders, model, writes, target) - _pre(run, transcoders, model, at_target, target)
        )
    edges = [(nodes[s], nodes[t]) for t, s in chosen]
    gaps = [nodes[t][1] - nodes[s][1] for t, s in chosen]
    return {
        "run": run,
        "edges": edges,
        "refs": torch.stack(refs).detach(),
        "hints": {k: torch.stack(v).detach() for k, v in hints.items()},
        "said": f"{len(chosen)} edges of a graph (layer gaps {gaps}) match, one of them from position "
        f"{nodes[across[1]][2]} to position {nodes[across[0]][2]}",
    }


def check_direct_effect(fn: Callable, model, transcoders: list[Transcoder]) -> None:
    """``fn(model, run, transcoders, source, target)`` -> the direct effect (a number) of feature node ``source``
    on feature node ``target``'s pre-activation, both ``("feature", layer, position, latent)``."""
    name = _name(fn, "direct_effect")
    case = _case("direct_effect", _direct_effect_case, model, transcoders)
    outs = []
    for source, target in case["edges"]:
        out = call(fn, model, copy.deepcopy(case["run"]), transcoders, source, target, name=name)
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            out = out.reshape(())
        outs.append(expect_tensor(torch.as_tensor(out, dtype=torch.float32), (), (), name))
    hints = case["hints"]
    expect_close(
        torch.stack(outs),
        case["refs"],
        name,
        what="direct effects",
        atol=1e-3,
        rtol=1e-3,
        hints=[
            (
                hints["total"],
                "this is the total effect, measured in the real model, where the MLPs in between are recomputed "
                "and pass the change on. The direct effect holds every other MLP's write fixed: remove the "
                "feature's write in the replacement model (`A.linear_forward` with the other writes as they were).",
            ),
            (
                hints["post"],
                "this compares the target's activation (after the ReLU and TopK); an edge ends at its "
                "pre-activation, x @ W_enc + b_enc.",
            ),
            (
                hints["unit"],
                "this is the effect per unit of the source's activation: multiply by its activation on this prompt.",
            ),
            (hints["sign"], "the sign is reversed: with the feature minus without it."),
            (
                hints["position"],
                "the source's write is removed at the target's position; remove it at the source's own position "
                "(a head carries it across), and read the target at its own.",
            ),
        ],
    )
    passed(name, case["said"])


def _activation_change(run, transcoders, model, writes, without, target) -> torch.Tensor:
    """The target's activation with the source minus without it (the mistake of comparing activations)."""
    _, layer, p, latent = target
    after = []
    for ws in (writes, without):
        mlp_ins, _ = A.linear_forward(model, run, run.embed, ws)
        after.append(encode(transcoders[layer], mlp_ins[layer][p])[latent])
    return after[0] - after[1]


def _activation_moves_otherwise(run, transcoders, model, writes, ts, nodes) -> bool:
    t, s = ts
    without = _without(run, transcoders, writes, nodes[s])
    pre = _pre(run, transcoders, model, writes, nodes[t]) - _pre(run, transcoders, model, without, nodes[t])
    return abs(_activation_change(run, transcoders, model, writes, without, nodes[t]) - pre).item() > 1e-2


@torch.no_grad()
def _real_model_effect(model, run, transcoders, source, target) -> torch.Tensor:
    _, ls, ps, fs = source
    _, lt, pt, ft = target
    change = run.acts[ls][ps, fs] * transcoders[ls].W_dec[fs]

    def remove(y, hook):
        y = y.clone()
        y[:, ps] -= change.to(y.dtype)
        return y

    def read(model_hooks):
        seen = {}

        def keep(x, hook):
            seen["x"] = x[0, pt].float()

        with model.hooks(fwd_hooks=[*model_hooks, (f"blocks.{lt}.mlp.hook_in", keep)]):
            model(run.tokens[None])
        return seen["x"] @ transcoders[lt].W_enc[:, ft] + transcoders[lt].b_enc[ft]

    return read([]) - read([(f"blocks.{ls}.hook_mlp_out", remove)])


# --- influence ---------------------------------------------------------------------------------------------


def _random_dag(n: int, g: torch.Generator) -> torch.Tensor:
    """``adjacency [target, source]`` of a random graph whose edges run from lower to higher index (the last node
    the readout), with negative weights and some nodes reached only through others."""
    a = torch.randn(n, n, generator=g) * (torch.rand(n, n, generator=g) < 0.5)
    a = a.tril(-1)
    a[-1, : n // 2] = 0  # the first half reaches the readout only through the second
    a[-1, -2] = 2.0
    return a


def check_influence(fn: Callable) -> None:
    """``fn(adjacency [n, n])`` -> ``influence [n]``: each node's share of the readout (the last node) through
    paths of every length, on absolute weights with each node's incoming edges scaled to sum to 1."""
    name = _name(fn, "influence")
    g = torch.Generator().manual_seed(LESSON_11_CHECKS + 1)
    n = 9
    adjacency = _random_dag(n, g)
    graph = A.Graph([("feature", 0, i, 0) for i in range(n)], adjacency, torch.ones(n), torch.zeros(n), None)
    out = call(fn, adjacency.clone(), name=name)
    out = expect_tensor(out, (n,), ("node",), name)
    ref = A.influence(graph)
    a = adjacency.abs()
    norm = a / a.sum(1, keepdim=True).clamp_min(1e-12)
    signed = adjacency / adjacency.abs().sum(1, keepdim=True).clamp_min(1e-12)
    cols = a / a.sum(0, keepdim=True).clamp_min(1e-12)
    eye = torch.eye(n)
    expect_close(
        out,
        ref,
        name,
        hints=[
            (norm[-1], "only the direct edges into the readout count; add paths of every length: (I - A)⁻¹."),
            (torch.linalg.inv(eye - signed)[-1], "the weights are signed: influence uses their absolute values."),
            (
                torch.linalg.inv(eye - a)[-1],
                "the weights are not normalised: scale each node's incoming edges (a row) to sum to 1.",
            ),
            (torch.linalg.inv(eye - cols)[-1], "the columns are normalised; normalise each row (a target's inputs)."),
            ((torch.linalg.inv(eye - norm) - eye)[-1], "the readout's own influence should be 1 (paths of length 0)."),
        ],
    )
    passed(name, f"{int((out[: n // 2] > 0).sum())} of the {n // 2} nodes with no direct edge reach the readout")


# --- turning features off in the real model ---------------------------------------------------------------


def _measured_effects_case(model, transcoders: list[Transcoder]) -> dict:
    """The five most influential features of the check's graph, their effects and the named mistakes' values."""
    run = _prompt_run(model, transcoders)
    readout = A.readout_direction(run.logits.shape[-1], int(run.tokens[1]), int(run.tokens[3]))
    graph = A.attribution_graph(model, transcoders, run, readout)
    inf = A.influence(graph)
    features = graph.index("feature")
    top = features[inf[features].argsort(descending=True)[:5]]
    nodes = [graph.nodes[i] for i in top]
    base = run.logits[-1] @ readout
    ref = torch.stack([A.intervene(model, run, transcoders, node, 0.0)[-1] @ readout - base for node in nodes])
    mean_pos = torch.stack(
        [(A.intervene(model, run, transcoders, node, 0.0) - run.logits).mean(0) @ readout for node in nodes]
    )
    writes = _writes(run, transcoders)
    direct = []  # the replacement model with every other MLP's write held: minus the feature's direct edge
    for node in nodes:
        _, final = A.linear_forward(model, run, run.embed, _without(run, transcoders, writes, node))
        direct.append(A.readout_value(model, final, readout) - base)
    predicted = -A.total_effects(graph)[top]  # the graph's prediction, through every path
    values = {"ref": ref, "base": base, "mean_pos": mean_pos, "direct": torch.stack(direct), "predicted": predicted}
    return {"run": run, "readout": readout, "nodes": nodes, **{k: v.detach() for k, v in values.items()}}


def check_measured_effects(fn: Callable, model, transcoders: list[Transcoder]) -> None:
    """``fn(model, run, transcoders, nodes, readout)`` -> ``[len(nodes)]``: for each feature node, the change in the
    readout at the last position when the real model runs with that feature turned off (off minus as it was)."""
    name = _name(fn, "measured_effects")
    case = _case("measured_effects", _measured_effects_case, model, transcoders)
    nodes, ref = case["nodes"], case["ref"]
    out = call(fn, model, copy.deepcopy(case["run"]), transcoders, list(nodes), case["readout"].clone(), name=name)
    out = expect_tensor(
        torch.as_tensor(out, dtype=torch.float32) if isinstance(out, list) else out, (5,), ("node",), name
    )
    expect_close(
        out,
        ref,
        name,
        what="effects",
        atol=1e-3,
        rtol=1e-3,
        hints=[
            (-ref, "the sign is reversed: the readout with the feature off minus the readout as it was."),
            (ref + case["base"], "this is the readout with the feature off; subtract the readout as it was."),
            (case["mean_pos"], "the readout is read at the last position only, not averaged over positions."),
            (
                case["direct"],
                "this runs the replacement model (attention and norms frozen) with every later MLP's write held fixed: "
                "it is minus the feature's direct edge into the readout, not even the graph's full prediction; "
                "measure in the real model: "
                "`A.intervene(model, run, transcoders, node, 0.0)`.",
            ),
            (
                case["predicted"],
                "this is minus the graph's `total_effects`, the graph's own prediction (attention and norms frozen, "
                "every feature passing changes straight on); measure in the real model: "
                "`A.intervene(model, run, transcoders, node, 0.0)`.",
            ),
        ],
    )
    passed(name, f"{len(nodes)} features turned off in the real model")
