"""Pictures render offline, carry static fallbacks and stay small."""

import base64
import json
import re

import pytest
import torch

from utils.pictures import plotting


@pytest.fixture(autouse=True)
def fresh_session():
    plotting.reset_session()


def pattern(n=6, heads=2):
    return torch.softmax(torch.randn(heads, n, n).masked_fill(torch.ones(n, n).triu(1).bool(), -1e9), -1)


def test_first_picture_carries_the_bundle_once_and_later_ones_do_not():
    toks = [f"t{i}" for i in range(6)]
    first = plotting.attention_heads(pattern(), toks)._repr_html_()
    second = plotting.attention_heads(pattern(), toks)._repr_html_()
    assert "DecompressionStream" in first and "DecompressionStream" not in second
    assert len(second) < 60_000 < len(first) < 700_000


def test_attention_picture_never_points_at_a_cdn_or_probes_the_internet(monkeypatch):
    import circuitsvis.utils.render as r

    monkeypatch.setattr(r, "internet_on", lambda: pytest.fail("internet probe"))
    html = plotting.attention_heads(pattern(), [f"t{i}" for i in range(6)])._repr_html_()
    assert "unpkg.com" not in html and "http" not in html.replace("http-equiv", "")


def test_attention_picture_has_a_static_png_inside_its_html():
    pic = plotting.attention_heads(pattern(), [f"t{i}" for i in range(6)])
    html = pic._repr_html_()
    m = re.search(r'src="data:image/png;base64,([^"]+)"', html)
    assert m and base64.b64decode(m.group(1)).startswith(b"\x89PNG")
    assert pic._repr_png_().startswith(b"\x89PNG")


def test_a_token_cannot_end_the_pictures_script():
    tokens = ["</script><img src=x onerror=alert(1)>", "a & b", "<!--", "t3", "t4", "t5"]
    html = plotting.attention_heads(pattern(), tokens)._repr_html_()
    script = html.split('class="course-cv"', 1)[1]
    assert script.count("</script>") == 1 and "<img src=x" not in script and "<!--" not in script
    props = re.search(r"CircuitsVis\.AttentionHeads,(\{.*\})\);\}", script).group(1)
    assert json.loads(props)["tokens"] == tokens, "the browser still reads the tokens as they were"


def test_attention_picture_rejects_mismatched_tokens():
    with pytest.raises(ValueError, match="6 positions but 5 tokens"):
        plotting.attention_heads(pattern(), ["a"] * 5)


def test_plotly_figures_carry_a_png_fallback_and_labelled_axes():
    fig = plotting.heatmap(torch.randn(3, 4), title="scores", xlabel="head", ylabel="layer")
    bundle = fig._repr_mimebundle_()
    assert "image/png" not in bundle, "jupyterlab-plotly would show the PNG instead of the plot"
    png = re.search(r'src="data:image/png;base64,([^"]+)"', bundle["text/html"]).group(1)
    assert base64.b64decode(png).startswith(b"\x89PNG")
    layout = bundle["application/vnd.plotly.v1+json"]["layout"]
    assert layout["xaxis"]["title"]["text"] == "head" and layout["yaxis"]["title"]["text"] == "layer"
    lines = plotting.line({"a": [1, 2], "b": [2, 1]}, title="t", xlabel="x", ylabel="y")
    assert len(lines._repr_mimebundle_()["application/vnd.plotly.v1+json"]["data"]) == 2


def test_curves_draw_each_line_on_its_own_x_values_with_a_png_fallback():
    fig = plotting.curves(
        {"after L2": ([0.1, 0.5, 2.0], [0.2, 0.3, 0.3]), "after L3": ([0.1, 0.6], [0.9, 1.0])},
        title="trade-off",
        xlabel="cost",
        ylabel="effect",
        labels={"after L3": ["c=0.25", "c=1"]},
    )
    bundle = fig._repr_mimebundle_()
    data = bundle["application/vnd.plotly.v1+json"]["data"]
    assert len(data) == 2
    assert list(fig.fig.data[0].x) == [0.1, 0.5, 2.0] and list(fig.fig.data[1].x) == [0.1, 0.6]
    assert data[1]["text"] == ["c=0.25", "c=1"] and "text" not in data[0]
    png = re.search(r'src="data:image/png;base64,([^"]+)"', bundle["text/html"]).group(1)
    assert base64.b64decode(png).startswith(b"\x89PNG")


def test_widget_fallback_adds_a_static_image():
    import ipywidgets as w

    fig = plotting.line([1, 2, 3], title="t", xlabel="x", ylabel="y")
    bundle = plotting.with_fallback(w.IntSlider(), fig, "slider")._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "data:image/png" in bundle["text/html"]


def test_a_heatmap_of_scores_is_drawn_on_the_fixed_range_0_to_1_so_a_small_score_stays_pale():
    scores = torch.tensor([[0.03, 0.01], [0.02, 0.0]])
    trace = plotting.heatmap(scores, title="scores", xlabel="head", ylabel="layer").fig.data[0]
    assert (trace.zmin, trace.zmax) == (0.0, 1.0)
    other = plotting.heatmap(scores * 100, title="not scores", xlabel="head", ylabel="layer").fig.data[0]
    assert other.zmin is None and other.zmax is None, "values beyond 1 keep the automatic range"
    chosen = plotting.heatmap(scores, title="chosen", xlabel="x", ylabel="y", zrange=(0.0, 0.05)).fig.data[0]
    assert (chosen.zmin, chosen.zmax) == (0.0, 0.05)
    diverging = plotting.heatmap(scores - 0.01, title="diverging", xlabel="x", ylabel="y", zmid=0.0).fig.data[0]
    assert diverging.zmin is None and diverging.zmid == 0.0


def test_static_pictures_are_drawn_at_72_dpi_unless_a_resolution_is_asked_for(monkeypatch):
    monkeypatch.delenv(plotting.FIGURE_DPI_ENV, raising=False)
    assert plotting.figure_dpi() == 72
    monkeypatch.setenv(plotting.FIGURE_DPI_ENV, "200")
    assert plotting.figure_dpi() == 200
    for bad in ("high", "2000", "-5"):
        monkeypatch.setenv(plotting.FIGURE_DPI_ENV, bad)
        with pytest.raises(ValueError, match="COURSE_FIGURE_DPI=.* is not a resolution: give dots per inch, 50 to 600"):
            plotting.figure_dpi()
