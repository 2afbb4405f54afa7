"""Lesson 11's attribution graphs against the reference implementation, circuit-tracer (docs/circuit-tracer.md).

circuit-tracer runs in an environment of its own (``scripts/circuit_tracer_compare.sh``), so these tests read what
it recorded, ``benchmarks/circuit_tracer.json``: that record must say the two graphs agree wherever their nodes are
the same, and the course's code as it is now must still give circuit-tracer's recorded numbers on lesson 11's
prompts (its scores, its pruned graph, its strongest edges into the readout)."""

import json

import pytest
import torch

from utils.paths import ROOT

RECORD = json.loads((ROOT / "benchmarks" / "circuit_tracer.json").read_text())
MODELS = ("storyworld-llama", "storyworld-4l")


def test_the_record_covers_both_zoo_models_with_transcoders_four_prompts_and_both_readouts():
    assert set(RECORD["models"]) == set(MODELS)
    assert RECORD["versions"]["circuit-tracer"] == "0.5.0"
    for model in RECORD["models"].values():
        assert len(model["prompts"]) == 4
        assert all(set(p["readouts"]) == {"logit_diff", "top_token"} for p in model["prompts"])


@pytest.mark.parametrize("name", MODELS)
def test_the_recorded_graphs_agree_wherever_the_two_have_the_same_nodes(name):
    s = RECORD["summary"][name]
    assert s["features_equal"], "the same transcoder latents fire at the same positions"
    assert s["logits_max_abs_diff"] < 1e-3, "circuit-tracer's copy of the model gives the course's logits"
    assert s["feature_and_error_edges_max_rel_diff"] < 1e-4, "every edge out of a feature or an error agrees"
    # circuit-tracer's token nodes are token embeddings alone; the course's, token plus position embedding
    assert s["token_embedding_edges_max_rel_diff"] < 1e-4
    assert s["token_embedding_edges_min_correlation"] > 0.99999
    assert s["scores_max_abs_diff_aligned"] < 1e-5, "replacement and completeness scores agree"
    assert s["scores_max_abs_diff_on_course_graph"] < 1e-5, "both sides' scores of one graph agree"
    for kind in ("features", "errors"):
        assert s[f"pruned_{kind}_min_jaccard_aligned"] == 1.0, f"the pruned graphs keep the same {kind}"
        assert s[f"pruned_{kind}_min_jaccard_rules_on_course_graph"] == 1.0


def test_where_the_models_differ_the_record_says_why():
    """storyworld-llama has no position embedding and a zero embedding for the first token, so its graphs agree
    node for node as computed; storyworld-4l (GPT-2) adds a position embedding the course counts in its embedding
    nodes, and circuit-tracer's first-token node sends edges the course counts as a constant."""
    llama, gpt2 = RECORD["summary"]["storyworld-llama"], RECORD["summary"]["storyworld-4l"]
    assert llama["edges_max_rel_diff"] < 1e-4 and llama["first_position_max_share"] == 0.0
    assert llama["scores_max_abs_diff"] < 1e-5 and llama["pruned_features_min_jaccard"] == 1.0
    assert gpt2["embed_edges_max_rel_diff"] > 0.01 and gpt2["first_position_max_share"] > 0.0
    assert gpt2["scores_max_abs_diff"] < 0.01, "the two differences move the scores in the third decimal at most"


def test_the_course_code_still_gives_circuit_tracers_recorded_numbers_on_lesson_11s_prompts():
    from utils import load_model
    from utils.metrics import attribution as A
    from utils.model_zoo.transcoders import load_transcoders

    model = load_model("storyworld-llama", device="cpu")
    transcoders = load_transcoders("storyworld-llama-transcoders")
    for prompt in RECORD["models"]["storyworld-llama"]["prompts"]:
        run = A.run_prompt(model, transcoders, torch.tensor(prompt["tokens"]))
        readout = A.readout_direction(run.logits.shape[-1], prompt["answer"], prompt["distractor"])
        graph = A.attribution_graph(model, transcoders, run, readout)
        reference = prompt["readouts"]["logit_diff"]
        ct = reference["scores"]["circuit_tracer"]
        assert A.replacement_score(graph) == pytest.approx(ct["replacement"], abs=1e-5)
        assert A.completeness_score(graph) == pytest.approx(ct["completeness"], abs=1e-5)
        kept = {tuple(n) for n in A.prune(graph).nodes if n[0] in ("feature", "error")}
        assert kept == {tuple(n) for n in reference["circuit_tracer_pruned"]}, (
            "prune keeps other features or errors than circuit-tracer's prune_graph (0.8, 0.98) kept"
        )
        where = {node: i for i, node in enumerate(graph.nodes)}
        for node, weight in reference["circuit_tracer_readout_top_edges"]:
            assert graph.adjacency[-1, where[tuple(node)]].item() == pytest.approx(weight, rel=1e-4, abs=1e-4)
