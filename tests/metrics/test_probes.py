"""Probes: the fitted linear map works on raw activations, standardisation folded in; story-level errors."""

import pytest
import torch

from utils.metrics import probes


def test_a_probe_separates_separable_classes_on_raw_unscaled_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, generator=g) * 4
    y = torch.arange(3).repeat_interleave(50)
    x = (centres[y] + torch.randn(150, 5, generator=g)) * torch.tensor([1, 10, 100, 0.1, 1.0]) + 7
    probe = probes.fit_probe(x, y, 3)
    with torch.no_grad():
        assert (probe(x).argmax(-1) == y).float().mean() == 1.0


def test_the_story_level_error_is_the_usual_one_with_one_row_per_story():
    g = torch.Generator().manual_seed(1)
    v = (torch.rand(40, generator=g) < 0.3).float()
    assert probes.story_standard_error(v, torch.arange(40)) == pytest.approx((v.std() / 40**0.5).item(), rel=1e-6)


def test_copies_of_a_row_within_its_story_add_no_information():
    g = torch.Generator().manual_seed(2)
    v, story = torch.rand(30, generator=g), torch.arange(30)
    once = probes.story_standard_error(v, story)
    five = probes.story_standard_error(v.repeat_interleave(5), story.repeat_interleave(5))
    assert five == pytest.approx(once, rel=1e-6)  # the token-level error would shrink by sqrt(5)


def test_a_story_level_error_needs_two_stories():
    with pytest.raises(ValueError, match="two stories"):
        probes.story_standard_error(torch.ones(5), torch.zeros(5, dtype=torch.long))
