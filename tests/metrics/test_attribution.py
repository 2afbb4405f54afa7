"""The replacement model and its attribution graph: exact on the prompt it was built for, edges that are
direct effects, influence and pruning on graphs whose answers are known by hand.

The transcoders here are random (any weights will do: the replacement model is exact whatever the
transcoders miss, because their errors are part of it), on two zoo models with different norms."""

import pytest
import torch

from utils.corpora.tokenizer import encode_doc, load_tokenizer
from utils.metrics import attribution as A
from utils.model_zoo.models import load_model
from utils.model_zoo.transcoders import Transcoder, decode, encode


def random_transcoders(model, d_tc: int = 64, k: int = 4, seed: int = 0) -> list[Transcoder]:
    g = torch.Generator().manual_seed(seed)
    d = model.cfg.d_model
    return [
        Transcoder(
            layer,
            k,
            torch.randn(d, d_tc, generator=g) / d**0.5,
            torch.randn(d_tc, generator=g) * 0.1,
            torch.randn(d_tc, d, generator=g) / d_tc**0.5,
            torch.randn(d, generator=g) * 0.1,
        )
        for layer in range(model.cfg.n_layers)
    ]


@pytest.fixture(scope="module", params=["storyworld-4l", "storyworld-llama"])
def built(request):
    model = load_model(request.param)
    tcs = random_transcoders(model)
    tokens = torch.tensor(encode_doc("Mia and Leo went to the park. Leo gave a ball to", load_tokenizer())[:-1])
    run = A.run_prompt(model, tcs, tokens)
    readout = A.readout_direction(run.logits.shape[-1], int(tokens[1]), int(tokens[3]))
    graph = A.attribution_graph(model, tcs, run, readout)
    return model, tcs, run, graph


def writes_of(tcs, run, acts=None):
    acts = run.acts if acts is None else acts
    return [decode(tc, a) + e for tc, a, e in zip(tcs, acts, run.errors)]


def test_topk_encoding_keeps_k_positive_latents_per_row():
    tc = random_transcoders(load_model("storyworld-4l"))[0]
    acts = encode(tc, torch.randn(10, tc.W_enc.shape[0]) * 5)
    assert ((acts > 0).sum(-1) <= tc.k).all() and (acts >= 0).all()
    assert ((acts > 0).sum(-1) == tc.k).any()


def test_the_replacement_model_gives_the_real_logits_on_its_prompt(built):
    model, tcs, run, _ = built
    mlp_ins, final = A.linear_forward(model, run, run.embed, writes_of(tcs, run))
    assert torch.allclose(A.logits_of(model, final), run.logits, atol=1e-3)
    for rebuilt, real in zip(mlp_ins, run.mlp_in):
        assert torch.allclose(rebuilt, real, atol=1e-3)


def test_the_first_position_has_no_nodes_its_stream_is_a_constant(built):
    _, _, run, graph = built
    assert all(a[0].count_nonzero() == 0 for a in run.acts)
    assert all(node[2] > 0 for node in graph.nodes), "no embedding, feature or error node at the first position"


def test_every_targets_edges_and_bias_add_up_to_its_input(built):
    model, tcs, run, graph = built
    targets = torch.cat([graph.index("feature"), torch.tensor([len(graph.nodes) - 1])])
    bias = A.bias_part(model, tcs, run, graph)[targets]
    total = graph.adjacency[targets].sum(1) + bias
    # parts can be large and cancel (random transcoders miss a lot): float32 rounding scales with their size
    size = graph.adjacency[targets].abs().sum(1) + bias.abs()
    assert ((total - graph.inputs[targets]).abs() <= 1e-3 + 1e-5 * size).all()


def test_a_feature_reads_its_own_preactivation(built):
    _, tcs, run, graph = built
    for i in graph.index("feature")[:20].tolist():
        _, layer, p, latent = graph.nodes[i]
        pre = run.mlp_in[layer][p] @ tcs[layer].W_enc[:, latent] + tcs[layer].b_enc[latent]
        assert graph.inputs[i] == pytest.approx(pre.item(), abs=1e-3)
        assert graph.values[i] == pytest.approx(pre.item(), abs=1e-3)  # active, so the ReLU passes it


