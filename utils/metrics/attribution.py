"""Attribution graphs over transcoder features (Ameisen et al. 2025, *Circuit Tracing*): the
replacement model, the graph of direct effects between its nodes, and pruning by influence.

**The replacement model.** Run the real model on one prompt and freeze, at the values they took
there, every attention pattern, every normalisation's scale, and each MLP's *error*: its output
minus what its layer's transcoder writes. Replace each MLP by its transcoder's features plus that
error. With those frozen, the model from any feature's activation to any later feature's input,
or to the output logits, is linear, and on this prompt it gives exactly the real model's logits
(:func:`linear_forward` rebuilds them; the tests hold it to that).

**The graph.** Nodes are the prompt's embeddings (one per position: the stream entering the first
block, which is the token's embedding plus its learned position embedding in a GPT-2-style model
and the token's embedding alone in a Llama-style one, whose positions act inside attention), every
active feature (layer, position, latent), each error (layer,
position) and one readout (a direction in logit space at the last position: one token's logit,
or the difference of two; the paper's output nodes are instead the likeliest next tokens until they
hold 95% of the probability, at most ten, each its logit minus the mean logit, weighted by probability).
An edge's weight is the source's activation times the derivative of the target's input (a feature's
pre-activation, or the readout) with respect to it, through the frozen linear paths: residual stream
and attention heads' OV circuits. Those weights add up,
with the biases' constant part, to the target's input exactly (:func:`check_complete`).
Embeddings and errors are sources only; the readout is a target only.

**Pruning.** Absolute weights, each target's incoming edges scaled to sum to 1, give the share of
a node's input owed to each source; summed over paths of every length, the *influence* of every
node on the readout. :func:`prune` follows the reference implementation's rule: all nodes ranked
together by influence, kept until they hold ``node_share`` of the total (embeddings and the readout
always kept); then edges, scored by their normalised weight times their target's influence, kept
until they hold ``edge_share`` (the paper's 0.8 and 0.98); then, repeatedly, a feature left with no
edge in or none out is dropped, and an error node with none out.

**How much the transcoders explain.** The paper's two scores are built on the same normalised absolute
weights: the *replacement score* (:func:`replacement_score`, ``1 -`` :func:`error_share`), the share of
the influence reaching the sources that ends at tokens rather than errors, and the *completeness score*
(:func:`completeness_score`), the influence-weighted share of the nodes' inputs that does not come from
errors. Absolute shares hide cancellation: :func:`direct_parts` splits the readout's own input, signed, by
the kind of node that sends it, and :func:`largest_error` names the error node that sends it most.

The first position (the document-boundary token every prompt starts with) has no nodes at all (a
departure from the paper, whose graphs keep the first token's nodes). Its
stream is the same in every prompt (it sees only itself), so what it contributes is a constant, counted
with the biases (:func:`bias_part`); no transcoder was trained on it either. Keeping it as a source
would also be unstable: in a model with RMSNorm its embedding can be near zero, and the frozen norm's
derivative there is enormous.

Shapes: ``pos`` positions, ``d`` the model's width, ``d_tc`` a transcoder's latents, ``n`` nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.model_zoo.transcoders import Transcoder, decode, encode


@dataclass
class PromptRun:
    """What the real model did on one prompt, enough to build its replacement model."""

    tokens: torch.Tensor  # [pos]
    embed: torch.Tensor  # [pos, d]: the stream entering the first block
    patterns: list[torch.Tensor]  # per layer, [head, pos, pos]
    scales: dict[str, list[torch.Tensor]]  # "ln1", "ln2": per layer [pos, 1]; "final": [[pos, 1]]
    mlp_in: list[torch.Tensor]  # per layer, [pos, d]
    mlp_out: list[torch.Tensor]  # per layer, [pos, d]
    acts: list[torch.Tensor]  # per layer, [pos, d_tc], zero at the first position
    errors: list[torch.Tensor]  # per layer, [pos, d]: mlp_out - transcoder's output
    logits: torch.Tensor  # [pos, vocab]


@dataclass
class Graph:
    """An attribution graph. ``nodes[i]`` is ``(kind, layer, pos, latent)``, with kind ``"embed"`` (layer -1),
    ``"feature"``, ``"error"`` (latent -1) or ``"readout"``; ``adjacency[t, s]`` is the direct effect of node ``s``
    on node ``t``'s input; ``values[i]`` is a feature's activation (1 for the other kinds); ``inputs[i]`` the
    target's input (a feature's pre-activation, the readout's value; 0 for sources)."""

    nodes: list[tuple[str, int, int, int]]
    adjacency: torch.Tensor  # [n, n]
    values: torch.Tensor  # [n]
    inputs: torch.Tensor  # [n]
    readout: torch.Tensor  # [vocab]: the direction in logit space the readout reads
    through_heads: torch.Tensor | None = None  # [n, layer, head]: the part of each target's input that passes
    # through each attention head (value bias included; a path through two heads counts for both)

    def index(self, kind: str) -> torch.Tensor:
        """Indices of the nodes of one kind."""
        return torch.tensor([i for i, node in enumerate(self.nodes) if node[0] == kind], dtype=torch.long)


