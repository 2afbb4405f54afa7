"""Lesson 07's measurements of shared geometry: each on a small problem whose answer is known."""

import math

import pytest
import torch

from utils.corpora import storyworld
from utils.corpora.tokenizer import load_tokenizer
from utils.metrics import geometry as geo

TOK = load_tokenizer()


def rotation(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q


def test_a_rotated_and_scaled_copy_has_the_same_distances():
    x = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    assert geo.distance_correlation(x, 3 * x @ rotation(8, 1)) == pytest.approx(1.0, abs=1e-9)
    null = geo.shuffled_null(geo.distance_correlation, x, x @ rotation(8, 1), 20, seed=2)
    assert null.shape == (20,) and null.abs().max() < 0.5


def test_token_counts_count_what_the_tokenizer_makes_of_the_documents():
    counts = geo.token_counts(TOK, 9300, 5)
    docs = storyworld.sample_docs(9300, 5)
    assert counts.sum() == sum(len(TOK(d.text, add_special_tokens=False)["input_ids"]) for d in docs)
    assert counts[TOK.bos_token_id] == 0


def test_content_words_keep_whole_spaced_words_only():
    ids = torch.tensor(TOK(" calm Ann.", add_special_tokens=False)["input_ids"])
    kept = [TOK.decode([i]) for i in geo.content_words(TOK, ids).tolist()]
    assert kept == [" calm", " Ann"]


def test_feeling_tokens_hold_every_emotion_word_and_no_place():
    feeling = set(geo.feeling_tokens(TOK).tolist())
    assert set(geo.word_ids(TOK, storyworld.EMOTIONS).tolist()) <= feeling
    assert not set(geo.word_ids(TOK, ["park", "kitchen"]).tolist()) & feeling


def test_a_word_of_several_tokens_is_named():
    with pytest.raises(ValueError, match="tokens in this tokenizer"):
        geo.word_ids(TOK, ["calmxyzzy"])


def test_the_corpus_embedding_puts_tokens_that_share_contexts_together():
    class Doc:
        def __init__(self, text):
            self.text = text

    docs = [Doc(" Ann felt calm. Ann felt happy.")] * 5 + [Doc(" Bob held the kite. Bob held the ball.")] * 5
    words = (" calm", " happy", " kite", " ball", " felt", " held", " the", ".", " Ann", " Bob")
    ids = torch.tensor([TOK(w, add_special_tokens=False)["input_ids"][0] for w in words])
    emb = geo.ppmi_embedding(TOK, docs, ids, dim=4)
    sim = torch.nn.functional.normalize(emb, dim=-1) @ torch.nn.functional.normalize(emb, dim=-1).T
    assert sim[0, 1] > sim[0, 2] + 0.5 and sim[2, 3] > sim[1, 2] + 0.5  # feelings together, objects together


def test_neighbours_exclude_the_token_itself_and_agree_with_themselves():
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(3))
    nb = geo.nearest_neighbours(x, 5)
    assert not (nb == torch.arange(40)[:, None]).any()
    assert geo.shared_neighbours(x, 2 * x, 5) == 1.0


