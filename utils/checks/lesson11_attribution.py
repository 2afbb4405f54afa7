"""Checks for lesson 11, transcoders and attribution graphs: ``check_<exercise>(your_function, ...)``.

Each check runs the learner's function on inputs whose answer :mod:`utils.model_zoo.transcoders` or
:mod:`utils.metrics.attribution` computes, and names the common wrong answers when one of them matches
instead. The inputs are built so that the mistakes give different numbers: rows with fewer positive
pre-activations than ``k``, feature pairs two layers apart (where a direct effect and a total effect
differ), graphs with negative edges and paths longer than one step, a transfer story whose two names are single
tokens (so the readout is a logit difference of real size), and a second readout of one token's logit, which does
not sum to zero (so that reading it through log_softmax, or de-meaning it, changes the answer).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable

import torch

from utils.checks.framework import CheckFailed, call, expect_close, expect_tensor, passed
from utils.corpora.ioi_pairs import patching_pairs
from utils.metrics import attribution as A
from utils.model_zoo.transcoders import Transcoder, decode, encode
from utils.seeds import LESSON_11_CHECKS


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


def _check_prompt(model, transcoders: list[Transcoder]) -> tuple[A.PromptRun, torch.Tensor, torch.Tensor]:
    """The checks' prompt, a Storyworld transfer story of the lesson's kind with two single-token names (not one of
    the lesson's prompts), its run, and two readouts: the answer's logit minus the subject's (the lesson's), and the
    answer's logit alone (a readout that does not sum to zero, as sections 6 and the investigation use)."""
    pairs = patching_pairs(model, n=1, seed=LESSON_11_CHECKS, corruption="swap", subject_first=True)
    run = A.run_prompt(model, transcoders, pairs.clean[0])
    vocab, answer = run.logits.shape[-1], int(pairs.answers[0])
    return run, A.readout_direction(vocab, answer, int(pairs.distractors[0])), A.readout_direction(vocab, answer)


# --- the TopK encoder -----------------------------------------------------------------------------------


