"""The plain-English passages of lesson 06's real-model section and the control for their position."""

import pytest

from utils.corpora import plain_english
from utils.corpora.tokenizer import load_tokenizer


def test_repeated_passages_repeat_the_second_sentence_at_the_end():
    for p in plain_english.repeated_passages(seed=3, n=10):
        b, again = p.text[slice(*p.first)], p.text[slice(*p.second)]
        assert b == again and b in plain_english.SENTENCES
        assert p.text.endswith(b) and p.text.count(b) == 2


def test_new_ending_passages_keep_a_b_c_and_end_on_a_sentence_never_read():
    repeated = plain_english.repeated_passages(seed=3, n=10)
    new = plain_english.new_ending_passages(seed=3, n=10)
    for r, n in zip(repeated, new):
        assert n.first == r.first and n.text[: n.second[0]] == r.text[: r.second[0]]  # the same A B C
        d = n.text[slice(*n.second)]
        assert d in plain_english.SENTENCES and d not in n.text[: n.second[0]] and n.text.endswith(d)
        assert n.second[0] == r.second[0], "D starts where B's second copy started"


def test_span_tokens_finds_each_span_s_tokens():
    tok = load_tokenizer()
    p = plain_english.new_ending_passages(seed=5, n=1)[0]
    ids, first, second = plain_english.span_tokens(tok, p)
    assert tok.decode([ids[i] for i in first]).strip() == p.text[slice(*p.first)]
    assert tok.decode([ids[i] for i in second]).strip() == p.text[slice(*p.second)]


def test_copy_tokens_refuses_spans_whose_tokens_differ():
    tok = load_tokenizer()
    with pytest.raises(ValueError, match="tokenized differently"):
        plain_english.copy_tokens(tok, plain_english.new_ending_passages(seed=5, n=1)[0])
