"""The belief measurements: answers read where the model predicts them, interchange interventions
that do exactly what they say, subspaces that are subspaces. On a small random Llama with the
beliefs vocabulary (what it answers does not matter here, only that the plumbing is exact)."""

import random

import pytest
import torch

from utils.corpora import beliefs as b
from utils.metrics import beliefs as m


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import transformers

    from utils.model_zoo.models import load_model

    folder = tmp_path_factory.mktemp("beliefs-random")
    tokenizer = b.load_tokenizer()
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        num_hidden_layers=2,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return load_model(str(folder))


@pytest.fixture(scope="module")
def pairs():
    base = b.sample_stories(9101, 24)
    rng = random.Random(0)
    return base, [b.with_new_cast(s, rng) for s in base]


def test_questions_cut_each_story_before_its_answer_and_point_at_its_A():
    stories = b.sample_stories(9100, 20)
    qs = m.questions(stories)
    tokenizer = b.load_tokenizer()
    for i, s in enumerate(stories):
        assert tokenizer.convert_ids_to_tokens(int(qs.tokens[i, qs.at[i]])) == "A"
        assert tokenizer.convert_ids_to_tokens(int(qs.answer[i])) == s.answer
        assert qs.at[i] == s.annotations["question"]["answer_at"] + 1, "positions count the BOS token"


def test_answer_logits_are_the_logits_at_A_whatever_the_padding(model):
    stories = b.sample_stories(9100, 12)
    qs = m.questions(stories)
    together = m.answer_logits(model, qs)
    for i in (0, 5, 11):
        alone = m.answer_logits(model, m.questions([stories[i]]))
        torch.testing.assert_close(together[i], alone[0], atol=1e-4, rtol=0)


def test_accuracy_by_kind_counts_each_kind_apart():
    stories = b.sample_stories(9100, 200)
    right = torch.tensor([s.kind == "unknown" for s in stories])  # a model that always says unknown
    acc = m.accuracy_by_kind(right, stories)
    assert acc["unknown"] == 1.0 and acc["own"] == acc["seen"] == acc["false"] == 0.0
    assert acc["all"] == pytest.approx(sum(s.kind == "unknown" for s in stories) / 200)
    assert set(m.accuracy_by_kind(right[:3], stories[:3])) == {s.kind for s in stories[:3]} | {"all"}


def test_an_interchange_from_the_story_itself_changes_nothing(model, pairs):
    base, _ = pairs
    qs = m.questions(base)
    at = qs.at
    patched = m.interchange(model, qs, qs, m.resid_name(0), at)
    torch.testing.assert_close(patched, m.answer_logits(model, qs), atol=1e-4, rtol=0)


def test_the_last_streams_interchange_at_A_gives_the_sources_answer_logits(model, pairs):
    base, source = pairs
    qb, qs = m.questions(base), m.questions(source)
    last = m.resid_name(model.cfg.n_layers - 1)
    patched = m.interchange(model, qb, qs, last, qb.at, qs.at)
    torch.testing.assert_close(patched, m.answer_logits(model, qs), atol=1e-4, rtol=0)


def test_a_full_rank_subspace_is_the_whole_interchange_and_an_empty_one_is_none(model, pairs):
    base, source = pairs
    qb, qs = m.questions(base), m.questions(source)
    name, d = m.resid_name(0), model.cfg.d_model
    whole = m.interchange(model, qb, qs, name, qb.at)
    full = m.interchange(model, qb, qs, name, qb.at, basis=m.random_basis(d, d, seed=1))
    none = m.interchange(model, qb, qs, name, qb.at, basis=torch.zeros(d, 0))
    torch.testing.assert_close(full, whole, atol=1e-3, rtol=0)
    torch.testing.assert_close(none, m.answer_logits(model, qb), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="pair up one to one: 24 base and 3 source"):
        m.interchange(model, qb, m.questions(source[:3]), name, qb.at)


def test_a_sweep_gives_each_positions_and_layers_interchange_accuracy_as_one_interchange_would(model, pairs):
    base, source = pairs
    qb, qs = m.questions(base), m.questions(source)
    drink = torch.tensor([s.annotations["fills"][0]["drink"] + 1 for s in base])
    positions = {"first drink": drink, "A": qb.at}
    said = m.answer_logits(model, qs).argmax(-1)  # the source's own top words (the model is random)
    sweep = m.interchange_sweep(model, qb, qs, positions, [-1, 0, 1], said, batch=5)
    assert sweep.shape == (2, 3)
    for i, pos in enumerate(positions.values()):
        for j, layer in enumerate([-1, 0, 1]):
            one = m.interchange(model, qb, qs, m.resid_name(layer), pos)
            assert sweep[i, j].item() == pytest.approx(m.agreement(one, said))
    assert sweep[1, 2] == 1.0  # the last stream at A gives the source's own answer
    story_loss = m.story_loss(model, base[:4])
    assert story_loss["tokens"] == sum(len(s.words) + 1 for s in base[:4])