def check_topk_encode(fn: Callable) -> None:
    """``fn(x [pos, d_model], W_enc [d_model, d_tc], b_enc [d_tc], k)`` -> ``acts [pos, d_tc]``, and the same
    along the last dimension for a batch ``x [batch, pos, d_model]``."""
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
    # Section 1 hands it a batch of prompts, x [batch, pos, d_model]: the same rule along the last dimension.
    batch = torch.randn(3, pos, d, generator=g)
    try:
        out3 = call(fn, batch, W_enc, b_enc, k, name=name)
    except CheckFailed as e:
        why = e.args[0].removeprefix(f"`{name}` ")
        raise CheckFailed(
            f"`{name}` fails on a batch x [batch, pos, d_model], as section 1 gives it: it {why.rstrip('.')}; "
            "a batch adds leading dimensions: use x @ W_enc (not torch.mm) and take the top k along the last "
            "dimension (dim=-1)."
        ) from None
    out3 = expect_tensor(out3, (3, pos, d_tc), ("batch", "position", "latent"), name)
    pre3 = torch.relu(batch @ W_enc + b_enc)
    expect_close(
        out3,
        encode(tc, batch),
        name,
        what="values on a batch [batch, pos, d_model]",
        hints=[
            (
                keep_top(pre3, pre3, dim=1),
                "on a batch [batch, pos, d_model] the top k is taken over dimension 1, the positions; "
                "take it along the last dimension (dim=-1), the latents, whatever the leading dimensions.",
            )
        ],
    )
    active = (out > 0).sum(-1).tolist()
    passed(
        name,
        f"active latents per row {active} (k = {k}): a row with fewer positive pre-activations keeps only those",
        fn=fn,
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
    passed(name, f"{int((out[: n // 2] > 0).sum())} of the {n // 2} nodes with no direct edge reach the readout", fn=fn)


# --- turning features off in the real model ---------------------------------------------------------------


@torch.no_grad()
def _everywhere(model, run: A.PromptRun, transcoders: list[Transcoder], node: tuple) -> torch.Tensor:
    """The real model's logits ``[pos, vocab]`` with the feature's write subtracted at every position, not its own."""
    _, layer, p, latent = node
    write = run.acts[layer][p, latent] * transcoders[layer].W_dec[latent]
    with model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_mlp_out", lambda y, hook: y - write.to(y.dtype))]):
        return model(run.tokens[None])[0].float()


def _measured_effects_case(model, transcoders: list[Transcoder]) -> dict:
    """The five most influential features of the check's graph, their effects and the named mistakes' values."""
    run, readout, _ = _check_prompt(model, transcoders)
    graph = A.attribution_graph(model, transcoders, run, readout)
    inf = A.influence(graph)
    features = graph.index("feature")
    top = features[inf[features].argsort(descending=True)[:5]]
    nodes = [graph.nodes[i] for i in top]
    base = run.logits[-1] @ readout

    def at_last(logits_of_node) -> torch.Tensor:  # [node]: the change in the readout at the last position
        return torch.stack([logits_of_node(node)[-1] @ readout - base for node in nodes])

    def frozen(attention: bool, norms: bool) -> torch.Tensor:
        return at_last(lambda node: A.intervene_frozen(model, run, transcoders, node, 0.0, attention, norms))

    mean_pos = torch.stack(
        [(A.intervene(model, run, transcoders, node, 0.0) - run.logits).mean(0) @ readout for node in nodes]
    )
    writes = _writes(run, transcoders)
    direct = []  # the replacement model with every other MLP's write held: minus the feature's direct edge
    for node in nodes:
        _, final = A.linear_forward(model, run, run.embed, _without(run, transcoders, writes, node))
        direct.append(A.readout_value(model, final, readout) - base)
    values = {
        "ref": at_last(lambda node: A.intervene(model, run, transcoders, node, 0.0)),
        "base": base,
        "mean_pos": mean_pos,
        "direct": torch.stack(direct),
        "predicted": -A.total_effects(graph)[top],  # the graph's prediction, through every path
        "everywhere": at_last(lambda node: _everywhere(model, run, transcoders, node)),
        "attention": frozen(True, False),
        "norms": frozen(False, True),
        "both": frozen(True, True),
        "half_twice": 2 * at_last(lambda node: A.intervene(model, run, transcoders, node, 0.5)),
    }
    return {"run": run, "readout": readout, "nodes": nodes, **{k: v.detach() for k, v in values.items()}}


_IN_THE_REAL_MODEL = "`A.intervene(model, run, transcoders, node, 0.0)`, or your hook on hook_mlp_out alone."


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
                case["everywhere"],
                "the feature's write is removed at every position; remove it at its own position p only "
                "(y[:, p] in the hook).",
            ),
            (
                case["half_twice"],
                "the feature is turned half off and the change doubled, a linear estimate; turn it fully off "
                "(its whole write removed) and report the change as it is.",
            ),
            (
                case["attention"],
                "the attention patterns are frozen at the prompt's, as the graph freezes them; measure in the real "
                "model, where only the feature's write changes: " + _IN_THE_REAL_MODEL,
            ),
            (
                case["norms"],
                "the norms' scales are frozen at the prompt's, as the graph freezes them; measure in the real model, "
                "where only the feature's write changes: " + _IN_THE_REAL_MODEL,
            ),
            (
                case["both"],
                "the attention patterns and the norms' scales are both frozen (`A.intervene_frozen`), as the graph "
                "freezes them; measure in the real model, where only the feature's write changes: "
                + _IN_THE_REAL_MODEL,
            ),
            (
                case["direct"],
                "this runs the replacement model (attention and norms frozen) with every later MLP's write held fixed: "
                "it is minus the feature's direct edge into the readout, not even the graph's full prediction; "
                "measure in the real model: " + _IN_THE_REAL_MODEL,
            ),
            (
                case["predicted"],
                "this is minus the graph's `total_effects`, the graph's own prediction (attention and norms frozen, "
                "every feature passing changes straight on); measure in the real model: " + _IN_THE_REAL_MODEL,
            ),
        ],
    )
    passed(name, f"{len(nodes)} features turned off in the real model", fn=fn)


# --- the graph, built by backward passes -------------------------------------------------------------------------


