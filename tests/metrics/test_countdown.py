"""Lesson 08's measurements on countdown-llama: sites, interventions and generation agree with the traces."""

import pytest
import torch

from utils.corpora import countdown
from utils.metrics import countdown as cdm

TRACES = countdown.sample_traces(9350, 40)


@pytest.fixture(scope="module")
def model():
    from utils import load_model

    with torch.no_grad():
        yield load_model("countdown-llama", device="cpu")


def test_verdict_sites_point_at_each_open_bracket_with_its_label():
    sites = cdm.verdict_sites(TRACES)
    tok = countdown.load_tokenizer()
    assert len(sites) == sum(len(t.annotations["attempts"]) for t in TRACES)
    words = [tok.convert_ids_to_tokens(row.tolist()) for row in sites.tokens]
    for r, p, tp, valid in zip(sites.row.tolist(), sites.pos.tolist(), sites.target_pos.tolist(), sites.valid.tolist()):
        assert words[r][p] == "(" and words[r][p + 1] == ("this" if valid else "not")
        assert words[r][tp] == str(TRACES[r].target)


def test_a_subset_keeps_only_the_traces_its_sites_come_from():
    sites = cdm.verdict_sites(TRACES)
    valid = sites.subset(sites.valid)
    assert len(valid.traces) == len(valid) == int(sites.valid.sum())
    assert all(
        valid.tokens[r, p + 1] == valid.tokens[0, 0] * 0 + countdown.VOCAB.index("this")
        for r, p in zip(valid.row, valid.pos)
    )


def test_balanced_draws_as_many_of_each_class_and_says_when_it_cannot():
    sites = cdm.verdict_sites(TRACES)
    idx = cdm.balanced(sites, 10)
    assert sites.valid[idx].sum() == 10 and len(idx) == 20
    with pytest.raises(ValueError, match="valid sites"):
        cdm.balanced(sites, 10_000)


def test_attention_to_target_sums_the_earlier_occurrences_only():
    sites = cdm.verdict_sites(TRACES[:3])
    n = sites.tokens.shape[1]
    uniform = torch.ones(len(sites), 2, n) / n  # [site, head, key]: every key weighted 1/n
    att = cdm.attention_to_target({"blocks.0.attn.hook_pattern": uniform}, sites)
    counts = []
    for k in range(len(sites)):
        row = sites.tokens[sites.row[k]]
        earlier = (row == row[sites.target_pos[k]]) & (torch.arange(n) < sites.pos[k] - 1)  # not the result itself
        counts.append(int(earlier.sum()))
    assert att.shape == (1, 2)
    assert torch.allclose(att[0], torch.full((2,), sum(counts) / len(counts) / n))
    assert min(counts) >= 1  # the prompt's target at least


def test_the_model_judges_held_out_verdicts(model):
    acc = cdm.verdict_accuracy(model, cdm.verdict_sites(TRACES, model.tokenizer))
    assert acc["verdict_accuracy"] >= 0.98


def test_an_intervention_at_the_sites_leaves_other_positions_alone(model):
    sites = cdm.verdict_sites(TRACES[:4], model.tokenizer)
    big = torch.zeros(model.cfg.d_model)
    big[0] = 1e4
    hook = cdm.add_at_sites(1, big)(sites.row, sites.pos)
    clean = model(sites.tokens)
    steered = model.run_with_hooks(sites.tokens, fwd_hooks=hook)
    first = int(sites.pos.min())
    assert torch.allclose(clean[:, :first], steered[:, :first], atol=1e-4)
    assert not torch.allclose(clean[sites.row, sites.pos], steered[sites.row, sites.pos])


