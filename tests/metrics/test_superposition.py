"""The toy models of superposition and their measures, on weights whose answers are known by hand."""

import math

import pytest
import torch

from utils.metrics import superposition as sp


def polygon(k: int, length: float = 1.0) -> torch.Tensor:
    """``W`` ``[1, 2, k]``: k features at the corners of a regular polygon in the plane."""
    angles = torch.arange(k) * 2 * math.pi / k
    return length * torch.stack([angles.cos(), angles.sin()])[None]


def test_features_are_zero_with_the_given_sparsity_and_uniform_otherwise():
    x = sp.sample_features(torch.tensor([0.0, 0.9]), 4, 20_000, torch.Generator().manual_seed(0))
    active = (x > 0).float().mean((1, 2))
    assert active[0] == pytest.approx(1.0, abs=1e-3)
    assert active[1] == pytest.approx(0.1, abs=0.01)
    on = x[1][x[1] > 0]
    assert 0 <= on.min() and on.max() <= 1 and on.mean() == pytest.approx(0.5, abs=0.02)


def test_a_sparsity_per_feature_is_honoured():
    sparsity = torch.tensor([[0.0, 0.5, 0.99]])
    x = sp.sample_features(sparsity, 3, 40_000, torch.Generator().manual_seed(0))
    assert (x[0] > 0).float().mean(0).tolist() == pytest.approx([1.0, 0.5, 0.01], abs=0.01)


def test_the_forward_pass_is_relu_of_w_transpose_w_x_plus_b():
    g = torch.Generator().manual_seed(0)
    W, b, x = torch.randn(3, 2, 5, generator=g), torch.randn(3, 5, generator=g), torch.rand(3, 7, 5, generator=g)
    expected = torch.stack([torch.relu(x[i] @ W[i].T @ W[i] + b[i]) for i in range(3)])
    assert torch.allclose(sp.toy_forward(W, b, x), expected, atol=1e-6)
    relu_first = torch.stack([torch.relu(torch.relu(x[i] @ W[i].T) @ W[i] + b[i]) for i in range(3)])
    assert torch.allclose(sp.toy_forward(W, b, x, relu_hidden=True), relu_first, atol=1e-6)


def test_the_loss_weighs_each_feature_by_its_importance():
    x, x_hat = torch.ones(1, 4, 2), torch.zeros(1, 4, 2)
    assert sp.toy_loss(x, x_hat, torch.tensor([[1.0, 0.5]])).item() == pytest.approx(1.5)


def test_a_dimension_of_its_own_an_antipodal_pair_and_a_pentagon_have_dimensionality_one_half_and_two_fifths():
    own = torch.eye(3)[None]  # three features, three dimensions
    assert sp.feature_dimensionality(own)[0].tolist() == pytest.approx([1, 1, 1])
    assert sp.feature_dimensionality(polygon(2))[0].tolist() == pytest.approx([0.5, 0.5])
    assert sp.feature_dimensionality(polygon(5, 1.2))[0].tolist() == pytest.approx([0.4] * 5, abs=1e-5)


def test_a_dropped_feature_has_dimensionality_zero_and_is_not_represented():
    W = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # feature 1 has no direction
    assert sp.feature_dimensionality(W)[0].tolist() == pytest.approx([1.0, 0.0])
    assert sp.represented(W)[0].tolist() == [True, False]


def test_dimensions_per_feature_is_m_over_the_squared_frobenius_norm():
    assert sp.dimensions_per_feature(polygon(5)).item() == pytest.approx(2 / 5)
    assert sp.dimensions_per_feature(torch.eye(4)[None]).item() == pytest.approx(1.0)


def test_interference_is_zero_for_orthogonal_features_and_counts_the_others_projections():
    assert sp.interference(torch.eye(3)[None]).abs().max() < 1e-6
    assert sp.interference(polygon(2))[0].tolist() == pytest.approx([1.0, 1.0])


def test_the_gaps_of_a_regular_pentagon_are_72_degrees():
    gaps = sp.polygon_gaps(polygon(5))[0]
    assert gaps.tolist() == pytest.approx([72.0] * 5, abs=1e-3) and gaps.sum().item() == pytest.approx(360)


def test_the_phase_of_two_features_in_one_dimension():
    assert sp.phase(torch.tensor([1.0, -1.0])) == "both"
    assert sp.phase(torch.tensor([1.0, 1.0])) == "both, same side"
    assert sp.phase(torch.tensor([1.0, 0.1])) == "first only"
    assert sp.phase(torch.tensor([0.0, -1.0])) == "second only"
    assert sp.phase(torch.tensor([0.1, 0.2])) == "neither"