def test_an_edge_is_what_removing_its_source_takes_from_the_target(built):
    model, tcs, run, graph = built
    features = graph.index("feature")
    later = [i for i in features.tolist() if graph.nodes[i][1] == max(n[1] for n in graph.nodes if n[0] == "feature")]
    source = next(i for i in features.tolist() if graph.nodes[i][1] == 0)
    _, layer, p, latent = graph.nodes[source]
    acts = [a.clone() for a in run.acts]
    acts[layer][p, latent] = 0
    _, final = A.linear_forward(model, run, run.embed, writes_of(tcs, run, acts))
    readout_drop = graph.inputs[-1] - A.readout_value(model, final, graph.readout)
    assert readout_drop.item() == pytest.approx(graph.adjacency[-1, source].item(), abs=1e-3)
    mlp_ins, _ = A.linear_forward(model, run, run.embed, writes_of(tcs, run, acts))
    for t in later[:10]:
        _, lt, pt, lat = graph.nodes[t]
        new = mlp_ins[lt][pt] @ tcs[lt].W_enc[:, lat] + tcs[lt].b_enc[lat]
        assert (graph.inputs[t] - new).item() == pytest.approx(graph.adjacency[t, source].item(), abs=1e-3)


def test_no_edge_runs_backwards_in_layers_or_positions(built):
    _, _, _, graph = built
    nodes = graph.nodes
    for t, s in (graph.adjacency != 0).nonzero().tolist():
        assert nodes[s][2] <= nodes[t][2], "information moved to an earlier position"
        if nodes[t][0] == "feature" and nodes[s][0] in ("feature", "error"):
            assert nodes[s][1] < nodes[t][1], "a feature read a write of its own layer or a later one"


def hand_graph(weights: dict[tuple[int, int], float], kinds: list[str]) -> A.Graph:
    n = len(kinds)
    adjacency = torch.zeros(n, n)
    for (t, s), w in weights.items():
        adjacency[t, s] = w
    nodes = [(kind, 0, i, -1) for i, kind in enumerate(kinds)]
    return A.Graph(nodes, adjacency, torch.ones(n), torch.zeros(n), torch.zeros(3))


def test_influence_multiplies_shares_along_a_path_and_adds_over_paths():
    # embed 0 -> feature 2 -> readout 4; embed 1 -> readout directly; error 3 -> feature 2
    kinds = ["embed", "embed", "feature", "error", "readout"]
    g = hand_graph({(2, 0): 3.0, (2, 3): -1.0, (4, 2): 2.0, (4, 1): 2.0}, kinds)
    inf = A.influence(g)
    assert inf[2].item() == pytest.approx(0.5)
    assert inf[1].item() == pytest.approx(0.5)
    assert inf[0].item() == pytest.approx(0.5 * 0.75)
    assert inf[3].item() == pytest.approx(0.5 * 0.25)
    assert A.error_share(g) == pytest.approx(0.125)


def test_pruning_drops_the_feature_with_least_influence_and_keeps_the_readout():
    weights = {(3, 0): 1.0, (4, 0): 1.0, (5, 3): 9.0, (5, 4): 1.0}
    g = hand_graph(weights, ["embed", "error", "embed", "feature", "feature", "readout"])
    pruned = A.prune(g, node_share=0.8)
    kinds = [node[0] for node in pruned.nodes]
    assert kinds.count("feature") == 1 and pruned.nodes[kinds.index("feature")][2] == 3
    assert kinds[-1] == "readout"
    assert ("error", 0, 1, -1) not in pruned.nodes, "a source with no kept edge is dropped"


def test_the_part_through_a_head_is_what_closing_that_head_takes_from_the_readout(built):
    model, tcs, run, graph = built
    heads = graph.through_heads[-1]
    for layer, head in [(0, 0), (1, heads.shape[1] - 1), (heads.shape[0] - 1, 1)]:
        gates = torch.ones_like(heads)
        gates[layer, head] = 0
        _, final = A.linear_forward(model, run, run.embed, writes_of(tcs, run), gates)
        closed = A.readout_value(model, final, graph.readout)
        assert (graph.inputs[-1] - closed).item() == pytest.approx(heads[layer, head].item(), abs=1e-3)


