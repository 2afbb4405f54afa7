"""Definitions behind the card numbers: the test sequences and the song measurement."""

import math

import pytest

from utils import evaluate as ev
from utils import storyworld
from utils.models import load_model
from utils.tokenizer import load_tokenizer


def test_repeated_random_tokens_are_two_exact_copies_of_distinct_words():
    for ids, period in ev.repeated_random_tokens(5):
        assert len(ids) == 1 + 2 * period
        first, second = ids[1:period + 1], ids[period + 1:]
        assert first == second and len(set(first)) == period


def test_song_like_sequences_start_without_a_space_as_a_song_does():
    tok = load_tokenizer()
    plain = ev.repeated_random_tokens(5)
    for (ids, period), (ref, _) in zip(ev.repeated_random_tokens(5, song_like=True), plain):
        assert ids[2:] == ref[2:]  # same words and periods; only the very first token differs
        text = tok.decode(ids[1:])
        assert not text.startswith(" ")
        assert text.split() == tok.decode(ref[1:]).split()
        assert tok.decode([ids[1]]) == tok.decode([ids[period + 1]]).lstrip(" ")


@pytest.mark.slow
def test_song_copy_loss_separates_a_copying_model_from_a_uniform_guess():
    docs = storyworld.sample_docs(9400, 200)
    r = ev.song_copy_loss(load_model("storyworld-attn2l", device="cpu"), docs)
    words = len(storyworld.SONG_WORDS)
    # A first copy cannot be predicted: about a uniform guess over the song words.
    assert abs(r["song_loss_first_copy"] - math.log(words)) < 0.3
    # attn2l's card records an induction head, so the second copy is nearly free.
    assert r["song_loss_second_copy"] < 0.5
    n_songs = sum(d.family == "song" for d in docs)
    assert r["song_tokens"] >= n_songs * 2 * (storyworld.SONG_MIN - 1)
