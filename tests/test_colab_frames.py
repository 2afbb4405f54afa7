"""Pictures as Colab shows them: every output in a sandboxed frame of its own.

Colab draws each cell's output in its own sandboxed iframe, so a script that one output loads (circuitsvis's bundle,
plotly.js) is not there for the next. This harness runs a small notebook in a real kernel with the course set up as
on Colab (a stand-in ``google.colab`` whose widget manager is turned on), serves each output's HTML as a page of its
own shown in an iframe with ``sandbox="allow-scripts"`` (no shared origin, as in Colab), and opens the notebook's page
in headless Chromium. An attention picture in a later cell must draw, not only the first; a plotly figure must draw
(plotly.js comes from its CDN on Colab: the test answers that address from the installed plotly, as the network
would); an explorer, a cell's last value, must carry the widget-manager metadata Colab reads to draw it (Colab adds it
itself only to outputs sent with ``display``), and its static preview must show in its frame. Colab's own widget
manager cannot run offline, so the live widget itself is not drawn here. Skipped, with the reason, only where no
Chromium is installed.
"""

import base64
from pathlib import Path

import nbformat
import plotly
import pytest

from tests.conftest import CHROMIUM
from utils.paths import ROOT
from utils.pictures import plotting

ARTIFACTS = ROOT / "test-artifacts"
MANAGER_URL = "https://ssl.gstatic.com/colaboratory-static/widgets/colab-cdn-widget-manager/manager.min.js"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

SETUP = f"""
import sys, types
colab = types.ModuleType("google.colab")
output = types.ModuleType("google.colab.output")
output._widgets = types.SimpleNamespace(_installed_url=None)
def enable_custom_widget_manager():
    output._widgets._installed_url = {MANAGER_URL!r}
output.enable_custom_widget_manager = enable_custom_widget_manager
colab.output = output
sys.modules.update({{"google": types.ModuleType("google"), "google.colab": colab, "google.colab.output": output}})
sys.path.insert(0, {str(ROOT)!r})
import torch, ipywidgets as widgets
from utils.pictures import plotting
output.enable_custom_widget_manager()  # what the course's setup cell does on Colab
plotting.reset_session()
plotting.configure(colab=True)
def pattern(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(2, 6, 6, generator=g).masked_fill(torch.ones(6, 6).triu(1).bool(), -1e9), -1)
"""
CELLS = [
    SETUP,
    "plotting.attention_heads(pattern(0), [f'a{i}' for i in range(6)])",  # the kernel's first picture
    "plotting.attention_heads(pattern(1), [f'b{i}' for i in range(6)])",  # a later cell's
    "plotting.heatmap(torch.rand(3, 3), title='a later heatmap', xlabel='x', ylabel='y', zrange=(0, 1))",
    "plotting.with_fallback(widgets.IntSlider(value=3, description='layer'),"
    " plotting.line([1, 2, 3], title='t', xlabel='x', ylabel='y'), 'slider explorer')",
]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    from utils.course.kernel_client import CourseNotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    folder = tmp_path_factory.mktemp("colab")
    CourseNotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    return [cell.outputs for cell in nb.cells]


def write_frames(outputs, folder: Path) -> Path:
    """Each output's HTML as a page of its own, shown in a sandboxed frame (scripts allowed, no shared origin), as
    Colab lays a notebook out; returns the notebook's page."""
    frames = []
    for index, cell_outputs in enumerate(outputs):
        for k, output in enumerate(cell_outputs):
            body = output.get("data", {}).get("text/html")
            if body:
                name = f"cell{index}-{k}.html"
                (folder / name).write_text(f"<!doctype html><html><body>{body}</body></html>", encoding="utf-8")
                frames.append(
                    f'<iframe id="cell{index}" sandbox="allow-scripts" src="{name}" style="width:900px;height:520px">'
                    "</iframe>"
                )
    page = folder / "notebook.html"
    page.write_text("<!doctype html><html><body>" + "\n".join(frames) + "</body></html>", encoding="utf-8")
    return page