def test_a_neurons_top_share_tells_mono_from_polysemantic_neurons():
    W = torch.tensor([[[1.0, 0.0, 0.0], [0.7, 0.7, 0.0], [0.0, 0.0, 0.0]]])  # 3 neurons, 3 features
    assert sp.neuron_top_share(W)[0].tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_a_dropped_feature_does_not_make_a_neuron_polysemantic():
    W = torch.tensor([[[1.0, 0.3], [0.0, 0.2]]])  # feature 1 is dropped (its column is short)
    assert sp.neuron_top_share(W)[0].tolist() == pytest.approx([1.0, 0.0])


def test_mean_max_cosine_is_one_for_the_true_directions_in_any_order_and_lower_for_others():
    truth = torch.eye(4)
    assert sp.mean_max_cosine(truth[[2, 0, 3, 1]] * 3, truth) == pytest.approx(1.0)
    assert sp.max_cosines(truth[:2], truth).tolist() == pytest.approx([1, 1, 0, 0])
    assert sp.mean_max_cosine(-truth, truth) == pytest.approx(0.0)  # an SAE's latents are signed


def test_a_toy_model_packs_five_sparse_features_into_a_pentagon_and_keeps_two_dense_ones():
    sparsity = torch.tensor([0.0, 0.99])
    importance = (0.9 ** torch.arange(5.0))[None].repeat(2, 1)
    W, _ = sp.train_toy(sparsity, importance, 2, steps=2500, seed=0)
    kept = sp.represented(W)
    assert kept[0].tolist() == [True, True, False, False, False]
    assert kept[1].all()
    assert (sp.polygon_gaps(W[1:])[0] - 72).abs().max() < 8


def test_toy_saes_need_either_l1_coefficients_or_topk_sizes():
    def sample(batch, g):
        return torch.rand(batch, 3, generator=g)

    with pytest.raises(ValueError, match="either l1"):
        sp.train_toy_saes(sample, 3, 4)
    with pytest.raises(ValueError, match="either l1"):
        sp.train_toy_saes(sample, 3, 4, l1=[0.1], k=[1])


def test_a_topk_sae_finds_one_hot_features_and_keeps_k_latents():
    directions = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), dim=-1)

    def sample(batch, g):  # one feature at a time, of random size
        which = torch.randint(0, 6, (batch,), generator=g)
        return torch.rand(batch, 1, generator=g) * directions[which]

    sae = sp.train_toy_saes(sample, 4, 6, k=[1, 2], steps=1500, seed=0)
    assert sp.mean_max_cosine(sae.W_dec[0], directions) > 0.95
    latents = sp.sae_latents(sae, sample(500, torch.Generator().manual_seed(2)))
    assert ((latents > 0).sum(-1) <= torch.tensor([1, 2])[:, None]).all()
    assert sp.dead_latents(latents).shape == (2,)


def test_a_perfect_reconstruction_keeps_the_whole_length_and_misses_no_variance():
    eye = torch.eye(3)[None]
    sae = sp.ToySAE(eye.clone(), torch.zeros(1, 3), eye.clone(), torch.zeros(1, 3))
    x = torch.rand(50, 3)
    assert sp.length_kept(sae, x).item() == pytest.approx(1.0)
    assert sp.unexplained_variance(sae, x).item() == pytest.approx(0.0, abs=1e-6)


def test_a_decoder_at_half_length_keeps_half_the_length():
    eye = torch.eye(3)[None]
    sae = sp.ToySAE(eye.clone(), torch.zeros(1, 3), 0.5 * eye, torch.zeros(1, 3))
    assert sp.length_kept(sae, torch.rand(50, 3)).item() == pytest.approx(0.5)


def test_one_active_inputs_lie_along_one_direction_at_half_length_or_more():
    directions = torch.eye(4)
    x = sp.one_active(directions, 200, torch.Generator().manual_seed(0))
    assert ((x > 0).sum(-1) == 1).all() and x.max(-1).values.min() >= 0.5 and x.max() <= 1


def test_the_linear_control_has_no_relu_on_its_output():
    W, b, x = torch.ones(1, 1, 2), -torch.ones(1, 2), torch.zeros(1, 3, 2)
    assert (sp.toy_forward(W, b, x, linear=True) == -1).all() and (sp.toy_forward(W, b, x) == 0).all()