def _gradients(
    model,
    run: A.PromptRun,
    transcoders: list[Transcoder],
    targets: list,
    readout: torch.Tensor,
    *,
    seed_with: str = "encoder",
    readout_at: str = "last",
    seed_at: str = "own",
    read: str = "logits",
):
    """The reference's gradients of each target's input (``input_gradients``), and, with the keywords, the named
    mistakes': the decoder row as a feature's seed, the readout summed over positions, every feature seeded at the
    last position, the readout read through log_softmax or de-meaned (``read``)."""
    from torch.func import vjp, vmap

    L, (P, d) = len(transcoders), run.embed.shape
    writes = torch.stack(_writes(run, transcoders))
    W_U = model.W_U.detach().float()
    direction = readout - readout.mean() if read == "demeaned" else readout

    def forward(embed, writes, gates):
        mlp_ins, final = A.linear_forward(model, run, embed, writes, gates)
        rows = final[-1] if readout_at == "last" else final
        logits = rows @ W_U
        value = (logits.log_softmax(-1) if read == "log_softmax" else logits) @ direction
        return torch.stack(mlp_ins), value if readout_at == "last" else value.sum()

    with torch.enable_grad():
        _, pullback = vjp(forward, run.embed, writes, torch.ones(L, model.cfg.n_heads))
        to_mlp_ins, to_value = torch.zeros(len(targets), L, P, d), torch.zeros(len(targets))
        for k, (kind, layer, p, latent) in enumerate(targets):
            if kind == "feature":
                column = (
                    transcoders[layer].W_enc[:, latent] if seed_with == "encoder" else transcoders[layer].W_dec[latent]
                )
                to_mlp_ins[k, layer, p if seed_at == "own" else P - 1] = column
            elif readout_at != "none":
                to_value[k] = 1.0
        return tuple(t.detach() for t in vmap(pullback)((to_mlp_ins, to_value)))


def _graph_case(model, transcoders: list[Transcoder]) -> dict:
    """The check prompt's run, its reference graph, and a few targets: features of every layer, at the final
    position and before it, and the readout; and a second readout, the answer's logit alone, with the readout's
    edges, input and parts through each head under it (the reference's and the named mistakes')."""
    run, readout, single = _check_prompt(model, transcoders)
    graph = A.attribution_graph(model, transcoders, run, readout)
    P, targets = len(run.tokens), []
    for layer in range(len(transcoders)):
        here = [i for i, node in enumerate(graph.nodes) if node[0] == "feature" and node[1] == layer]
        last = [i for i in here if graph.nodes[i][2] == P - 1]
        before = [i for i in here if graph.nodes[i][2] < P - 1]
        targets += last[:1] + before[-1:]
    targets.append(len(graph.nodes) - 1)
    single_targets = [graph.nodes[targets[0]], graph.nodes[-1]]  # a feature and the readout
    logits = run.logits[-1]
    under_single = {}
    for read in ("logits", "log_softmax", "demeaned"):
        g_embed, g_writes, g_gates = _gradients(model, run, transcoders, single_targets, single, read=read)
        value = (logits.log_softmax(-1) if read == "log_softmax" else logits) @ (
            single - single.mean() if read == "demeaned" else single
        )
        under_single[read] = {
            "gradients": (g_embed, g_writes, g_gates),
            "row": _rows(run, transcoders, g_embed[-1:], g_writes[-1:])[0],
            "input": value,
            "heads": g_gates[-1],
        }
    return {
        "run": run,
        "readout": readout,
        "graph": graph,
        "targets": targets,
        "single": single,
        "single_targets": single_targets,
        "under_single": under_single,
    }


_GRADIENTS = ("g_embed", "g_writes", "g_gates")
_GRADIENT_DIMS = ("[target, pos, d_model]", "[target, layer, pos, d_model]", "[target, layer, head]")

_READ_THROUGH = {
    "log_softmax": "the readout is read through log_softmax (a log-probability); read it from the logits "
    "themselves: final[-1] @ (model.W_U @ readout). With a difference of two logits the two give the same "
    "gradients, with one logit they do not.",
    "demeaned": "the readout is de-meaned inside the function (each logit minus the mean logit); use the direction "
    "as it is given: final[-1] @ (model.W_U @ readout). A readout that should be de-meaned arrives de-meaned "
    "(section 4 builds one).",
}