def test_on_colab_each_attention_picture_carries_the_circuitsvis_script():
    pattern = [[[1.0, 0.0], [0.5, 0.5]]]
    try:
        plotting.reset_session()
        plotting.configure(colab=True)
        first, later = (plotting.attention_heads(pattern, ["a", "b"])._repr_html_() for _ in range(2))
        plotting.configure(colab=False)
        plotting.reset_session()
        once, again = (plotting.attention_heads(pattern, ["a", "b"])._repr_html_() for _ in range(2))
    finally:
        plotting.configure(colab=False)
        plotting.reset_session()
    assert "DecompressionStream" in first and "DecompressionStream" in later
    assert "DecompressionStream" in once and "DecompressionStream" not in again  # one page shares one script


def test_an_explorer_carries_colabs_widget_manager_only_on_colab(monkeypatch):
    import sys
    import types

    import ipywidgets as widgets

    explorer = plotting.with_fallback(widgets.IntSlider(), "AAAA", "x")
    assert isinstance(explorer._repr_mimebundle_(), dict)  # off Colab: the bundle alone
    output = types.SimpleNamespace(_widgets=types.SimpleNamespace(_installed_url=MANAGER_URL))
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    monkeypatch.setitem(plotting._state, "colab", True)
    data, metadata = explorer._repr_mimebundle_()
    assert plotting.WIDGET_VIEW in data and "text/html" in data
    assert metadata == {plotting.WIDGET_VIEW: {"colab": {"custom_widget_manager": {"url": MANAGER_URL}}}}
    output._widgets._installed_url = None  # the manager not turned on: nothing to point at
    assert isinstance(explorer._repr_mimebundle_(), dict)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")
def test_pictures_in_later_cells_draw_in_colabs_sandboxed_frames(outputs, tmp_path, serving, chromium):
    explorer = [o for o in outputs[4] if plotting.WIDGET_VIEW in o.get("data", {})]
    assert len(explorer) == 1 and explorer[0].output_type == "execute_result"
    assert explorer[0].metadata[plotting.WIDGET_VIEW]["colab"]["custom_widget_manager"]["url"] == MANAGER_URL

    notebook = write_frames(outputs, tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    errors, elsewhere = [], []
    with serving(tmp_path) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1000, "height": 2800})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route(
            "https://cdn.plot.ly/**",
            lambda route: route.fulfill(
                body=PLOTLY_JS.read_bytes(),
                content_type="application/javascript",
                headers={"Access-Control-Allow-Origin": "*"},  # the CDN's answer to a crossorigin script
            ),
        )
        page.route(
            lambda url: not url.startswith((base, "data:", "about:", "https://cdn.plot.ly/")),
            lambda route: (elsewhere.append(route.request.url), route.abort()),
        )
        page.goto(f"{base}/{notebook.name}")
        frames = {cell: page.frame_locator(f"#cell{cell}") for cell in (1, 2, 3, 4)}
        for cell in (1, 2):  # the first picture and the later one, each in a frame that shares nothing
            frames[cell].locator(".course-cv svg, .course-cv canvas, .course-cv div div").first.wait_for(timeout=30_000)
            drawn = frames[cell].locator(".course-cv *").count()
            preview_left = frames[cell].locator(".course-cv img").count()
            assert drawn > 20 and preview_left == 0, (cell, drawn, preview_left)
        frames[3].locator(".js-plotly-plot .main-svg").first.wait_for(timeout=30_000)
        preview = frames[4].locator("img")
        preview.wait_for(timeout=10_000)
        assert preview.evaluate("i => i.complete && i.naturalWidth") > 0
        page.screenshot(path=str(ARTIFACTS / "colab-frames.png"), full_page=True)
    assert not errors, errors
    assert not elsewhere, elsewhere
    assert base64.b64decode(explorer[0].data["text/html"].split("base64,")[1].split('"')[0])[:4] == b"\x89PNG"