def test_training_runs_on_one_thread_and_gives_the_others_back():
    before = torch.get_num_threads()
    seen = []

    def sample(batch, g):
        seen.append(torch.get_num_threads())
        return torch.rand(batch, 3, generator=g)

    sp.train_toy_saes(sample, 3, 4, l1=[0.1], steps=2)
    assert seen == [1, 1] and torch.get_num_threads() == before


def test_an_input_no_latent_fires_on_counts_as_lost_length_unless_fired_only():
    eye = torch.eye(2)[None]
    sae = sp.ToySAE(eye.clone(), torch.tensor([[0.0, -10.0]]), 0.5 * eye, torch.zeros(1, 2))  # latent 1 never fires
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert sp.none_fires(sae, x).item() == pytest.approx(0.5)
    assert sp.length_kept(sae, x).item() == pytest.approx(0.25)
    assert sp.length_kept(sae, x, fired_only=True).item() == pytest.approx(0.5)


def test_without_a_bias_the_bias_stays_zero_and_a_given_start_is_used():
    start = torch.tensor([[[1.0, -1.0]]])
    W, b = sp.train_toy(torch.tensor([0.9]), torch.ones(1, 2), 1, steps=5, seed=0, bias=False, init=start)
    assert (b == 0).all() and (W - start).abs().max() < 0.1
    _, b = sp.train_toy(torch.tensor([0.9]), torch.ones(1, 2), 1, steps=5, seed=0)
    assert (b != 0).any()


def test_train_toy_runs_the_forward_and_sampler_it_is_given():
    calls = {"forward": 0, "sample": 0}

    def forward(W, b, x, importance):
        calls["forward"] += 1
        return sp.toy_forward_and_loss(W, b, x, importance)

    def sample(sparsity, n, batch, generator):
        calls["sample"] += 1
        return sp.sample_features(sparsity, n, batch, generator)

    W, b = sp.train_toy(torch.tensor([0.5]), torch.ones(1, 3), 2, forward, sample, steps=7, batch=16, seed=0)
    assert calls == {"forward": 7, "sample": 7} and W.shape == (1, 2, 3) and not W.requires_grad


def test_the_variants_are_the_forward_passes_they_name():
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(2, 2, 4, generator=g), torch.randn(2, 4, generator=g)
    x, imp = torch.rand(2, 8, 4, generator=g), torch.ones(2, 4)
    assert torch.equal(sp.forward_variant(linear=True)(W, b, x, imp)[0], sp.toy_forward(W, b, x, linear=True))
    assert torch.equal(sp.forward_variant(relu_hidden=True)(W, b, x, imp)[0], sp.toy_forward(W, b, x, relu_hidden=True))
    no_bias = sp.forward_variant(bias=False)(W, b, x, imp)[0]
    assert torch.equal(no_bias, sp.toy_forward(W, torch.zeros_like(b), x))
    assert sp.forward_variant() is sp.toy_forward_and_loss


def test_correlated_features_share_only_their_mask():
    x = sp.correlated_features(torch.tensor([0.5, 0.9]), 4, 2000, torch.Generator().manual_seed(0))
    assert torch.equal(x[..., 0] > 0, x[..., 1] > 0)
    assert not torch.allclose(x[..., 0], x[..., 1])
    assert abs((x[1] > 0).float().mean().item() - 0.1) < 0.02


def test_pair_angle_is_in_degrees_and_safe_at_0_and_180():
    W = torch.tensor([[[1.0, -2.0, 0.0, 3.0], [0.0, 0.0, 1.0, 0.0]]])
    assert sp.pair_angle(W, 0, 1).item() == pytest.approx(180.0)
    assert sp.pair_angle(W, 0, 2).item() == pytest.approx(90.0)
    assert sp.pair_angle(W, 0, 3).item() == pytest.approx(0.0, abs=1e-3)


def test_sae_loss_weighs_the_penalty_by_the_decoder_rows_lengths():
    eye = torch.eye(2)[None]
    sae = sp.ToySAE(eye.clone(), torch.zeros(1, 2), 2 * eye, torch.zeros(1, 2))
    x = torch.tensor([[1.0, 0.0]])
    # latents (1, 0); reconstruction (2, 0): squared error 1; penalty 1 × ‖row 0‖ = 2
    assert sp.sae_loss(sae, x, torch.tensor([0.5])).item() == pytest.approx(1.0 + 0.5 * 2.0)