def _centred(model) -> bool:
    """Whether the model's norms subtract the mean (LayerNorm) or not (RMSNorm)."""
    return "RMS" not in type(model.blocks[0].ln1.original_component).__name__


def _norm_weights(module) -> tuple[torch.Tensor, torch.Tensor | None]:
    original = module.original_component
    bias = getattr(original, "bias", None)
    return original.weight.detach().float(), (None if bias is None else bias.detach().float())


def frozen_norm(x: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, bias, centred: bool) -> torch.Tensor:
    """A normalisation with its scale frozen: linear in ``x [pos, d]`` (``scale [pos, 1]`` as the real model had it)."""
    if centred:
        x = x - x.mean(-1, keepdim=True)
    out = x / scale * weight
    return out if bias is None else out + bias


@torch.no_grad()
def run_prompt(model, transcoders: list[Transcoder], tokens: torch.Tensor) -> PromptRun:
    """Run ``model`` on ``tokens [pos]`` and record what its replacement model needs."""
    L = len(transcoders)
    wanted = ("hook_scale", "attn.hook_pattern", "mlp.hook_in", "hook_mlp_out")
    logits, cache = model.run_with_cache(
        tokens[None], names_filter=lambda n: n == "blocks.0.hook_resid_pre" or n.endswith(wanted)
    )
    mlp_in = [cache[f"blocks.{i}.mlp.hook_in"][0].float() for i in range(L)]
    mlp_out = [cache[f"blocks.{i}.hook_mlp_out"][0].float() for i in range(L)]
    acts, errors = [], []
    for tc, x, y in zip(transcoders, mlp_in, mlp_out):
        a = encode(tc, x)
        a[0] = 0
        e = y - decode(tc, a)  # at position 0, all of the MLP's output but the bias
        acts.append(a)
        errors.append(e)
    return PromptRun(
        tokens=tokens,
        embed=cache["blocks.0.hook_resid_pre"][0].float(),
        patterns=[cache[f"blocks.{i}.attn.hook_pattern"][0].float() for i in range(L)],
        scales={
            "ln1": [cache[f"blocks.{i}.ln1.hook_scale"][0].float() for i in range(L)],
            "ln2": [cache[f"blocks.{i}.ln2.hook_scale"][0].float() for i in range(L)],
            "final": [cache["ln_final.hook_scale"][0].float()],
        },
        mlp_in=mlp_in,
        mlp_out=mlp_out,
        acts=acts,
        errors=errors,
        logits=logits[0].float(),
    )


