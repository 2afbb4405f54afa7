"""Feature dashboards: plain offline HTML that shows what it is given, escaped."""

import torch

from utils.pictures.dashboards import histogram_svg, latent_dashboard


def test_a_dashboard_shows_contexts_logit_effects_and_a_histogram():
    values = torch.tensor([0.0, 2.0, 0.0, 4.0])
    board = latent_dashboard(
        7,
        values,
        contexts=[([" the", " <b>", " song"], torch.tensor([0.0, 4.0, 1.0]), 1)],
        promoted=[(" sang", 1.5)],
        suppressed=[(" wept", -2.0)],
        title="repeats",
    )
    html = board._repr_html_()
    assert "latent 7" in html and "repeats" in html and "50.00% of 4 tokens" in html
    assert "&lt;b&gt;" in html and "<b>&" not in html  # tokens are escaped
    assert "+1.50" in html and "-2.00" in html and "<svg" in html
    assert "<script" not in html  # renders without JavaScript


def test_the_strongest_token_is_underlined_and_fully_shaded():
    board = latent_dashboard(0, torch.tensor([3.0]), [(["a", "b"], torch.tensor([0.0, 3.0]), 1)], [], [])
    assert "rgba(230,120,20,1.00);border-bottom" in board.html


def test_a_latent_that_never_fires_says_so():
    assert "never active" in histogram_svg(torch.tensor([]))