def _expect_gradients(got, ref, name: str, targets: list, hints, on: str = "") -> None:
    """Compare the three gradients with the reference's: a named mistake if one matches, else which tensor differs,
    where (in that tensor's own dimensions, with the target named) and in how many entries."""
    T = ref[0].shape[0]

    def flat(parts):
        return torch.cat([p.reshape(T, -1) for p in parts], 1)

    def differ(a, b) -> torch.Tensor:
        a, b = a.detach().float(), b.detach().float()
        return (a - b).abs() > 1e-4 + 1e-3 * b.abs()

    if not differ(flat(got), flat(ref)).any():
        return
    for wrong, message in hints:
        if not differ(flat(got), flat(wrong)).any():
            raise CheckFailed(f"`{name}`: {message}")
    wrong = [k for k in range(3) if differ(got[k], ref[k]).any()]
    right = [f"`{_GRADIENTS[k]}`" for k in range(3) if k not in wrong]
    k = wrong[0]
    if k == 2 and not got[2].any() and ref[2].any():
        raise CheckFailed(
            f"`{name}` returns `g_gates` all zeros{on}: nothing depends on the gates; pass them to the model, "
            "A.linear_forward(model, run, embed, writes, gates), and take the gradient with respect to them."
        )
    mask = differ(got[k], ref[k])
    err = (got[k].detach().float() - ref[k].float()).abs() * mask
    if k < 2:  # point past the start token's gradients (huge, and unused by the graph) when other positions differ
        past = err.clone()
        past.select(k + 1, 0).zero_()
        err = past if past.any() else err
    idx = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
    also = f" {' and '.join(right)} {'is' if len(right) == 1 else 'are'} right." if right else ""
    raise CheckFailed(
        f"`{name}` gives the wrong `{_GRADIENTS[k]}` {_GRADIENT_DIMS[k]}{on}: at index {list(idx)} (target "
        f"{idx[0]} is {tuple(targets[idx[0]])}) you have {got[k][idx].item():.4g}, expected {ref[k][idx].item():.4g} "
        f"({int(mask.sum()):,} of {mask.numel():,} entries differ).{also}"
    )


def check_input_gradients(fn: Callable, model, transcoders: list[Transcoder]) -> None:
    """``fn(model, run, transcoders, targets, readout)`` -> ``(g_embed [target, pos, d_model], g_writes [target,
    layer, pos, d_model], g_gates [target, layer, head])``: for each target node (a feature, or the readout), the
    gradient of its input in the replacement model with respect to the embedding, each layer's MLP write and each
    head's gate. Run with the lesson's readout (the answer's logit minus the subject's) and with one token's logit."""
    name = _name(fn, "input_gradients")
    case = _case("graph", _graph_case, model, transcoders)
    run, graph, readout = case["run"], case["graph"], case["readout"]
    L, (P, d), H = len(transcoders), run.embed.shape, model.cfg.n_heads

    def returned(targets: list, readout: torch.Tensor) -> list[torch.Tensor]:
        out = call(fn, model, copy.deepcopy(run), transcoders, list(targets), readout.clone(), name=name)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise CheckFailed(
                f"`{name}` should return three tensors (g_embed, g_writes, g_gates), not {type(out).__name__}."
            )
        T = len(targets)
        shapes = [
            ((T, P, d), ("target", "position", "d_model")),
            ((T, L, P, d), ("target", "layer", "position", "d_model")),
            ((T, L, H), ("target", "layer", "head")),
        ]
        return [expect_tensor(o, s, dims, name) for o, (s, dims) in zip(out, shapes)]

    targets = [graph.nodes[i] for i in case["targets"]]
    mistake = lambda **kw: _gradients(model, run, transcoders, targets, readout, **kw)  # noqa: E731
    _expect_gradients(
        returned(targets, readout),
        _gradients(model, run, transcoders, targets, readout),
        name,
        targets,
        hints=[
            (
                mistake(seed_with="decoder"),
                "a feature's seed is its decoder row W_dec[latent], its output direction; "
                "a feature's input is read through its encoder column W_enc[:, latent].",
            ),
            (
                mistake(readout_at="all"),
                "the readout is summed over every position; read it at the last position alone (final[-1]).",
            ),
            (mistake(readout_at="none"), "the readout's gradients are zero: seed its value with 1."),
            (
                mistake(seed_at="last"),
                "every feature is seeded at the last position; seed it at its own position "
                "in its own layer's MLP input.",
            ),
        ],
    )
    # A readout of one token's logit, as section 6 and the investigation use: it does not sum to zero over the
    # vocabulary, so reading it through log_softmax, or de-meaning it, changes its gradients.
    under = case["under_single"]
    _expect_gradients(
        returned(case["single_targets"], case["single"]),
        under["logits"]["gradients"],
        name,
        case["single_targets"],
        hints=[
            (under[read]["gradients"], f"with one token's logit as the readout, {_READ_THROUGH[read]}")
            for read in _READ_THROUGH
        ],
        on=" with one token's logit as the readout",
    )
    passed(
        name,
        f"{len(targets)} targets (features of every layer and the readout): embedding, writes and gates; "
        "and one token's logit as the readout",
        fn=fn,
    )