def test_running_the_sites_in_short_batches_cut_after_their_last_site_changes_no_answer(model):
    sites = cdm.verdict_sites(TRACES[:12], model.tokenizer)
    names = ["blocks.1.attn.hook_pattern", "blocks.2.hook_resid_post"]
    whole = cdm.run_sites(model, sites, names, hooks=cdm.zero_heads([(1, 0)]), batch=len(sites.tokens))
    short = cdm.run_sites(model, sites, names, hooks=cdm.zero_heads([(1, 0)]), batch=3)
    for k in ("margin", "p_this", "top", *names):
        assert whole[k].shape == short[k].shape and torch.allclose(whole[k].float(), short[k].float(), atol=1e-5), k
    assert whole["blocks.1.attn.hook_pattern"].shape[-1] == sites.tokens.shape[1]


def test_zeroing_heads_at_the_sites_only_leaves_every_other_position_alone(model):
    sites = cdm.verdict_sites(TRACES[:4], model.tokenizer)
    one = len(sites.tokens)
    clean = cdm.run_sites(model, sites, ["blocks.1.hook_resid_post"], batch=one)
    at_sites = cdm.run_sites(
        model, sites, ["blocks.1.hook_resid_post"], hooks=cdm.zero_heads([(1, 0)], at_sites_only=True), batch=one
    )
    everywhere = cdm.run_sites(model, sites, ["blocks.1.hook_resid_post"], hooks=cdm.zero_heads([(1, 0)]), batch=one)
    assert not torch.allclose(at_sites["margin"], clean["margin"])
    assert not torch.allclose(at_sites["margin"], everywhere["margin"])  # earlier positions kept their head output
    first = int(sites.pos.min())
    hook = cdm.zero_heads([(1, 0)], at_sites_only=True)(sites.row, sites.pos)
    assert torch.allclose(model(sites.tokens)[:, :first], model.run_with_hooks(sites.tokens, fwd_hooks=hook)[:, :first])
    with pytest.raises(ValueError, match="run_sites"):
        cdm.zero_heads([(1, 0)], at_sites_only=True)()


def test_cached_greedy_traces_match_the_step_by_step_loop(model):
    judged = cdm.greedy_traces(model, TRACES[:6])
    prompts = [countdown.encode(t.text, model.tokenizer)[: t.annotations["target"] + 3] for t in TRACES[:6]]
    slow = cdm.continue_greedily(model, prompts, max_new=100)
    assert [j["text"] for j in judged] == [countdown.decode(p + o, model.tokenizer) for p, o in zip(prompts, slow)]


def test_ablating_the_comparing_head_at_the_verdict_breaks_acceptance(model):
    sites = cdm.verdict_sites(TRACES, model.tokenizer)
    valid = sites.subset(sites.valid)
    prompts = cdm.truncated_at_valid(valid, model.tokenizer)[:12]
    assert cdm.continuation_accepts(model, prompts).all()
    # (a later attempt that also makes the target can still be accepted: a few do)
    assert cdm.continuation_accepts(model, prompts, at_open=cdm.zero_heads([(1, 0)])).float().mean() <= 0.25


def test_neurons_zeroed_in_generation_are_zeroed_at_the_open_bracket_alone(model):
    sites = cdm.verdict_sites(TRACES[:16], model.tokenizer)
    valid = sites.subset(sites.valid)
    prompts = cdm.truncated_at_valid(valid, model.tokenizer)
    neurons = [(layer, i) for layer in (2, 3) for i in range(model.cfg.d_mlp)]
    first = [o[0] for o in cdm.continue_greedily(model, prompts, max_new=1, at_open=cdm.zero_neurons(neurons))]
    at_the_sites = cdm.run_sites(model, valid, hooks=cdm.zero_neurons(neurons))["top"]
    assert first == at_the_sites.tolist()  # the same verdict as zeroing them at the `(` of the whole trace
    this = model.tokenizer.convert_tokens_to_ids("this")
    assert any(t != this for t in first), "the test needs an intervention that moves some verdicts"


def test_holding_the_final_scale_at_its_clean_value_changes_nothing_by_itself(model):
    sites = cdm.verdict_sites(TRACES[:8], model.tokenizer)
    clean = cdm.run_sites(model, sites, [cdm.FINAL_SCALE], batch=len(sites.tokens))
    held = cdm.run_sites(model, sites, hooks=cdm.holding_final_scale(clean[cdm.FINAL_SCALE]), batch=len(sites.tokens))
    assert torch.allclose(held["margin"], clean["margin"], atol=1e-3)
    with pytest.raises(ValueError, match="one batch"):
        cdm.run_sites(model, sites, hooks=cdm.holding_final_scale(clean[cdm.FINAL_SCALE]), batch=2)


