"""The SAE metrics on inputs whose answers are known by hand."""

import pytest
import torch

from utils.metrics import saes as m


def test_l0_counts_active_latents_per_token():
    latents = torch.tensor([[0.0, 2.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert m.l0(latents) == pytest.approx(1.5)


def test_negative_latents_are_not_active():
    assert m.l0(torch.tensor([[-1.0, 0.0, 3.0]])) == 1


def test_explained_variance_is_one_for_a_perfect_reconstruction_and_zero_for_the_mean():
    x = torch.randn(100, 8)
    assert m.explained_variance(x, x) == pytest.approx(1.0)
    assert m.explained_variance(x, x.mean(0).expand_as(x)) == pytest.approx(0.0, abs=1e-6)


def test_explained_variance_of_half_the_signal_is_three_quarters():
    x = torch.randn(1000, 8)
    x = x - x.mean(0)
    assert m.explained_variance(x, x / 2) == pytest.approx(0.75)


def test_dead_and_dense_shares():
    # latent 0 fires on every token (dense), 1 on one in ten (not dense), 2 never (dead), 3 on half
    latents = torch.zeros(10, 4)
    latents[:, 0] = 1
    latents[0, 1] = 1
    latents[:5, 3] = 1
    assert m.dead_and_dense(latents) == (0.25, 0.5)


def test_loss_recovered_runs_from_zero_ablation_to_clean():
    assert m.loss_recovered(clean=1.0, spliced=1.0, zero=5.0) == 1.0
    assert m.loss_recovered(clean=1.0, spliced=5.0, zero=5.0) == 0.0
    assert m.loss_recovered(clean=1.0, spliced=2.0, zero=5.0) == pytest.approx(0.75)


def test_a_latent_that_is_the_label_is_a_perfect_detector():
    labels = torch.tensor([1, 0, 1, 0, 0], dtype=torch.bool)
    latents = torch.stack([labels.float() * 3, torch.ones(5), torch.zeros(5)], 1)
    s = m.detector_scores(latents, labels)
    assert s["f1"].tolist() == pytest.approx([1.0, 4 / 7, 0.0])  # 2·0.4·1 / 1.4
    assert s["precision"].tolist() == pytest.approx([1.0, 0.4, 0.0])
    assert s["recall"].tolist() == pytest.approx([1.0, 1.0, 0.0])


class _Halve(torch.nn.Module):
    def forward(self, x):
        return x / 2


def test_splice_hook_replaces_every_position_but_bos():
    act = torch.ones(2, 3, 4)
    out = m.splice_hook(_Halve())(act.clone())
    assert torch.equal(out[:, 0], act[:, 0])
    assert torch.equal(out[:, 1:], act[:, 1:] / 2)


def test_zero_hook_keeps_bos():
    out = m.zero_hook()(torch.ones(2, 3, 4))
    assert out[:, 0].eq(1).all() and out[:, 1:].eq(0).all()


def test_the_best_thresholded_latent_finds_the_latent_that_is_the_label_above_a_threshold():
    g = torch.Generator().manual_seed(0)
    labels = torch.rand(500, generator=g) < 0.2
    latents = torch.rand(500, 40, generator=g)  # every latent weakly active everywhere
    latents[labels, 7] += 2.0  # latent 7 is strong exactly on the label
    latent, cut, f1 = m.best_thresholded_latent(latents, labels)
    assert latent == 7 and f1 > 0.9 and 0.5 < cut < 2.5  # the cut is one of a grid of quantiles
    assert m.detector_scores(latents, labels)["f1"][7] < 0.5, "read as merely active, it looks poor"


def test_counts_by_story_add_up_hits_false_alarms_and_misses_per_story():
    pred = torch.tensor([True, True, False, True, False])
    truth = torch.tensor([True, False, True, True, False])
    story = torch.tensor([3, 3, 3, 5, 5])
    assert m.counts_by_story(pred, truth, story).tolist() == [[1, 1, 1], [1, 0, 0]]
    assert m.counts_by_story(pred, truth, story, n=6)[[3, 5]].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert m.f1_of_counts(torch.tensor([2.0, 1.0, 1.0])).item() == pytest.approx(2 / 3)


def test_bootstrap_gap_is_the_pooled_f1_difference_with_an_interval_around_it():
    perfect = torch.tensor([[3.0, 0, 0]] * 20)
    half = torch.tensor([[3.0, 3, 3]] * 10 + [[3.0, 0, 0]] * 10)
    gap, low, high = m.bootstrap_f1_gap(perfect, half, n=500)
    assert gap == pytest.approx(1 - m.f1_of_counts(half.sum(0)).item())
    assert low < gap < high and low > 0
    same = m.bootstrap_f1_gap(half, half, n=200)
    assert same == (0.0, 0.0, 0.0)


def test_length_groups_fill_batches_up_to_the_token_budget():
    from utils.metrics.common import length_groups

    assert list(length_groups([2, 3, 3, 5, 9], batch_tokens=10)) == [(0, 3), (3, 4), (4, 5)]  # 3 × 3 fits, 4 × 5 not
    assert list(length_groups([20], batch_tokens=10)) == [(0, 1)], "an over-long sequence still runs, alone"
    assert list(length_groups([], batch_tokens=10)) == []


def test_the_best_coordinate_finds_a_coordinate_that_marks_the_label_by_being_low():
    g = torch.Generator().manual_seed(0)
    labels = torch.rand(400, generator=g) < 0.3
    x = torch.randn(400, 12, generator=g)
    x[labels, 5] -= 4.0  # coordinate 5 is low exactly on the label: read upside down
    coordinate, sign, cut, f1 = m.best_coordinate(x, labels)
    assert (coordinate, sign) == (5, -1.0) and f1 > 0.9
    assert ((sign * x[:, coordinate] > cut) == labels).float().mean() > 0.95, "the rule it returns is the one scored"


def test_the_token_rule_fires_on_the_tokens_that_carry_the_label_and_never_on_unseen_ones():
    train_tokens = torch.tensor([1, 1, 2, 2, 2, 3, 3, 4])
    train_labels = torch.tensor([True, True, True, False, False, False, False, False])
    assert m.token_rule(train_tokens, train_labels, torch.tensor([1, 2, 3, 9])).tolist() == [True, False, False, False]


def test_the_token_rule_cannot_tell_two_copies_of_the_same_tokens_apart():
    train_tokens = torch.tensor([5, 6, 5, 6])
    train_labels = torch.tensor([False, False, True, True])  # the second copy
    fired = m.token_rule(train_tokens, train_labels, train_tokens)
    assert fired[:2].tolist() == fired[2:].tolist()


def test_auroc_by_column_is_one_for_a_perfect_column_a_half_for_a_constant_and_zero_reversed():
    labels = torch.tensor([True, True, False, False])
    scores = torch.tensor([[3.0, 1.0, 0.0], [2.0, 1.0, 1.0], [1.0, 1.0, 2.0], [0.0, 1.0, 3.0]])
    assert m.auroc_by_column(scores, labels).tolist() == pytest.approx([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="labelled and unlabelled"):
        m.auroc_by_column(scores, torch.ones(4, dtype=torch.bool))


def test_the_best_coordinate_finds_a_rare_label_that_a_quantile_grid_would_miss():
    g = torch.Generator().manual_seed(1)
    labels = torch.zeros(3000, dtype=torch.bool)
    labels[:15] = True  # half a percent of the rows
    x = torch.randn(3000, 6, generator=g)
    x[labels, 2] += 6.0
    coordinate, sign, cut, f1 = m.best_coordinate(x, labels)
    assert (coordinate, sign) == (2, 1.0) and f1 > 0.9
    assert f1 == pytest.approx(2 * ((x[:, 2] > cut) & labels).sum().item() / ((x[:, 2] > cut).sum() + 15).item())
