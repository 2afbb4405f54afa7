"""Next-token loss: per token, against the generator's entropy floor, on song copies."""

import math

import pytest
import torch

from utils import seeds
from utils.corpora import storyworld
from utils.corpora.tokenizer import load_tokenizer
from utils.metrics import loss
from utils.model_zoo.models import load_model


class Uniform(torch.nn.Module):
    """A 'model' that gives every token the same logit: its loss is log(vocab) everywhere."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens):
        return torch.zeros(*tokens.shape, self.vocab)


def test_per_token_loss_pairs_the_logits_at_t_with_the_token_at_t_plus_1():
    logits, tokens = torch.randn(2, 6, 11), torch.randint(0, 11, (2, 6))
    want = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    assert torch.allclose(loss.per_token_loss(logits, tokens), want, atol=1e-6)
    assert torch.isclose(loss.mean_loss(logits, tokens), want.mean())


def test_a_uniform_model_pays_log_vocab_per_token_and_the_gap_is_loss_minus_floor():
    docs = storyworld.sample_docs(seeds.TEST_SAMPLE, 20)
    vocab = len(load_tokenizer())
    r = loss.heldout_loss(Uniform(vocab), docs, batch=7)
    assert r["loss"] == pytest.approx(math.log(vocab), abs=1e-5)
    assert r["gap"] == pytest.approx(r["loss"] - r["floor"])
    assert r["floor"] == pytest.approx(-sum(d.logprob for d in docs) / r["tokens"])


@pytest.mark.slow
def test_song_copy_loss_separates_a_copying_model_from_a_uniform_guess():
    docs = storyworld.sample_docs(seeds.TEST_SONGS, 200)
    r = loss.song_copy_loss(load_model("storyworld-attn2l", device="cpu"), docs)
    words = len(storyworld.SONG_WORDS)
    # A first copy cannot be predicted: about a uniform guess over the song words.
    assert abs(r["song_loss_first_copy"] - math.log(words)) < 0.3
    # attn2l's card records an induction head, so the second copy is nearly free.
    assert r["song_loss_second_copy"] < 0.5
    n_songs = sum(d.family == "song" for d in docs)
    assert r["song_tokens"] >= n_songs * 2 * (storyworld.SONG_MIN - 1)
