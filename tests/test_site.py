"""The site the course is read on (``make site``): built offline from the executed lessons, then opened from disk in
headless Chromium, as a reader would open it, with the network closed to the page.

A lesson's pictures load, its attention picture draws, a glossary link lands on its entry, the search finds a
lesson, and no page logs a JavaScript error. Skipped, with the reason, only where no Chromium is installed
(``.ci/run`` installs Debian's).
"""

import re

import nbformat
import pytest

from tests.conftest import CHROMIUM
from utils.course import site
from utils.paths import ROOT

ARTIFACTS = ROOT / "test-artifacts"
LESSON = "01_induction_heads"
REPOSITORY = "https://github.com/example/handson-mechinterp"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return site.build(tmp_path_factory.mktemp("site") / "html", repository=REPOSITORY).parent  # the html folder


def test_a_widget_explorer_shows_its_static_preview_and_a_progress_bar_is_dropped():
    widget = "application/vnd.jupyter.widget-view+json"
    preview = '<img alt="explorer" src="data:image/png;base64,AAAA">'
    nb = nbformat.v4.new_notebook(metadata={"widgets": {"state": {}}})
    cell = nbformat.v4.new_code_cell("explorer")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={widget: {"model_id": "a"}, "text/plain": "probe:   0%|"}),
        nbformat.v4.new_output("execute_result", data={widget: {"model_id": "b"}, "text/html": preview}),
    ]
    nb.cells = [cell]
    page = site._lesson_for_a_page(nb)
    assert "widgets" not in page.metadata
    assert [dict(o.data) for o in page.cells[0].outputs] == [{"text/html": preview}]


def test_links_are_rewritten_for_the_site(tmp_path):
    page = tmp_path / "notebooks" / "01_x.ipynb"
    page.parent.mkdir()
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    (tmp_path / "docs" / "figures" / "README.md").write_text("# Figures\n")
    text = (
        "A [residual stream](../docs/glossary.md#residual-stream), the [worked lesson](../solutions/01_x.ipynb), "
        "[the figures](../docs/figures/), [`scripts/`](../scripts/) and [a paper](https://arxiv.org/abs/1)."
    )
    assert site._page_text(text, page) == (
        'A <a href="../docs/glossary.html#residual-stream">residual stream</a>, the [worked lesson]'
        "(../notebooks/01_x.ipynb), [the figures](../docs/figures/README.md), `scripts/` and "
        "[a paper](https://arxiv.org/abs/1)."
    )


def test_the_start_pages_mermaid_graph_becomes_a_pointer_to_the_lesson_table(tmp_path):
    text = "Graph:\n\n```mermaid\ngraph LR\n    A --> B\n```\n\n| lesson |\n"
    out = site._page_text(text, tmp_path / "README.md")
    assert "mermaid" not in out and "the table below gives each lesson's prerequisites" in out


def test_the_site_has_every_lesson_the_start_page_and_the_reference_pages(built):
    html = built
    for lesson in sorted((ROOT / "solutions").glob("[0-9A-Z][0-9]_*.ipynb")):
        assert (html / "notebooks" / f"{lesson.stem}.html").is_file(), lesson.name
    for page in ("notebooks/README", "docs/glossary", "docs/papers", "docs/facilitator/README", "docs/workshop"):
        assert (html / f"{page}.html").is_file(), page
    index = (html / "index.html").read_text(encoding="utf-8")
    assert f"notebooks/{LESSON}.html" in index and "search" in index.lower()
    lesson = (html / "notebooks" / f"{LESSON}.html").read_text(encoding="utf-8")
    colab = f"https://colab.research.google.com/github/example/handson-mechinterp/blob/main/notebooks/{LESSON}.ipynb"
    assert colab in lesson, "a lesson's 'Open in Colab' button opens its exercise notebook"


def test_open_in_colab_buttons_need_a_github_address():
    with pytest.raises(ValueError, match="Colab opens notebooks from GitHub"):
        site.repository_settings("https://example.org/course")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")
def test_a_lessons_pictures_a_glossary_link_and_the_search_work_in_a_browser(built, serving, chromium):
    errors, requests = [], []
    ARTIFACTS.mkdir(exist_ok=True)
    with serving(built) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{base}/notebooks/{LESSON}.html")
        page.wait_for_load_state("load")
        # Every picture on the page has loaded and has a size (a broken image has naturalWidth 0).
        sizes = page.evaluate("[...document.images].map(i => [i.alt, i.complete && i.naturalWidth])")
        assert len(sizes) >= 10, sizes
        assert all(width for _, width in sizes), [alt for alt, width in sizes if not width]
        # The attention picture draws from the script embedded in the page (no network): more than its preview.
        page.wait_for_function(
            "document.querySelector('.course-cv') && !document.querySelector('.course-cv img')", timeout=30_000
        )
        assert page.evaluate("document.querySelector('.course-cv').querySelectorAll('*').length") > 20
        page.screenshot(path=str(ARTIFACTS / "site-lesson.png"))
        # A glossary link lands on its entry.
        link = page.query_selector("a[href*='glossary.html#']")
        anchor = link.get_attribute("href").split("#", 1)[1]
        link.click()
        page.wait_for_load_state("load")
        assert page.url.endswith(f"docs/glossary.html#{anchor}"), page.url
        assert page.evaluate(f"!!document.getElementById({anchor!r})"), anchor
        # The search box finds the lesson, from the index the build wrote.
        page.goto(f"{base}/search.html?q=induction")
        page.wait_for_selector("#search-results li", timeout=30_000)
        found = page.inner_text("#search-results")
        page.screenshot(path=str(ARTIFACTS / "site-search.png"))
    assert re.search(r"Induction heads", found), found[:500]
    assert not errors, errors
    assert not [u for u in requests if not u.startswith((base, "data:"))], "the site fetched from elsewhere"
