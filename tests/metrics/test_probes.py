"""Probes: the fitted linear map works on raw activations, standardisation folded in."""

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