def _rows(
    run: A.PromptRun,
    transcoders: list[Transcoder],
    g_embed,
    g_writes,
    *,
    per_unit=False,
    through="decoder",
    error="error",
    order="layer",
) -> torch.Tensor:
    """The reference's edges into each target from every source (``edge_rows``), and the named mistakes'."""
    rows = [(g_embed * run.embed).sum(-1)[:, 1:]]
    for layer, tc in enumerate(transcoders):
        p, latent = (run.acts[layer] > 0).nonzero().unbind(1)
        direction = tc.W_dec[latent] if through == "decoder" else tc.W_enc[:, latent].T
        edge = (g_writes[:, layer, p] * direction).sum(-1)
        rows.append(edge if per_unit else edge * run.acts[layer][p, latent])
    vectors = run.errors if error == "error" else run.mlp_out
    errors = torch.stack([(g_writes[:, layer] * vectors[layer]).sum(-1)[:, 1:] for layer in range(len(transcoders))], 1)
    rows.append(errors.flatten(1) if order == "layer" else errors.transpose(1, 2).flatten(1))
    return torch.cat(rows, 1)


def check_edge_rows(fn: Callable, model, transcoders: list[Transcoder]) -> None:
    """``fn(run, transcoders, g_embed, g_writes)`` -> ``[target, source]``: each target's edge from every source, in
    the graph's order (embeddings of positions 1 on, active features layer by layer, errors layer by layer)."""
    name = _name(fn, "edge_rows")
    case = _case("graph", _graph_case, model, transcoders)
    run, graph = case["run"], case["graph"]
    targets = [graph.nodes[i] for i in case["targets"]]
    g_embed, g_writes, _ = _gradients(model, run, transcoders, targets, case["readout"])
    out = call(fn, copy.deepcopy(run), transcoders, g_embed.clone(), g_writes.clone(), name=name)
    n = len(graph.nodes)
    out = expect_tensor(out, (len(targets), n - 1), ("target", "source"), name)
    ref = graph.adjacency[case["targets"], : n - 1]
    mistake = lambda **kw: _rows(run, transcoders, g_embed, g_writes, **kw)  # noqa: E731
    expect_close(
        out,
        ref,
        name,
        what="edges",
        atol=1e-3,
        rtol=1e-3,
        hints=[
            (
                mistake(per_unit=True),
                "a feature's edge is per unit of its activation; multiply by its activation on this prompt.",
            ),
            (
                mistake(through="encoder"),
                "a feature's edge is read through its encoder column; a source acts "
                "through what it writes, its decoder row W_dec[latent].",
            ),
            (
                mistake(error="mlp_out"),
                "an error's edge uses the MLP's whole output; use the error alone "
                "(run.errors), the part the transcoder misses.",
            ),
            (
                mistake(order="position"),
                "the error nodes are ordered position by position; order them layer by "
                "layer, each layer's positions 1 on.",
            ),
        ],
    )
    passed(name, f"{len(targets)} targets' edges from {n - 1} sources", fn=fn)