def test_zeroing_last_layer_neurons_with_the_scale_held_costs_exactly_their_direct_margin(model):
    # Nothing after the last MLP reads its neurons, so with the final scale held the margin loses
    # what they wrote straight into it, no more and no less.
    sites = cdm.verdict_sites(TRACES, model.tokenizer)
    last = model.cfg.n_layers - 1
    neurons = [(last, i) for i in range(0, model.cfg.d_mlp, 7)]
    one = len(sites.tokens)
    clean = cdm.run_sites(model, sites, [cdm.FINAL_SCALE, f"blocks.{last}.mlp.hook_post"], batch=one)
    direct = cdm.neuron_direct_margin(model, clean, neurons, clean[cdm.FINAL_SCALE])
    held = cdm.run_sites(
        model, sites, hooks=cdm.holding_final_scale(clean[cdm.FINAL_SCALE], cdm.zero_neurons(neurons)), batch=one
    )
    assert direct.abs().mean() > 0.1  # these neurons write something, so the test could fail
    assert torch.allclose(clean["margin"] - held["margin"], direct, atol=2e-2)
    free = cdm.run_sites(model, sites, hooks=cdm.zero_neurons(neurons), batch=one)
    assert not torch.allclose(free["margin"], held["margin"], atol=2e-2)  # the norm does move it


def test_every_draw_lists_each_set_of_heads_once_or_a_seeded_sample():
    draws = cdm.every_draw_of(2, 4, 3, [(0, 0)], seed=0)
    assert len(draws) == 35 and len({tuple(map(tuple, d)) for d in draws}) == 35  # C(7, 3)
    assert all((0, 0) not in d for d in draws)
    many = cdm.every_draw_of(4, 8, 3, [], seed=1)  # C(32, 3) = 4960 sets: a sample
    assert len(many) == cdm.EVERY_DRAW_CAP and many == cdm.every_draw_of(4, 8, 3, [], seed=1)


def test_the_ov_diagonal_is_the_diagonal_of_each_heads_ov_matrix(model):
    diag = cdm.ov_diagonal(model)
    for layer, h in [(0, 0), (1, 0), (3, 2)]:
        ov = model.W_V[layer, h].float() @ model.W_O[layer, h].float()  # [d_model, d_model]
        assert torch.allclose(diag[layer, h], ov.diagonal(), atol=1e-5)


def test_the_papers_receptive_field_uses_the_raw_vector_and_every_neuron(model):
    neurons = [(0, 3), (2, 10), (3, 7)]
    o = torch.randn(5, model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    by_loop = torch.stack(
        [
            torch.stack(
                [
                    torch.nn.functional.silu(v @ model.W_gate[layer][:, i].float())
                    * (v @ model.W_in[layer][:, i].float())
                    for layer, i in neurons
                ]
            ).mean()
            for v in o
        ]
    )
    assert torch.allclose(cdm.paper_receptive_field(model, o, neurons), by_loop, atol=1e-5)
    assert not torch.allclose(cdm.paper_receptive_field(model, 2 * o, neurons), by_loop, atol=1e-3)  # no norm


def test_the_bottom_up_filter_keeps_heads_above_the_threshold_and_the_pick_ranks_only_those():
    attention = torch.tensor([[0.05, 0.2], [0.6, 0.1]])
    kept = cdm.previous_occurrence_heads(attention)
    assert kept == [(0, 1), (1, 0)]  # 0.1 itself is not above the threshold
    scores = torch.tensor([[9.0, 1.0], [2.0, 5.0]])
    assert cdm.paper_pick(scores, kept, k=1) == [(1, 0)]  # (0, 0) and (1, 1) score higher but were not kept