def test_a_pruned_graph_draws_with_every_node_and_its_strongest_edges(built):
    from utils.pictures.plotting import graph_picture

    model, _, run, graph = built
    pruned = A.prune(graph)
    tokens = [model.tokenizer.decode([t]) for t in run.tokens.tolist()]
    args = A.drawable(pruned, tokens, top_edges=25)
    assert len(args["xs"]) == len(pruned.nodes) and len(args["edges"]) >= min(25, int((pruned.adjacency != 0).sum()))
    path = args["path"]
    assert pruned.nodes[path[0][0]][0] == "embed" and path[-1][1] == len(pruned.nodes) - 1, (
        "a route from a token to the readout"
    )
    assert all(a[1] == b[0] for a, b in zip(path, path[1:]))
    assert args["ys"][-1] == model.cfg.n_layers + 1 and max(args["sizes"]) == pytest.approx(1.0)
    picture = graph_picture(**args, title="attribution graph")
    assert picture.fallback_png and picture.fig.layout.xaxis.ticktext == tuple(tokens)


def test_total_effects_follow_every_path_through_features_taken_as_linear():
    # embed 0 -> feature 1 (input 2, so activation 2) -> readout 2; embed 0 also straight to the readout
    g = hand_graph({(1, 0): 2.0, (2, 1): 3.0, (2, 0): 0.5}, ["embed", "feature", "readout"])
    g.values[1] = 2.0
    effects = A.total_effects(g)
    assert effects[1].item() == pytest.approx(3.0)  # its direct edge: nothing else lies after it
    assert effects[0].item() == pytest.approx(0.5 + 1.5 * 2.0)  # directly, and through the feature (1.5 per unit)


def test_intervening_with_scale_one_changes_nothing(built):
    model, tcs, run, graph = built
    node = graph.nodes[graph.index("feature")[0]]
    assert torch.allclose(A.intervene(model, run, tcs, node, 1.0), run.logits, atol=1e-4)


def test_a_measured_effect_is_the_readout_with_the_feature_off_minus_as_it_was(built):
    model, tcs, run, graph = built
    nodes = [graph.nodes[i] for i in graph.index("feature")[:3].tolist()]
    out = A.measured_effects(model, run, tcs, nodes, graph.readout)
    for node, value in zip(nodes, out):
        _, layer, p, latent = node
        write = run.acts[layer][p, latent] * tcs[layer].W_dec[latent]

        def off(y, hook, p=p, write=write):
            y = y.clone()
            y[:, p] -= write
            return y

        with model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_mlp_out", off)]):
            logits = model(run.tokens[None])[0, -1].float()
        assert torch.isclose(value, (logits - run.logits[-1]) @ graph.readout, atol=1e-4)


@pytest.mark.filterwarnings("ignore:A forward hook edited hook_scale")  # freezing the scale is the point
def test_a_push_on_a_last_layer_feature_moves_the_readout_by_its_edge_once_the_final_norm_is_frozen(built):
    model, tcs, run, graph = built
    last = model.cfg.n_layers - 1
    i = max((i for i in graph.index("feature").tolist() if graph.nodes[i][1] == last), key=lambda i: graph.nodes[i][2])
    if graph.nodes[i][2] != len(run.tokens) - 1:
        pytest.skip("no last-layer feature at the last position on this prompt")
    frozen = run.scales["final"][0][None]
    with model.hooks(fwd_hooks=[("ln_final.hook_scale", lambda scale, hook: frozen)]):
        logits = A.intervene(model, run, tcs, graph.nodes[i], 0.0)
    moved = (run.logits[-1] - logits[-1]) @ graph.readout
    assert moved.item() == pytest.approx(graph.adjacency[-1, i].item(), rel=1e-3, abs=1e-3)
    assert A.total_effects(graph)[i].item() == pytest.approx(graph.adjacency[-1, i].item())
    # with the norm free, the real model differs from the graph: the norm's scale moves with the stream
    free = (run.logits[-1] - A.intervene(model, run, tcs, graph.nodes[i], 0.0)[-1]) @ graph.readout
    assert free.item() != pytest.approx(moved.item(), rel=1e-3)