def check_attribution_graph(fn: Callable, model, transcoders: list[Transcoder]) -> None:
    """``fn(model, transcoders, run, readout)`` -> an ``A.Graph``: nodes, adjacency, values, inputs, readout and
    the part of each target's input through each head."""
    name = _name(fn, "attribution_graph")
    case = _case("graph", _graph_case, model, transcoders)
    run, ref = case["run"], case["graph"]
    out = call(fn, model, transcoders, copy.deepcopy(run), case["readout"].clone(), name=name)
    if not isinstance(out, A.Graph):
        raise CheckFailed(f"`{name}` should return an A.Graph, not {type(out).__name__}.")
    if list(out.nodes) != ref.nodes:
        first = next((i for i, (a, b) in enumerate(zip(out.nodes, ref.nodes)) if tuple(a) != b), None)
        where = (
            f"node {first} is {tuple(out.nodes[first])}, expected {ref.nodes[first]}"
            if first is not None
            else f"{len(out.nodes)} nodes, expected {len(ref.nodes)}"
        )
        raise CheckFailed(
            f"`{name}` gives the wrong nodes: {where}. Embeddings from position 1, then active "
            "features layer by layer, errors layer by layer, the readout last."
        )
    n, (L, H) = len(ref.nodes), ref.through_heads.shape[1:]
    features = ref.index("feature")
    adjacency = expect_tensor(out.adjacency, (n, n), ("target", "source"), name)
    if torch.allclose(adjacency.T, ref.adjacency, atol=1e-3, rtol=1e-3):
        raise CheckFailed(
            f"`{name}`: the adjacency is transposed (sources in rows); a target's edges fill its row: "
            "adjacency[target, source]."
        )
    empty = [i for i in range(n) if ref.adjacency[i].any() and not adjacency[i].any()]
    if len(empty) > 1:
        raise CheckFailed(
            f"`{name}` leaves {len(empty)} targets' rows empty (nodes {', '.join(map(str, empty[:4]))}"
            f"{', ...' if len(empty) > 4 else ''}); fill every target's row: check where each batch's slice "
            "of the targets starts and ends (targets[start : start + batch])."
        )
    if not adjacency[-1].any():
        raise CheckFailed(
            f"`{name}`: the readout's row is empty; the readout is a target too (its edges are the "
            "ones the whole graph explains)."
        )
    expect_close(adjacency, ref.adjacency, name, what="adjacency", atol=1e-3, rtol=1e-3)
    values = expect_tensor(out.values, (n,), ("node",), name)
    ones = torch.ones(n)
    expect_close(
        values,
        ref.values,
        name,
        what="values",
        atol=1e-4,
        hints=[(ones, "every value is 1; a feature's value is its activation on the prompt.")],
    )
    inputs = expect_tensor(out.inputs, (n,), ("node",), name)
    no_bias = ref.inputs.clone()
    no_bias[features] -= torch.stack([transcoders[node[1]].b_enc[node[3]] for node in (ref.nodes[i] for i in features)])
    expect_close(
        inputs,
        ref.inputs,
        name,
        what="inputs",
        atol=2e-3,
        rtol=1e-3,
        hints=[
            (no_bias, "a feature's input leaves out the encoder's bias; it is its pre-activation, x @ W_enc + b_enc.")
        ],
    )
    if out.through_heads is None:
        raise CheckFailed(f"`{name}` leaves through_heads out; keep the gates' gradients (g_gates) for each target.")
    heads = expect_tensor(out.through_heads, (n, L, H), ("node", "layer", "head"), name)
    expect_close(heads, ref.through_heads, name, what="parts through each head", atol=1e-3, rtol=1e-3)
    # One token's logit as the readout, as section 6 and the investigation use: it does not sum to zero over the
    # vocabulary, so a graph that reads it through log_softmax, or de-means it, differs in the readout's row.
    under = case["under_single"]
    single = call(fn, model, transcoders, copy.deepcopy(run), case["single"].clone(), name=name)
    if not isinstance(single, A.Graph) or list(single.nodes) != ref.nodes:
        raise CheckFailed(
            f"`{name}` gives other nodes (or no A.Graph) when the readout is one token's logit; the nodes do not "
            "depend on the readout."
        )
    on = " with one token's logit as the readout"

    def against_each_reading(got: torch.Tensor, part: str, what: str) -> None:
        """The readout's ``part`` under one token's logit, each wrong reading of it named."""
        expect_close(
            got,
            under["logits"][part],
            name,
            what=f"{what}{on}",
            atol=1e-3,
            rtol=1e-3,
            hints=[(under[read][part], f"{on.strip()}, {_READ_THROUGH[read]}") for read in _READ_THROUGH],
        )

    row = expect_tensor(single.adjacency, (n, n), ("target", "source"), name)[-1, : n - 1]
    against_each_reading(row, "row", "readout's edges")
    value = expect_tensor(single.inputs, (n,), ("node",), name)[-1:]
    expect_close(
        value,
        under["logits"]["input"][None],
        name,
        what=f"readout's input{on}",
        atol=2e-3,
        rtol=1e-3,
        hints=[
            (
                under["log_softmax"]["input"][None],
                f"{on.strip()}, the readout's input is its log-probability (log_softmax); it is the "
                "logits themselves: run.logits[-1] @ readout.",
            ),
            (
                under["demeaned"]["input"][None],
                f"{on.strip()}, the readout's input is de-meaned (minus the mean logit); use the direction as "
                "it is given: run.logits[-1] @ readout.",
            ),
        ],
    )
    if single.through_heads is None:
        raise CheckFailed(f"`{name}` leaves through_heads out{on}; keep the gates' gradients for each target.")
    single_heads = expect_tensor(single.through_heads, (n, L, H), ("node", "layer", "head"), name)[-1]
    against_each_reading(single_heads, "heads", "readout's parts through each head")
    passed(
        name,
        f"{n} nodes, {int((adjacency != 0).sum())} edges, as the course's graph; and with one token's logit as the "
        "readout",
        fn=fn,
    )


# --- pruning --------------------------------------------------------------------------------------------------