def linear_forward(
    model, run: PromptRun, embed: torch.Tensor, writes: list[torch.Tensor], gates: torch.Tensor | None = None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The replacement model: the stream from ``embed [pos, d]``, each layer's MLP replaced by ``writes[layer]
    [pos, d]`` (features decoded plus error), with ``run``'s attention patterns and norm scales frozen. Returns
    each layer's MLP input ``[pos, d]`` and the final norm's output ``[pos, d]`` (:func:`logits_of` turns it into
    logits); linear in ``embed`` and ``writes``. ``gates [layer, head]`` (default all 1) scale each head's
    output: the derivative of anything with respect to a gate is the part of it that passes through that head."""
    centred = _centred(model)
    resid, mlp_ins = embed, []
    for layer, block in enumerate(model.blocks[: len(writes)]):
        attn = block.attn
        x = frozen_norm(resid, run.scales["ln1"][layer], *_norm_weights(block.ln1), centred)
        v = torch.einsum("pd,hde->hpe", x, attn.W_V.detach().float())
        if attn.b_V is not None:
            v = v + attn.b_V.detach().float()[:, None]
        z = torch.einsum("hqk,hke->hqe", run.patterns[layer], v)
        if gates is not None:
            z = z * gates[layer][:, None, None]
        out = torch.einsum("hqe,hed->qd", z, attn.W_O.detach().float())
        if attn.b_O is not None:
            out = out + attn.b_O.detach().float()
        resid = resid + out
        mlp_ins.append(frozen_norm(resid, run.scales["ln2"][layer], *_norm_weights(block.ln2), centred))
        resid = resid + writes[layer]
    return mlp_ins, frozen_norm(resid, run.scales["final"][0], *_norm_weights(model.ln_final), centred)


def logits_of(model, final: torch.Tensor) -> torch.Tensor:
    """Logits ``[..., vocab]`` from the final norm's output ``final [..., d]``."""
    logits = final @ model.W_U.detach().float()
    b_U = getattr(model, "b_U", None)
    return logits if b_U is None else logits + b_U.detach().float()


def readout_value(model, final: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
    """The readout at the last position, ``logits[-1] @ readout``, without the full logits."""
    value = final[-1] @ (model.W_U.detach().float() @ readout)
    b_U = getattr(model, "b_U", None)
    return value if b_U is None else value + b_U.detach().float() @ readout


def readout_direction(vocab: int, token: int, minus: int | None = None) -> torch.Tensor:
    """A readout in logit space: one token's logit, or the difference ``logit[token] - logit[minus]``."""
    direction = torch.zeros(vocab)
    direction[token] = 1.0
    if minus is not None:
        direction[minus] = -1.0
    return direction


def attribution_graph(
    model, transcoders: list[Transcoder], run: PromptRun, readout: torch.Tensor, batch: int = 256
) -> Graph:
    """The full (unpruned) attribution graph of ``run`` for the ``readout [vocab]`` at the last position (it needs
    gradients, and turns them on for itself where a notebook has turned them off)."""
    with torch.enable_grad():
        return _attribution_graph(model, transcoders, run, readout, batch)


def _attribution_graph(
    model, transcoders: list[Transcoder], run: PromptRun, readout: torch.Tensor, batch: int
) -> Graph:
    from torch.func import vjp, vmap

    L, P = len(transcoders), run.embed.shape[0]
    nodes = [("embed", -1, p, -1) for p in range(1, P)]
    feature_at = [(layer, p, latent) for layer, a in enumerate(run.acts) for p, latent in (a > 0).nonzero().tolist()]
    nodes += [("feature", layer, p, latent) for layer, p, latent in feature_at]
    nodes += [("error", layer, p, -1) for layer in range(L) for p in range(1, P)]
    nodes.append(("readout", L, P - 1, -1))
    n, first_feature = len(nodes), P - 1
    first_error = first_feature + len(feature_at)
    f_layer = torch.tensor([f[0] for f in feature_at], dtype=torch.long)
    f_pos = torch.tensor([f[1] for f in feature_at], dtype=torch.long)
    f_latent = torch.tensor([f[2] for f in feature_at], dtype=torch.long)
    f_act = torch.stack([run.acts[layer][p, latent] for layer, p, latent in feature_at] or [torch.zeros(0)])

    # The replacement model as a function of its sources; one vector-Jacobian product per target, batched.
    # A feature's input is its MLP input at its position dotted with its encoder column (plus a constant), so
    # its row of the Jacobian is the vjp with that column placed at its layer and position.
    unembed = model.W_U.detach().float() @ readout
    b_U = getattr(model, "b_U", None)
    writes = [decode(tc, a) + e for tc, a, e in zip(transcoders, run.acts, run.errors)]
    gates = torch.ones(L, run.patterns[0].shape[0])

    def forward(embed, writes, gates):
        mlp_ins, final = linear_forward(model, run, embed, writes, gates)
        return torch.stack(mlp_ins), final[-1] @ unembed

    (mlp_ins, value), pullback = vjp(forward, run.embed, writes, gates)
    pullback = vmap(pullback)
    encoders = torch.stack([transcoders[layer].W_enc[:, latent] for layer, _, latent in feature_at] or [torch.zeros(0)])
    pre = (
        (mlp_ins[f_layer, f_pos] * encoders).sum(-1)
        + torch.stack([transcoders[layer].b_enc[latent] for layer, _, latent in feature_at] or [torch.zeros(0)])
        if feature_at
        else torch.zeros(0)
    )
    readout_input = value + (0 if b_U is None else b_U.detach().float() @ readout)
    targets = torch.arange(first_feature, first_error).tolist() + [n - 1]

    adjacency = torch.zeros(n, n)
    through_heads = torch.zeros(n, *gates.shape)
    for start in range(0, len(targets), batch):
        chunk = torch.arange(start, min(start + batch, len(targets)))
        on_features = chunk[chunk < len(feature_at)]
        to_mlp_ins = torch.zeros(len(chunk), L, P, run.embed.shape[1])
        k = torch.arange(len(on_features))
        to_mlp_ins[k, f_layer[on_features], f_pos[on_features]] = encoders[on_features]
        to_value = (chunk == len(feature_at)).float()
        g_embed, g_writes, g_gates = pullback((to_mlp_ins, to_value))
        out_rows = torch.tensor(targets)[chunk]
        through_heads[out_rows] = g_gates
        adjacency[out_rows, :first_feature] = (g_embed * run.embed).sum(-1)[:, 1:]
        for layer in range(L):
            g = g_writes[layer]  # [target, pos, d]
            errors = (g * run.errors[layer]).sum(-1)[:, 1:]
            adjacency[out_rows, first_error + layer * (P - 1) : first_error + (layer + 1) * (P - 1)] = errors
            here = (f_layer == layer).nonzero().flatten()
            if len(here):
                # d(target)/d(feature's activation) = W_dec[latent] . gradient at the feature's position
                dirs = transcoders[layer].W_dec[f_latent[here]]  # [f, d]
                adjacency[out_rows[:, None], first_feature + here] = (
                    torch.einsum("rfd,fd->rf", g[:, f_pos[here]], dirs) * f_act[here]
                )
    values = torch.ones(n)
    values[first_feature:first_error] = f_act
    inputs = torch.zeros(n)
    inputs[targets] = torch.cat([pre, readout_input[None]]).detach()
    return Graph(nodes, adjacency, values, inputs, readout, through_heads)


@torch.no_grad()
def bias_part(model, transcoders: list[Transcoder], run: PromptRun, graph: Graph) -> torch.Tensor:
    """Each target's input with every source set to zero (embeddings, features, errors): the constant the biases
    and the first position add. ``graph.adjacency[t].sum() + bias_part[t] == graph.inputs[t]`` for every target
    ``t`` (linearity)."""
    P = run.embed.shape[0]
    # a write with no feature active and no error, but the first position's as it was
    writes = [
        torch.cat([decode(tc, a[:1]) + e[:1], tc.b_dec.expand(P - 1, -1)])
        for tc, a, e in zip(transcoders, run.acts, run.errors)
    ]
    embed = torch.cat([run.embed[:1], torch.zeros_like(run.embed[1:])])
    mlp_ins, final = linear_forward(model, run, embed, writes)
    out = torch.zeros(len(graph.nodes))
    for i, (kind, layer, p, latent) in enumerate(graph.nodes):
        if kind == "feature":
            out[i] = mlp_ins[layer][p] @ transcoders[layer].W_enc[:, latent] + transcoders[layer].b_enc[latent]
        elif kind == "readout":
            out[i] = readout_value(model, final, graph.readout)
    return out


def influence(graph: Graph) -> torch.Tensor:
    """Each node's influence on the readout ``[n]``: its share of the readout's input through paths of every
    length, on absolute weights with each node's incoming edges scaled to sum to 1 (the readout's own is 1)."""
    a = graph.adjacency.abs()
    a = a / a.sum(1, keepdim=True).clamp_min(1e-12)
    n = a.shape[0]
    readout = torch.zeros(n)
    readout[-1] = 1.0  # the readout is the last node: its row of I + A + A^2 + ... = (I - A)^-1 (no cycles)
    return torch.linalg.solve((torch.eye(n) - a).T, readout)


def error_share(graph: Graph) -> float:
    """The share of the readout's influence that ends at error nodes rather than at token embeddings: how much of
    the explanation the transcoders leave unexplained (0 if none). It is ``1 -`` :func:`replacement_score`, the
    paper's replacement score. Being built on absolute, normalised weights, it can be small while a single error
    node's signed direct edge carries most of the readout (:func:`direct_parts`, :func:`largest_error`)."""
    inf = influence(graph)
    errors, embeds = inf[graph.index("error")].sum(), inf[graph.index("embed")].sum()
    return (errors / (errors + embeds)).item()


def replacement_score(graph: Graph) -> float:
    """Ameisen et al.'s *replacement score*: of the influence that ends at the graph's sources, the share that
    ends at token embeddings rather than at error nodes (1: the paths from the tokens to the readout run through
    features alone). Equal to ``1 -`` :func:`error_share`; as ``circuit-tracer``'s ``compute_graph_scores``
    defines it, on absolute weights normalised by rows (:func:`influence`)."""
    inf = influence(graph)
    errors, embeds = inf[graph.index("error")].sum(), inf[graph.index("embed")].sum()
    return (embeds / (errors + embeds)).item()


def completeness_score(graph: Graph) -> float:
    """Ameisen et al.'s *completeness score*: every node's share of its own input that does not come straight from
    an error node (1 for sources), averaged over the nodes weighted by their influence on the readout (the
    readout's own weight 1 included). 1 when no error node has an edge; as ``circuit-tracer``'s
    ``compute_graph_scores`` defines it, on absolute weights normalised by rows."""
    a = graph.adjacency.abs()
    a = a / a.sum(1, keepdim=True).clamp_min(1e-12)
    from_errors = a[:, graph.index("error")].sum(1)  # [n]: the share of each node's input from error nodes
    inf = influence(graph)  # the readout's own 1 is its weight as an output
    return ((1 - from_errors) * inf).sum().item() / inf.sum().item()


def direct_parts(model, transcoders: list[Transcoder], run: PromptRun, graph: Graph) -> dict[str, float]:
    """The readout's input split by what sends it: the signed direct edges into the readout summed by node kind
    (``"feature"``, ``"error"``, ``"embed"``), and ``"constant"``, what the biases and the first position add
    (:func:`bias_part`). The four add up to ``graph.inputs[-1]``; unlike influence, signed parts can cancel, so
    one kind can carry more than the whole readout while another pulls against it."""
    direct = graph.adjacency[-1]
    parts = {kind: direct[graph.index(kind)].sum().item() for kind in ("feature", "error", "embed")}
    parts["constant"] = bias_part(model, transcoders, run, graph)[-1].item()
    return parts


def largest_error(graph: Graph) -> tuple[tuple[str, int, int, int], float]:
    """The error node with the largest direct edge into the readout (by size), and that edge's signed weight."""
    errors = graph.index("error")
    if len(errors) == 0:
        raise ValueError("this graph has no error nodes (a pruned graph can lose them all): there is none to name")
    edges = graph.adjacency[-1, errors]
    i = int(edges.abs().argmax())
    return graph.nodes[int(errors[i])], edges[i].item()


def _top_share(scores: torch.Tensor, share: float) -> torch.Tensor:
    """Which of ``scores`` (non-negative, any shape) are kept when they are taken largest first until they hold
    ``share`` of their total: every score at least the one that crosses it (ties kept together)."""
    flat = scores.flatten()
    ranked = flat.sort(descending=True).values
    cumulative = ranked.cumsum(0) / ranked.sum().clamp_min(1e-12)
    k = min(int(torch.searchsorted(cumulative, torch.tensor(share))), len(ranked) - 1)
    return scores >= ranked[k]


def prune(graph: Graph, node_share: float = 0.8, edge_share: float = 0.98) -> Graph:
    """The pruned graph, by the rule of Ameisen et al.'s reference implementation (``circuit-tracer``'s
    ``prune_graph``). Nodes: every node (feature, error, embedding) ranked together by its influence on the readout
    through paths of one step or more, kept until they hold ``node_share`` of the total; embeddings and the readout
    are kept whatever their rank. Edges: among the kept nodes, each edge scored by its normalised absolute weight
    times its target's influence (the readout's counted as 1), kept until they hold ``edge_share`` of the total.
    Then, repeated until nothing changes, a feature with no kept edge in or none out is dropped, and so is an error
    node with none out (with their edges)."""
    n = len(graph.nodes)
    embeds, features, errors = graph.index("embed"), graph.index("feature"), graph.index("error")
    scores = influence(graph)
    scores[-1] = 0.0  # the readout's own 1 is no path: it is kept anyway
    keep = _top_share(scores, node_share)
    keep[embeds] = True
    keep[-1] = True
    a = graph.adjacency * (keep[:, None] & keep[None, :])
    norm = a.abs() / a.abs().sum(1, keepdim=True).clamp_min(1e-12)
    to_readout = torch.zeros(n)
    to_readout[-1] = 1.0
    target_influence = torch.linalg.solve((torch.eye(n) - norm).T, to_readout)  # the readout's own 1 included
    edges = _top_share(norm * target_influence[:, None], edge_share) & (a != 0)
    while True:
        edges &= keep[:, None] & keep[None, :]
        out_edge, in_edge = edges.any(0), edges.any(1)
        now = keep.clone()
        now[features] &= out_edge[features] & in_edge[features]
        now[errors] &= out_edge[errors]
        if torch.equal(now, keep):
            break
        keep = now
    sub = subgraph(graph, keep.nonzero().flatten())
    sub.adjacency = torch.where(edges[keep][:, keep], sub.adjacency, torch.zeros_like(sub.adjacency))
    return sub


def subgraph(graph: Graph, idx: torch.Tensor) -> Graph:
    """The graph on nodes ``idx`` (in their order) and the edges between them."""
    heads = None if graph.through_heads is None else graph.through_heads[idx]
    return Graph(
        [graph.nodes[i] for i in idx],
        graph.adjacency[idx][:, idx].clone(),
        graph.values[idx],
        graph.inputs[idx],
        graph.readout,
        heads,
    )


def edge_scores(graph: Graph) -> torch.Tensor:
    """Each edge's pruning score ``[target, source]``: its normalised absolute weight times its target's influence
    (the readout's counted as 1), the score :func:`prune` keeps edges by."""
    a = graph.adjacency.abs()
    inf = influence(graph)
    inf[-1] = 1.0
    return a / a.sum(1, keepdim=True).clamp_min(1e-12) * inf[:, None]


def strongest_path(graph: Graph) -> list[tuple[int, int]]:
    """The route from an embedding to the readout whose edges' shares (normalised absolute weights, as influence
    uses them) have the largest product, as ``(source, target)`` pairs in order; empty if no embedding reaches the
    readout."""
    a = graph.adjacency.abs()
    share = a / a.sum(1, keepdim=True).clamp_min(1e-12)  # [target, source]
    n = len(graph.nodes)
    best = torch.zeros(n)  # the best product of shares from each node to the readout
    best[-1] = 1.0
    for _ in range(n):
        new = torch.maximum(best, (share * best[:, None]).max(0).values)
        new[-1] = 1.0
        if torch.equal(new, best):
            break
        best = new
    embeds = graph.index("embed")
    if len(embeds) == 0 or best[embeds].max() == 0:
        return []
    node, path = int(embeds[best[embeds].argmax()]), []
    while node != n - 1:
        target = int((share[:, node] * best).argmax())
        path.append((node, target))
        node = target
    return path


def drawable(graph: Graph, tokens: list[str], top_edges: int = 40, names: dict | None = None, shown: int = 8) -> dict:
    """The arguments :func:`utils.pictures.plotting.graph_picture` needs to draw ``graph``: each node at its
    position and layer (embeddings in row 0, layer ``l`` in row ``l + 1``, the readout on top), sized by its
    influence; the ``top_edges`` edges with the largest pruning scores (:func:`edge_scores`), the edges of
    :func:`strongest_path` among them and drawn over the rest; and, written beside the ``shown`` most influential
    nodes other than embeddings (and every node on that path), a short label: ``names[node]`` where given (e.g. what
    a feature fires on), else the node's layer and latent."""
    inf = influence(graph)
    inf[-1] = 1.0
    layers = max(node[1] for node in graph.nodes)  # the readout's layer is the number of layers
    names = names or {}
    xs, ys, labels, kinds, short = [], [], [], [], []
    for kind, layer, p, latent in graph.nodes:
        xs.append(p)
        ys.append(0 if kind == "embed" else layers + 1 if kind == "readout" else layer + 1)
        kinds.append(kind)
        where = f"{tokens[p]!r} (position {p})"
        name = names.get((kind, layer, p, latent))
        labels.append(
            {"embed": f"embedding of {where}", "readout": f"readout at {where}"}.get(
                kind,
                f"L{layer} latent {latent} at {where}" + (f": {name}" if name else "")
                if kind == "feature"
                else f"L{layer} error at {where}",
            )
        )
        short.append(
            name
            or {"embed": tokens[p].strip(), "readout": "readout"}.get(
                kind, f"L{layer}#{latent}" if kind == "feature" else f"L{layer} err"
            )
        )
    sizes = (inf / inf.max().clamp_min(1e-12)).tolist()
    path = strongest_path(graph)
    scores = edge_scores(graph)
    nonzero = (scores > 0).nonzero().tolist()
    nonzero.sort(key=lambda ts: -scores[ts[0], ts[1]].item())
    chosen = [(t, s) for t, s in nonzero[:top_edges]]
    chosen += [(t, s) for s, t in path if (t, s) not in chosen]
    edges = [(s, t, graph.adjacency[t, s].item()) for t, s in chosen]
    on_path = {i for edge in path for i in edge}
    ranked = torch.where(torch.tensor([k == "embed" for k in kinds]), -1.0, inf)  # text goes to features first
    top = set(ranked.argsort(descending=True)[:shown].tolist()) | on_path
    text = [short[i] if i in top and kinds[i] != "embed" else "" for i in range(len(kinds))]
    names_row = ["embeddings", *[f"layer {i}" for i in range(layers)], "readout"]
    return dict(
        xs=xs,
        ys=ys,
        labels=labels,
        kinds=kinds,
        sizes=sizes,
        edges=edges,
        tokens=tokens,
        layer_names=names_row,
        shown=text,
        path=path,
    )


def _readout_sensitivity(graph: Graph) -> torch.Tensor:
    """``d readout / d input`` of every node ``[n]`` through every path, each active feature taken as linear: the
    last column of ``(I - per_unit)^-1``, solved for that column alone."""
    n, features = len(graph.nodes), graph.index("feature")
    per_unit = torch.zeros(n, n)  # d(target input) / d(source activation)
    per_unit[:, features] = graph.adjacency[:, features] / graph.values[features]
    readout = torch.zeros(n)
    readout[-1] = 1.0
    return torch.linalg.solve(torch.eye(n) - per_unit.T, readout)


def total_effects(graph: Graph) -> torch.Tensor:
    """Each node's effect on the readout through every path of the graph ``[n]``, with every active feature taken
    as linear (as if it passed changes in its input straight on): the graph's prediction of what removing the node
    would take from the readout. Direct edges alone are ``graph.adjacency[-1]``."""
    features = graph.index("feature")
    through = _readout_sensitivity(graph)
    effects = graph.adjacency[-1].clone()  # sources (embeddings, errors) act only through their direct edges...
    effects[features] = through[features] * graph.values[features]  # ...features through every path
    sources = torch.cat([graph.index("embed"), graph.index("error")])
    effects[sources] = (through[:, None] * graph.adjacency[:, sources]).sum(0)
    return effects


@torch.no_grad()
def intervene(model, run: PromptRun, transcoders: list[Transcoder], node: tuple, scale: float) -> torch.Tensor:
    """The real model's logits ``[pos, vocab]`` with feature ``node`` = ``("feature", layer, pos, latent)`` set to
    ``scale`` times its activation on ``run``'s prompt (0 turns it off): its decoder row's contribution to that
    layer's MLP output at that position changes accordingly, and everything after runs as the real model does."""
    _, layer, p, latent = node
    change = (scale - 1) * run.acts[layer][p, latent] * transcoders[layer].W_dec[latent]

    def shift(y, hook):
        y = y.clone()
        y[:, p] += change.to(y.dtype)
        return y

    with model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_mlp_out", shift)]):
        return model(run.tokens[None])[0].float()


def measured_effects(
    model, run: PromptRun, transcoders: list[Transcoder], nodes: list, readout: torch.Tensor
) -> torch.Tensor:
    """For each feature node in ``nodes``, how much the real model's readout at the last position moves when that
    feature is turned off (off minus as it was) ``[len(nodes)]``: what the graph's ``-total_effects`` predicts."""
    base = run.logits[-1] @ readout
    return torch.stack([intervene(model, run, transcoders, node, 0.0)[-1] @ readout - base for node in nodes])


def head_effects(graph: Graph) -> torch.Tensor:
    """Each attention head's effect on the readout ``[layer, head]`` through every path of the graph, with every
    active feature taken as linear (as :func:`total_effects` takes them): the part of each target's input that passes
    through the head, times that target's effect on the readout, summed over targets. It is the graph's prediction
    of what closing the head (its output times 0) would take from the readout."""
    return torch.einsum("t,tlh->lh", _readout_sensitivity(graph), graph.through_heads)


def frozen_hooks(model, run: PromptRun, attention: bool = True, norms: bool = True) -> list[tuple[str, object]]:
    """Hooks that hold the real model's attention patterns and norm scales at the values they took on ``run``'s
    prompt, as the replacement model holds them: an intervention run under them differs from the graph's
    prediction only by what the MLPs (and the transcoders' choice of features) do. With ``model.hooks(...)``;
    the course warns when a hook edits a norm's scale, so wrap the run in
    ``warnings.catch_warnings()`` with that warning ignored, as :func:`intervene_frozen` does."""
    hooks = []
    for layer in range(len(run.patterns)):
        if attention:
            hooks.append((f"blocks.{layer}.attn.hook_pattern", _setter(run.patterns[layer])))
        if norms:
            hooks.append((f"blocks.{layer}.ln1.hook_scale", _setter(run.scales["ln1"][layer])))
            hooks.append((f"blocks.{layer}.ln2.hook_scale", _setter(run.scales["ln2"][layer])))
    if norms:
        hooks.append(("ln_final.hook_scale", _setter(run.scales["final"][0])))
    return hooks


def _setter(value: torch.Tensor):
    def hook(x, hook):
        return value[None].to(x.dtype).to(x.device).expand_as(x)

    return hook


def intervene_frozen(
    model, run: PromptRun, transcoders: list[Transcoder], node: tuple, scale: float, attention=True, norms=True
) -> torch.Tensor:
    """:func:`intervene` with the real model's attention patterns and/or norm scales held at ``run``'s values."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A forward hook edited hook_scale", category=UserWarning)
        with model.hooks(fwd_hooks=frozen_hooks(model, run, attention, norms)):
            return intervene(model, run, transcoders, node, scale)


@torch.no_grad()
def replacement_forward(
    model,
    run: PromptRun,
    transcoders: list[Transcoder],
    gates: torch.Tensor | None = None,
    node: tuple | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """The local replacement model run *as a model* rather than read as a graph: attention patterns and norm scales
    frozen, each MLP its transcoder with the feature set chosen afresh from its input (ReLU and TopK) plus the
    prompt's error, held fixed. Heads scaled by ``gates [layer, head]`` and/or feature ``node`` scaled by ``scale``;
    returns the final norm's output ``[pos, d]`` (:func:`readout_value` reads it). With nothing changed it gives the
    real model's logits; what it does under a change is what the graph's linear account should predict, but for
    features switching on or off."""
    writes = [decode(tc, a) + e for tc, a, e in zip(transcoders, run.acts, run.errors)]
    for layer, tc in enumerate(transcoders):
        mlp_ins, _ = linear_forward(model, run, run.embed, writes[: layer + 1], gates)
        acts = encode(tc, mlp_ins[layer])
        acts[0] = 0  # the first position keeps the prompt's own output
        if node is not None and node[1] == layer:
            acts[node[2], node[3]] *= scale
        writes[layer] = decode(tc, acts) + run.errors[layer]
    return linear_forward(model, run, run.embed, writes, gates)[1]