def _readout_with_linear_features(model, tcs, run, graph, gates):
    """The replacement model's readout with each head scaled by ``gates`` and every active feature passing changes
    in its pre-activation straight on (inactive ones stay off), computed layer by layer."""
    acts = [a.clone() for a in run.acts]
    for layer in range(len(tcs)):
        mlp_ins, _ = A.linear_forward(model, run, run.embed, writes_of(tcs, run, acts), gates)
        active = run.acts[layer] > 0
        now = mlp_ins[layer] @ tcs[layer].W_enc + tcs[layer].b_enc
        before = run.mlp_in[layer] @ tcs[layer].W_enc + tcs[layer].b_enc
        acts[layer] = torch.where(active, run.acts[layer] + now - before, torch.zeros_like(now))
    _, final = A.linear_forward(model, run, run.embed, writes_of(tcs, run, acts), gates)
    return A.readout_value(model, final, graph.readout)


def test_a_heads_effect_is_what_closing_it_takes_from_the_readout_with_features_taken_as_linear(built):
    model, tcs, run, graph = built
    effects = A.head_effects(graph)
    ones = torch.ones_like(effects)
    full = _readout_with_linear_features(model, tcs, run, graph, ones)
    assert full.item() == pytest.approx(graph.inputs[-1].item(), abs=1e-3)
    for layer, head in [(0, 0), (0, effects.shape[1] - 1), (effects.shape[0] - 2, 1)]:
        gates = ones.clone()
        gates[layer, head] = 0
        closed = _readout_with_linear_features(model, tcs, run, graph, gates)
        size = 1e-3 + 1e-3 * graph.adjacency[-1].abs().sum().item()
        assert (full - closed).item() == pytest.approx(effects[layer, head].item(), abs=size)


def test_a_frozen_intervention_changes_nothing_at_scale_one_and_differs_from_a_free_one(built):
    model, tcs, run, graph = built
    node = graph.nodes[graph.index("feature")[0]]
    assert torch.allclose(A.intervene_frozen(model, run, tcs, node, 1.0), run.logits, atol=1e-4)
    free = A.intervene(model, run, tcs, node, 10.0)
    frozen = A.intervene_frozen(model, run, tcs, node, 10.0)
    assert not torch.allclose(free, frozen, atol=1e-3), "a large push moves attention or norms when they are free"
    hooks = A.frozen_hooks(model, run)
    assert len(hooks) == 3 * len(tcs) + 1


def test_the_replacement_model_run_as_a_model_gives_the_real_logits_and_moves_with_its_features(built):
    model, tcs, run, graph = built
    final = A.replacement_forward(model, run, tcs)
    assert torch.allclose(A.logits_of(model, final), run.logits, atol=1e-3)
    i = max(graph.index("feature").tolist(), key=lambda i: graph.nodes[i][1])  # a last-layer feature
    off = A.replacement_forward(model, run, tcs, node=graph.nodes[i], scale=0.0)
    moved = A.readout_value(model, final, graph.readout) - A.readout_value(model, off, graph.readout)
    if graph.nodes[i][2] == len(run.tokens) - 1:  # nothing lies after a last-layer feature at the last position
        assert moved.item() == pytest.approx(graph.adjacency[-1, i].item(), abs=1e-3)
    gates = torch.ones(model.cfg.n_layers, model.cfg.n_heads)
    assert torch.allclose(A.replacement_forward(model, run, tcs, gates=gates), final, atol=1e-5)


# --- how much the transcoders explain: the paper's scores and the readout's signed parts --------------------