def _pruned(
    graph: A.Graph,
    node_share=0.8,
    edge_share=0.98,
    *,
    features_only=False,
    passes=None,
    readout_ranked=False,
    plain_edges=False,
    full_edges=False,
    embeds_ranked=False,
    crossing_excluded=False,
    row_edges=False,
):
    """The reference rule (``A.prune``) written out, and with the keywords the named mistakes'."""
    n = len(graph.nodes)
    kind = [node[0] for node in graph.nodes]
    is_ = {k: torch.tensor([x == k for x in kind]) for k in ("embed", "feature", "error", "readout")}
    scores = A.influence(graph)
    if not readout_ranked:
        scores[-1] = 0.0
    if features_only:
        keep = A._top_share(scores * is_["feature"], node_share) & is_["feature"] | ~is_["feature"]
    elif crossing_excluded:
        keep = scores > scores.sort(descending=True).values[int(A._top_share(scores, node_share).sum()) - 1]
    else:
        keep = A._top_share(scores, node_share)
    if not embeds_ranked:
        keep |= is_["embed"]
    keep |= is_["readout"]
    a = graph.adjacency if full_edges else graph.adjacency * (keep[:, None] & keep[None, :])
    norm = a.abs() / a.abs().sum(1, keepdim=True).clamp_min(1e-12)
    sub = A.Graph(graph.nodes, a, graph.values, graph.inputs, graph.readout)
    weight = torch.ones(n) if plain_edges else A.influence(sub)
    score = norm * weight[:, None]
    if row_edges:
        edges = torch.stack([A._top_share(row, edge_share) if row.sum() > 0 else row > 0 for row in score]) & (a != 0)
    else:
        edges = A._top_share(score, edge_share) & (a != 0)
    done = 0
    while passes is None or done < passes:
        edges &= keep[:, None] & keep[None, :]
        out_edge, in_edge = edges.any(0), edges.any(1)
        now = keep & ~(is_["feature"] & ~(out_edge & in_edge)) & ~(is_["error"] & ~out_edge)
        done += 1
        if torch.equal(now, keep):
            break
        keep = now
    edges &= keep[:, None] & keep[None, :]
    pruned = A.subgraph(graph, keep.nonzero().flatten())
    pruned.adjacency = pruned.adjacency * edges[keep][:, keep]
    return pruned