def test_lle_weights_sum_to_one_and_rebuild_a_point_inside_its_neighbours():
    corners = torch.eye(3)
    x = torch.cat([corners, corners.mean(0, keepdim=True)])  # the centre of three corners
    nb = torch.tensor([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    w = geo.lle_weights(x, nb, reg=1e-9)
    assert torch.allclose(w.sum(-1), torch.ones(4))
    assert torch.allclose(w[3], torch.full((3,), 1 / 3), atol=1e-4)
    y = torch.cat([corners, corners.mean(0, keepdim=True)]) @ rotation(3, 4)
    rebuilt = (w[3, :, None] * y[nb[3]]).sum(0)
    assert torch.allclose(rebuilt, y[3], atol=1e-4)


def test_rebuild_error_is_zero_when_exact_and_one_for_the_mean_row():
    y = torch.randn(10, 4, generator=torch.Generator().manual_seed(5))
    others = torch.tensor([[j for j in range(10) if j != i] for i in range(10)])
    assert geo.rebuild_error(y, torch.arange(10)[:, None], torch.ones(10, 1)) == 0.0
    mean_of_others = geo.rebuild_error(y, others, torch.full((10, 9), 1 / 9))
    assert mean_of_others > 1.0  # the mean of the other rows misses by more than the mean of all


def test_maps_recover_a_known_linear_map_and_score_it():
    g = torch.Generator().manual_seed(6)
    x = torch.linalg.qr(torch.randn(200, 6, generator=g)).Q * 10  # xᵀx = 100 I: Procrustes is then exact
    q = 2.0 * rotation(6, 7)[:, :4]  # a scaled semi-orthogonal map 6 → 4
    y = x @ q
    assert torch.allclose(geo.fit_procrustes(x, y), q, atol=1e-4)
    assert torch.allclose(geo.fit_ridge(x, y, 0.0), q, atol=1e-4)
    assert geo.r_squared(x @ q, y) == pytest.approx(1.0) and geo.retrieval(x @ q, y) == 1.0
    assert geo.r_squared(torch.zeros_like(y) + y.mean(0), y) == pytest.approx(0.0, abs=1e-9)
    shrunk = geo.fit_ridge(x, y, geo.ridge_penalty(x, 1.0))
    assert shrunk.norm() < q.norm()


def test_a_token_split_is_a_partition():
    train, test = geo.token_split(50, 0.2, seed=1)
    assert len(test) == 10 and sorted(torch.cat([train, test]).tolist()) == list(range(50))


def test_stream_alignment_is_perfect_for_a_scaled_copy_and_blind_to_the_mean():
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(8))
    t = rotation(5, 9)
    r2, cos = geo.stream_alignment(t, x + 10, 0.5 * x @ t - 3)
    assert r2 == pytest.approx(1.0) and cos == pytest.approx(1.0)


def test_transfer_gives_the_asked_length_and_the_angles_lie_in_the_plane():
    v = torch.randn(12, 6, generator=torch.Generator().manual_seed(10))
    out = geo.transfer(v, rotation(6, 11)[:, :3], norm=4.0, c=0.5)
    assert out.shape == (12, 3) and torch.allclose(out.norm(dim=-1), torch.full((12,), 2.0))
    u, w = torch.eye(4)[0], torch.eye(4)[1]
    theta = torch.linspace(0, 2 * math.pi, 13)[:-1]
    circle = torch.stack([torch.cos(theta), torch.sin(theta), torch.zeros(12), torch.zeros(12)], -1)
    angles, share = geo.angles_in_plane(circle, u, w)
    assert share == pytest.approx(1.0) and torch.allclose(torch.remainder(angles, 2 * math.pi), theta, atol=1e-5)


@pytest.fixture(scope="module")
def model():
    from utils import load_model

    return load_model("storyworld-attn2l", device="cpu")


def test_rows_training_never_moved_are_the_rebuilt_initialisation(model):
    trained, _ = geo.embedding_rows(model)
    init, _ = geo.initial_rows("storyworld-attn2l")
    other, _ = geo.initial_rows("storyworld-attn2l", seed_offset=1000)
    unmoved = (trained - init).abs().amax(-1) < 1e-3
    assert 300 < unmoved.sum() < len(trained)  # most never-seen rows are kept, the used ones moved
    assert not torch.allclose(init, other)
    assert TOK(" calm", add_special_tokens=False)["input_ids"][0] not in torch.nonzero(unmoved).flatten().tolist()


def test_the_logit_lens_of_an_unembedding_row_puts_its_token_first(model):
    rows = geo.lens_rows(model)
    calm = TOK(" calm", add_special_tokens=False)["input_ids"][0]
    among = torch.arange(1, len(rows))
    assert geo.top_tokens(rows, rows[calm], 1, among).item() == calm