def test_the_readouts_direct_parts_by_kind_add_up_to_its_input(built):
    model, tcs, run, graph = built
    parts = A.direct_parts(model, tcs, run, graph)
    assert set(parts) == {"feature", "error", "embed", "constant"}
    size = graph.adjacency[-1].abs().sum().item() + abs(parts["constant"])
    assert sum(parts.values()) == pytest.approx(graph.inputs[-1].item(), abs=1e-3 + 1e-5 * size)
    direct = graph.adjacency[-1]
    assert parts["error"] == pytest.approx(direct[graph.index("error")].sum().item())


def test_the_replacement_score_is_one_minus_the_error_share(built):
    _, _, _, graph = built
    assert A.replacement_score(graph) == pytest.approx(1 - A.error_share(graph), abs=1e-6)
    assert 0 < A.replacement_score(graph) < 1  # random transcoders leave errors on every path


def test_the_scores_on_a_graph_whose_answers_are_known_by_hand():
    # embed 0 -> feature 2 (3), error 3 -> feature 2 (-1), feature 2 -> readout (2), embed 1 -> readout (2):
    # influence readout 1, feature 1/2, embed 1 1/2, embed 0 3/8, error 1/8; the feature takes 1/4 of its input
    # from the error, so completeness is (1 + 1/2 * 3/4 + 1/2 + 3/8 + 1/8) / (1 + 1/2 + 1/2 + 3/8 + 1/8)
    g = hand_graph(
        {(2, 0): 3.0, (2, 3): -1.0, (4, 2): 2.0, (4, 1): 2.0}, ["embed", "embed", "feature", "error", "readout"]
    )
    assert A.replacement_score(g) == pytest.approx(0.875)
    assert A.completeness_score(g) == pytest.approx(2.375 / 2.5)


def test_completeness_is_at_most_one_and_exactly_one_once_the_error_edges_are_zeroed(built):
    _, _, _, graph = built
    score = A.completeness_score(graph)
    assert 0 < score < 1, "random transcoders leave part of some inputs to the errors"
    clean = A.subgraph(graph, torch.arange(len(graph.nodes)))  # a copy
    clean.adjacency[:, clean.index("error")] = 0
    assert A.completeness_score(clean) == pytest.approx(1.0)
    assert A.replacement_score(clean) == pytest.approx(1.0)


def test_the_largest_error_is_the_error_node_with_the_largest_direct_edge_by_size_sign_kept():
    g = hand_graph({(4, 1): -3.0, (4, 2): 2.0, (4, 3): 5.0}, ["embed", "error", "error", "feature", "readout"])
    node, weight = A.largest_error(g)
    assert node == ("error", 0, 1, -1) and weight == pytest.approx(-3.0)


@pytest.mark.parametrize("name", ["storyworld-4l", "storyworld-llama"])
def test_the_errors_carry_the_lesson_graph_on_storyworld_4l_but_not_on_storyworld_llama(name):
    """Lesson 11's first prompt, with the zoo's transcoders: on storyworld-4l the error nodes' direct edges carry
    more than half of the logit difference, though the influence-based error share stays small; on
    storyworld-llama the features carry it."""
    from utils import seeds
    from utils.corpora.ioi_pairs import patching_pairs
    from utils.model_zoo.transcoders import load_transcoders

    model, tcs = load_model(name), load_transcoders(f"{name}-transcoders")
    pairs = patching_pairs(model, n=4, seed=seeds.LESSON_11, corruption="swap", subject_first=True)
    run = A.run_prompt(model, tcs, pairs.clean[0])
    readout = A.readout_direction(run.logits.shape[-1], int(pairs.answers[0]), int(pairs.distractors[0]))
    graph = A.attribution_graph(model, tcs, run, readout)
    parts = A.direct_parts(model, tcs, run, graph)
    total = graph.inputs[-1].item()
    assert total > 1, "the model prefers the answer to the subject"
    if name == "storyworld-4l":
        assert parts["error"] > total / 2 > parts["feature"]
        assert A.error_share(graph) < 0.25, "while the influence-based share looks small"
        node, weight = A.largest_error(graph)
        assert node[1] == model.cfg.n_layers - 1 and node[2] == len(run.tokens) - 1 and weight > total / 2
    else:
        assert parts["error"] < total / 4 < total / 2 < parts["feature"]