def test_interchanging_several_sites_at_once_is_one_interchange_per_site_when_alone_and_composes(model, pairs):
    base, source = pairs
    qb, qs = m.questions(base), m.questions(source)
    drink = torch.tensor([s.annotations["fills"][0]["drink"] + 1 for s in base])
    one = m.interchange(model, qb, qs, m.resid_name(0), drink)
    torch.testing.assert_close(m.interchange_sites(model, qb, qs, [(0, drink)], batch=5), one)
    # the last stream at A from the source, with anything earlier also moved: the source's own answer logits
    both = m.interchange_sites(model, qb, qs, [(0, drink), (1, qb.at)])
    torch.testing.assert_close(both, m.answer_logits(model, qs), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="pair up one to one"):
        m.interchange_sites(model, qb, m.questions(source[:3]), [(0, drink)])


def test_subspaces_have_orthonormal_columns_and_the_mean_difference_spans_the_class_means():
    basis = m.random_basis(32, 4, seed=0)
    torch.testing.assert_close(basis.T @ basis, torch.eye(4), atol=1e-5, rtol=0)
    assert not torch.allclose(basis, m.random_basis(32, 4, seed=1))
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(32, generator=g)
    labels = torch.arange(200) % 2
    x = torch.randn(200, 32, generator=g) * 0.1 + labels[:, None] * direction
    found = m.mean_difference_basis(x, labels, 1)[:, 0]
    assert abs(torch.nn.functional.cosine_similarity(found, direction, 0)) > 0.99


def test_distributed_alignment_search_learns_an_orthonormal_subspace_that_moves_the_answer(model, pairs):
    base, source = pairs
    qb, qs = m.questions(base), m.questions(source)
    name = m.resid_name(0)
    target = qs.answer  # ask the subspace to carry the source's answer across

    def target_logprob(basis):
        logits = m.interchange(model, qb, qs, name, qb.at, basis=basis)
        return logits.log_softmax(-1)[torch.arange(len(qb)), target].mean().item()

    basis = m.fit_subspace(model, qb, qs, name, qb.at, target, rank=4, steps=60, lr=0.05)
    assert basis.shape == (64, 4)
    torch.testing.assert_close(basis.T @ basis, torch.eye(4), atol=1e-4, rtol=0)
    assert target_logprob(basis) > target_logprob(m.random_basis(64, 4, 0)) + 0.01
    assert all(p.requires_grad for p in model.parameters()), "the model is left as it was found"


def test_attention_from_A_is_each_heads_row_at_the_answers_position(model):
    qs = m.questions(b.sample_stories(9100, 6))
    att = m.attention_from_answer(model, qs)
    assert att.shape == (6, model.cfg.n_layers, model.cfg.n_heads, qs.tokens.shape[1])
    rows = att.sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows), atol=1e-4, rtol=0)
    for i in range(6):
        assert (att[i, :, :, qs.at[i] + 1 :] == 0).all(), "nothing after A is attended to"


def test_the_story_loss_is_each_storys_summed_surprise_and_the_floor_its_log_probability(model):
    from utils.metrics.loss import sequence_loss

    stories = b.sample_stories(9100, 7)
    seqs = [b.encode(s.text) + [0] for s in stories]
    res = sequence_loss(model, seqs, [s.logprob for s in stories], batch=3)
    total = 0.0
    for seq in seqs:
        x = torch.tensor([seq])
        with torch.no_grad():
            logits = model(x[:, :-1])
        total += torch.nn.functional.cross_entropy(logits[0].float(), x[0, 1:], reduction="sum").item()
    count = sum(len(seq) - 1 for seq in seqs)
    assert res["tokens"] == count
    assert res["loss"] == pytest.approx(total / count, rel=1e-5)
    assert res["floor"] == pytest.approx(-sum(s.logprob for s in stories) / count)


def test_the_visibility_blind_reader_is_right_on_own_and_unknown_questions_only():
    stories = b.sample_stories(9100, 400)
    for s in stories:
        if s.kind in ("seen", "false"):
            assert m.visibility_blind(s) != s.answer
    own = [s for s in stories if s.kind == "own"]
    assert all(m.visibility_blind(s) == s.answer for s in own)


def test_the_belief_card_measures_each_kind_against_the_visibility_blind_reader_and_renders(model):
    from utils.cards import model_cards
    from utils.model_zoo.models import read_card

    card = m.beliefs_card(model, 9102, n_stories=60)
    stories = b.sample_stories(9102, 60, more_characters=True)
    blind = sum(m.visibility_blind(s) == s.answer for s in stories) / 60
    assert card["visibility_blind_three"] == pytest.approx(blind)
    assert card["accuracy_three_over_blind"] == pytest.approx(card["accuracy_three"] - blind)
    assert sum(card["kinds"].values()) == card["stories"] == 60
    right = m.correct(model, m.questions(b.sample_stories(9102, 60)))
    assert card["accuracy"] == pytest.approx(right.float().mean().item())
    shown = dict(read_card("countdown-llama"), eval={"seed": 9102, **card}, targets={}, lessons=["09"])
    text = model_cards.card_markdown(shown)
    assert f"| belief questions, two characters (as trained) | {card['accuracy']:.1%}" in text
    assert f"the visibility-blind reader: {blind:.1%}" in text