def _prune_graph() -> A.Graph:
    """A random graph on which the reference rule and each named mistake keep different nodes or edges: embeddings,
    features and errors at a few positions and layers, signed weights, paths of several steps."""
    g = torch.Generator().manual_seed(LESSON_11_CHECKS + 14)
    n = 60
    kinds = ["embed"] * 6 + [["feature", "error"][int(i % 4 == 0)] for i in range(n - 7)] + ["readout"]
    a = torch.randn(n, n, generator=g).exp() * (torch.rand(n, n, generator=g) < 0.25)
    a = a.tril(-1) * torch.where(torch.rand(n, n, generator=g) < 0.5, -1.0, 1.0)
    a[torch.tensor([k in ("embed", "error") for k in kinds])] = 0
    nodes = [(k, -1 if k == "embed" else i * 4 // n, i % 6, i if k == "feature" else -1) for i, k in enumerate(kinds)]
    return A.Graph(nodes, a, torch.ones(n), torch.zeros(n), torch.zeros(3))


_PRUNE_MISTAKES = {
    "features_only": "every error node passes the node cut; rank all nodes together by influence (features, errors "
    "and embeddings), then put the embeddings and the readout back.",
    "passes": "a node left dangling by an earlier removal stays; drop dangling nodes again until nothing changes.",
    "readout_ranked": "the readout's own influence (1) is ranked with the nodes; set it to 0 before the node cut "
    "(it is kept anyway).",
    "plain_edges": "edges are scored by their normalised weight alone; multiply each by its target's influence.",
    "full_edges": "the edges are scored on the full graph; score them on the nodes the node cut kept (normalise "
    "again after it).",
    "embeds_ranked": "embeddings are cut by the node rule; keep every embedding whatever its rank.",
    "crossing_excluded": "the node whose influence crosses the share is left out; keep every node up to and "
    "including the one that reaches it.",
    "row_edges": "the edges are cut row by row (each target keeping its own share); rank every kept edge of the "
    "graph together.",
}


def _same_pruned(a: A.Graph, b: A.Graph) -> bool:
    return (
        [tuple(x) for x in a.nodes] == list(b.nodes)
        and a.adjacency.shape == b.adjacency.shape
        and bool(torch.allclose(a.adjacency, b.adjacency, atol=1e-6))
    )


def _unchanged(given: A.Graph, graph: A.Graph) -> bool:
    """Whether the graph handed to the learner's function still holds what it held before the call."""
    tensors = ("adjacency", "values", "inputs")
    return list(given.nodes) == list(graph.nodes) and all(
        isinstance(getattr(given, t), torch.Tensor)
        and getattr(given, t).shape == getattr(graph, t).shape
        and torch.equal(getattr(given, t), getattr(graph, t))
        for t in tensors
    )


# The paper's shares, and the explorer's lowest: a prune that ignores its shares, or names them otherwise than the
# explorer's keywords, fails here rather than leave the sliders dead.
_SHARES = ((0.8, 0.98), (0.5, 0.9))


def check_prune(fn: Callable, model=None, transcoders: list[Transcoder] | None = None) -> None:
    """``fn(graph, node_share=..., edge_share=...)`` -> the pruned ``A.Graph``, by the reference rule, called by
    keyword with the paper's shares and with lower ones; on a random graph built for the check and, with ``model``
    and ``transcoders``, on the check prompt's attribution graph."""
    name = _name(fn, "prune")
    graphs = [_prune_graph()]
    if model is not None:
        graphs.append(_case("graph", _graph_case, model, transcoders)["graph"])
    cases = [(graph, shares) for graph in graphs for shares in _SHARES]
    outs = []
    for graph, (node_share, edge_share) in cases:
        given = copy.deepcopy(graph)
        try:
            out = call(fn, given, node_share=node_share, edge_share=edge_share, name=name)
        except CheckFailed as e:
            if "TypeError" not in e.args[0] or "keyword" not in e.args[0]:
                raise
            why = e.args[0].removeprefix(f"`{name}` ").rstrip(".")
            raise CheckFailed(
                f"`{name}` cannot be called as prune(graph, node_share=0.8, edge_share=0.98), as the explorer "
                f"calls it: it {why}; name its parameters node_share and edge_share."
            ) from None
        if not isinstance(out, A.Graph):
            raise CheckFailed(f"`{name}` should return an A.Graph, not {type(out).__name__}.")
        if not _unchanged(given, graph):
            raise CheckFailed(f"`{name}` changed the graph it was given in place; work on a copy.")
        outs.append(out)
    for k, ((graph, shares), out) in enumerate(zip(cases, outs)):
        ref = _pruned(graph, *shares)
        if _same_pruned(out, ref):
            continue
        node_share, edge_share = shares
        ignored = {"both shares": _SHARES[0], "edge_share": (node_share, 0.98), "node_share": (0.8, edge_share)}
        for which, kept_by in ignored.items():
            if kept_by != shares and _same_pruned(out, _pruned(graph, *kept_by)):
                raise CheckFailed(
                    f"`{name}` ignores {which}: given node_share={node_share}, edge_share={edge_share}, it keeps "
                    f"what node_share={kept_by[0]}, edge_share={kept_by[1]} keep; use the shares it is given."
                )

        def made_by(key: str, j: int) -> bool:
            g, sh = cases[j]
            return _same_pruned(outs[j], _pruned(g, *sh, **{key: 1 if key == "passes" else True}))

        # two mistakes can keep the same nodes on one graph; the other cases tell them apart
        named = [key for key in _PRUNE_MISTAKES if made_by(key, k)]
        named = [key for key in named if all(made_by(key, j) for j in range(len(cases)) if j != k)] or named
        if named:
            raise CheckFailed(f"`{name}`: {_PRUNE_MISTAKES[named[0]]}")
        kept, want = {tuple(x) for x in out.nodes}, set(ref.nodes)
        what = "the random graph" if graph is graphs[0] else "the check prompt's graph"
        what += f" at node_share={node_share}, edge_share={edge_share}"
        if kept != want:
            raise CheckFailed(
                f"`{name}` keeps {len(kept)} nodes of {what}, expected {len(want)} "
                f"({len(kept - want)} extra, {len(want - kept)} missing)."
            )
        raise CheckFailed(
            f"`{name}` keeps the right nodes of {what} but not the right edges "
            f"({int((out.adjacency != 0).sum())} kept, expected {int((ref.adjacency != 0).sum())})."
        )
    counts = [[node[0] for node in _pruned(graphs[-1], *shares).nodes].count("feature") for shares in _SHARES]
    passed(
        name,
        f"on the check prompt's graph {counts[0]} features kept at the paper's shares, {counts[1]} at "
        f"node_share={_SHARES[1][0]}, edge_share={_SHARES[1][1]}",
        fn=fn,
    )