def test_describe_2d_says_when_no_feature_has_a_direction_of_its_own():
    pentagon = torch.stack([torch.cos(torch.arange(5) * 1.2566), torch.sin(torch.arange(5) * 1.2566)])
    assert sp.describe_2d(pentagon).startswith("no feature has a direction of its own")
    two = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert sp.describe_2d(two).startswith("features [0, 1] have a direction of their own")


def test_score_saes_matches_the_checks_scores_of_hand_built_saes():
    from utils.checks import lesson10_superposition as c

    g = torch.Generator().manual_seed(5)
    truth = torch.randn(6, 5, generator=g)
    saes = c._check_saes(g, truth)
    h = sp.sample_features(torch.tensor([0.6]), 6, 300, g)[0] @ truth
    ours, checks = sp.score_saes(saes, h, truth), c._scores(saes, h, truth)
    assert list(ours) == list(checks)
    for label in checks:
        assert ours[label] == pytest.approx(checks[label], abs=1e-6)
    unit = sp.ToySAE(torch.eye(6)[None, :5], torch.zeros(1, 6), torch.eye(6)[None, :, :5], torch.zeros(1, 5), None)
    score = sp.score_saes({"identity": unit}, torch.rand(10, 5), torch.eye(5))["identity"]
    assert score["mmc"] == pytest.approx(1.0) and score["found"] == 5 and isinstance(score["found"], int)


def test_resampling_restarts_only_the_dead_latents_and_clears_their_adam_moments():
    g = torch.Generator().manual_seed(3)
    W_dec = torch.nn.functional.normalize(torch.randn(1, 6, 4, generator=g), dim=-1)
    sae = sp.ToySAE(W_dec.transpose(1, 2).clone(), torch.zeros(1, 6), W_dec.clone(), torch.zeros(1, 4), None)
    sae.b_enc[0, [1, 4]] = -100.0  # latents 1 and 4 can never fire
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=1e-3)
    sp.sae_loss(sae, torch.randn(64, 4, generator=g), torch.tensor([0.1])).sum().backward()
    opt.step()
    before = {name: getattr(sae, name).detach().clone() for name in ("W_enc", "b_enc", "W_dec")}
    with torch.no_grad():
        counts = sp.resample_dead(sae, torch.randn(256, 4, generator=g), opt, g)
    assert counts.tolist() == [2]
    alive = [0, 2, 3, 5]
    assert torch.equal(sae.W_dec[0, alive], before["W_dec"][0, alive]), "a live latent is left as it was"
    assert torch.equal(sae.W_enc[0][:, alive], before["W_enc"][0][:, alive])
    assert torch.allclose(sae.W_dec[0, [1, 4]].norm(dim=-1), torch.ones(2)), "a new decoder row has unit length"
    assert torch.equal(sae.W_enc[0][:, [1, 4]], sae.W_dec[0, [1, 4]].T), "its encoder column is the same direction"
    assert sae.b_enc[0, [1, 4]].tolist() == [0.0, 0.0]
    for moment in ("exp_avg", "exp_avg_sq"):
        assert opt.state[sae.W_dec][moment][0, [1, 4]].abs().sum() == 0
        assert opt.state[sae.W_dec][moment][0, alive].abs().sum() > 0
    fired = (sp.sae_latents(sae, torch.randn(256, 4, generator=g)) > 0).sum(1)[0]
    assert fired[[1, 4]].min() > 0, "a resampled latent fires again"


def test_resampling_leaves_the_training_batches_as_they_were():
    seen = {}

    def sample(batch, generator, key):
        x = torch.rand(batch, 3, generator=generator)
        if batch == 32:
            seen.setdefault(key, []).append(x)
        return x

    for key, at in (("plain", ()), ("resampled", (2, 4))):
        sp.train_toy_saes(lambda b, g, key=key: sample(b, g, key), 3, 12, k=[1], steps=6, batch=32, resample_at=at)
    assert all(torch.equal(a, b) for a, b in zip(seen["plain"], seen["resampled"], strict=True))


def test_the_hand_built_absolute_value_model_computes_its_features_and_nothing_else():
    W_in, W_out, b = sp.two_neurons_each(6, 4, sparsity=0.9)
    moves = sp.half_responses(W_in, W_out, b)[0]  # [+1 or -1, feature]
    assert moves[:, :2].tolist() == [[1.0, 1.0], [1.0, 1.0]] and moves[:, 2:].abs().sum() == 0
    x = torch.tensor([[[0.5, -0.25, 0.0, 0.0, 0.0, 0.0]]])
    assert sp.abs_forward(W_in, W_out, b, x)[0, 0].tolist() == pytest.approx([0.5, 0.25] + [0.05] * 4)
