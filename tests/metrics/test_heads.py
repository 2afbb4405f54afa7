"""Head scores and the sequences they are measured on (shared by lesson 01 and the cards)."""

import torch

from utils import seeds
from utils.corpora import storyworld
from utils.corpora.tokenizer import load_tokenizer
from utils.metrics import heads


def one_hot_pattern(n: int, key_of) -> torch.Tensor:
    """A pattern ``[query, key]`` where each query attends only to ``key_of(query)``."""
    p = torch.zeros(n, n)
    for q in range(n):
        p[q, key_of(q)] = 1.0
    return p


def test_a_head_that_always_looks_one_back_scores_one_as_a_previous_token_head():
    p = one_hot_pattern(9, lambda q: max(q - 1, 0))
    assert heads.previous_token_scores(p).item() == 1.0
    assert heads.previous_token_scores(one_hot_pattern(9, lambda q: q)).item() == 0.0


def test_an_induction_pattern_scores_one_as_induction_and_zero_as_duplicate():
    period = 5
    n = 2 * period + 1
    p = one_hot_pattern(n, lambda q: q - period + 1 if q > period else 0)
    assert heads.induction_scores(p, period).item() == 1.0
    assert heads.duplicate_token_scores(p, period).item() == 0.0
    dup = one_hot_pattern(n, lambda q: q - period if q > period else 0)
    assert heads.duplicate_token_scores(dup, period).item() == 1.0


def test_scores_keep_leading_batch_and_head_dimensions():
    p = torch.rand(2, 3, 11, 11).softmax(-1)
    assert heads.previous_token_scores(p).shape == (2, 3)
    assert heads.induction_scores(p, 5).shape == (2, 3)


def test_repeated_random_tokens_are_two_exact_copies_of_distinct_words():
    for ids, period in heads.repeated_random_tokens(5):
        assert len(ids) == 1 + 2 * period
        first, second = ids[1 : period + 1], ids[period + 1 :]
        assert first == second and len(set(first)) == period


def test_song_like_sequences_start_without_a_space_as_a_song_does():
    tok = load_tokenizer()
    plain = heads.repeated_random_tokens(5)
    for (ids, period), (ref, _) in zip(heads.repeated_random_tokens(5, song_like=True), plain):
        assert ids[2:] == ref[2:]  # same words and periods; only the very first token differs
        text = tok.decode(ids[1:])
        assert not text.startswith(" ")
        assert text.split() == tok.decode(ref[1:]).split()
        assert tok.decode([ids[1]]) == tok.decode([ids[period + 1]]).lstrip(" ")


def test_the_all_word_pool_holds_function_words_and_the_content_pool_does_not():
    tok = load_tokenizer()
    the = tok(" the", add_special_tokens=False)["input_ids"][0]
    assert the in heads.all_word_pool() and the not in heads.content_word_pool()
    assert set(heads.content_word_pool()) <= set(heads.all_word_pool())


def test_copying_and_composition_scores_on_matrices_with_known_answers():
    assert heads.copying_score(torch.eye(6) * 3 + 0.1) == 1.0
    assert heads.copying_score(torch.eye(6).flip(0) * 3) == 0.0
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    assert torch.isclose(heads.composition_score(5 * a, b), heads.composition_score(a, b))
    assert torch.isclose(heads.composition_score(torch.eye(4), torch.eye(4)), torch.tensor(0.5))


def test_full_ov_circuit_is_the_product_in_reading_order_and_copied_tokens_read_the_diagonal():
    W_E, W_V, W_O, W_U = torch.randn(7, 5), torch.randn(5, 2), torch.randn(2, 5), torch.randn(5, 7)
    assert torch.allclose(heads.full_ov_circuit(W_E, W_V, W_O, W_U), W_E @ (W_V @ W_O) @ W_U, atol=1e-5)
    m = torch.eye(4) * 2
    m[3, 0] = 5.0
    assert heads.copied_tokens(m).tolist() == [True, True, True, False]
    assert heads.copying_score(m) == heads.copied_tokens(m).float().mean().item()


def test_random_composition_baseline_is_near_the_rank_formula_and_below_aligned_heads():
    base = heads.random_composition_baseline(128, 32, n=20)
    assert 0.07 < base < 0.11  # small, but well above zero
    u = torch.randn(128, 32)
    aligned = heads.composition_score(u @ u.T, u @ u.T).item()
    assert aligned > 2 * base


def test_the_all_word_pool_is_every_single_token_word_of_sampled_text():
    tok = load_tokenizer()
    seen = set()
    for d in storyworld.sample_docs(seeds.EVAL, 500):
        seen.update(tok(d.text, add_special_tokens=False)["input_ids"])
    words = {
        i for i, s in zip(sorted(seen), tok.convert_ids_to_tokens(sorted(seen))) if s[0] == "Ġ" and s[1:].isalpha()
    }
    assert set(heads.all_word_pool()) == words
    assert len(heads.all_word_pool()) == len(storyworld.WORDS), "every Storyworld word is one token"