def _reference_rule(adjacency, kinds, node_share=0.8, edge_share=0.98, passes=None):
    """circuit-tracer's ``prune_graph`` node and edge masks, written out step by step for a graph whose last node is
    the readout: power series for influence, thresholds by cumulative share, then dangling nodes dropped until none
    is left (or for ``passes`` passes)."""
    n = len(kinds)
    weights = torch.zeros(n)
    weights[-1] = 1.0

    def normalised(a):
        a = a.abs()
        return a / a.sum(1, keepdim=True).clamp_min(1e-10)

    def paths(a):  # influence through paths of one step or more
        current, total = weights @ a, torch.zeros(n)
        while current.any():
            total, current = total + current, current @ a
        return total

    def threshold(scores, share):
        ranked = scores.flatten().sort(descending=True).values
        cumulative = ranked.cumsum(0) / ranked.sum()
        return ranked[min(int(torch.searchsorted(cumulative, share)), len(ranked) - 1)]

    node_inf = paths(normalised(adjacency))
    keep = node_inf >= threshold(node_inf, node_share)
    is_ = {k: torch.tensor([x == k for x in kinds]) for k in ("embed", "feature", "error", "readout")}
    keep |= is_["embed"] | is_["readout"]
    a = adjacency.clone()
    a[~keep] = 0
    a[:, ~keep] = 0
    scores = normalised(a) * (paths(normalised(a)) + weights)[:, None]
    edges = scores >= threshold(scores, edge_share)
    done = 0
    while passes is None or done < passes:
        before = keep.clone()
        edges[~keep] = False
        edges[:, ~keep] = False
        keep &= ~(is_["feature"] | is_["error"]) | edges.any(0)
        keep &= ~is_["feature"] | edges.any(1)
        done += 1
        if torch.equal(before, keep):
            break
    edges[~keep] = False
    edges[:, ~keep] = False
    return keep, edges


def _random_graph(seed, n=40):
    g = torch.Generator().manual_seed(seed)
    kinds = ["embed"] * 5 + [["feature", "error"][int(i % 4 == 0)] for i in range(n - 6)] + ["readout"]
    a = torch.randn(n, n, generator=g).exp() * (torch.rand(n, n, generator=g) < 0.25)
    a = a.tril(-1) * torch.where(torch.rand(n, n, generator=g) < 0.5, -1.0, 1.0)
    src = torch.tensor([k in ("embed", "error") for k in kinds])
    a[src] = 0  # embeddings and errors have no inputs
    a[:, -1] = 0
    nodes = [(kind, 0, i, -1) for i, kind in enumerate(kinds)]
    return A.Graph(nodes, a, torch.ones(n), torch.zeros(n), torch.zeros(3)), kinds


def test_pruning_keeps_the_nodes_and_edges_the_reference_rule_keeps():
    repeated = 0
    for seed in range(30):
        graph, kinds = _random_graph(seed)
        keep, edges = _reference_rule(graph.adjacency, kinds)
        pruned = A.prune(graph)
        assert [node[2] for node in pruned.nodes] == keep.nonzero().flatten().tolist()
        assert torch.equal(pruned.adjacency != 0, edges[keep][:, keep])
        once, _ = _reference_rule(graph.adjacency, kinds, passes=1)
        repeated += int(not torch.equal(once, keep))
    assert repeated > 0, "on some of these graphs one pass of dropping dangling nodes leaves some behind"


def test_the_node_cut_ranks_error_nodes_with_the_features_and_always_keeps_the_embeddings():
    # the readout reads feature 2 strongly, error 3 weakly; embedding 0 feeds feature 2; embedding 1 feeds nothing
    kinds = ["embed", "embed", "feature", "error", "readout"]
    g = hand_graph({(2, 0): 1.0, (4, 2): 9.0, (4, 3): 1.0}, kinds)
    pruned = A.prune(g, node_share=0.8)
    assert ("error", 0, 3, -1) not in pruned.nodes, "an error node with little influence is cut like a feature"
    assert ("embed", 0, 1, -1) in pruned.nodes, "an embedding is kept even with no edge"
    assert ("feature", 0, 2, -1) in pruned.nodes
