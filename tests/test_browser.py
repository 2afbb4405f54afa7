"""Real-browser test: JupyterLab on loopback, headless Debian Chromium driven by Playwright.

Opens every executed lesson and asserts that its circuitsvis attention picture (where it has
one), a plotly figure and an ipywidgets widget render (not blank), with no JavaScript error in
the console and no pop-up over them. A screenshot of each is kept in ``test-artifacts/``. With a live kernel, a
widget's slider redraws its picture; and an exercise notebook opened and left to autosave
keeps every byte. Skipped, with the reason, only where no Chromium is installed (``.ci/run``
installs Debian's).

The server runs with the course's JupyterLab settings, which ``make setup`` installs into the
environment (``scripts/jupyterlab-overrides.json``), and a short autosave interval.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from utils.course import notebooks as nbs
from utils.paths import ROOT

ARTIFACTS = ROOT / "test-artifacts"
COURSE_SETTINGS = Path(sys.prefix, "share", "jupyter", "lab", "settings", "overrides.d", "handson-mechinterp.json")
AUTOSAVE_S = 2
NEWS_POPUP = "official Jupyter news"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LESSONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")

FIXTURE = """
import torch, ipywidgets as widgets
from utils.pictures import plotting
plotting.reset_session()
p = torch.softmax(torch.randn(2, 6, 6).masked_fill(torch.ones(6, 6).triu(1).bool(), -1e9), -1)
display(plotting.attention_heads(p, [f"tok{i}" for i in range(6)]))
display(plotting.heatmap(torch.randn(3, 3), title="fixture heatmap", xlabel="x", ylabel="y"))
display(plotting.with_fallback(widgets.IntSlider(value=3, description="layer"),
        plotting.line([1, 2, 3], title="t", xlabel="x", ylabel="y"), "slider"))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving a temporary folder."""
    folder = tmp_path_factory.mktemp("lab")
    assert COURSE_SETTINGS.exists(), f"make setup installs the course's JupyterLab settings ({COURSE_SETTINGS})"
    docmanager = folder / ".config" / "lab" / "user-settings" / "@jupyterlab" / "docmanager-extension"
    docmanager.mkdir(parents=True)
    (docmanager / "plugin.jupyterlab-settings").write_text(json.dumps({"autosaveInterval": AUTOSAVE_S}))
    port, token = free_port(), uuid.uuid4().hex
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(folder / ".config"),
        JUPYTER_DATA_DIR=str(folder / ".data"),
        JUPYTER_RUNTIME_DIR=str(folder / ".runtime"),
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={folder}",
            "--LabApp.news_url=",
            "--ServerApp.disable_check_xsrf=True",
            "--LabServerApp.collaborative=False",
            "--LabApp.expose_app_in_browser=True",
        ],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start within 60 s")
    yield {"folder": folder, "url": f"http://127.0.0.1:{port}", "token": token, "env": env}
    proc.terminate()
    proc.wait(timeout=20)


def trusted_copy(lab, nb, name):
    path = lab["folder"] / name
    nbformat.write(nb, path)
    subprocess.run(
        [sys.executable, "-m", "jupyter", "trust", str(path)], env=lab["env"], check=True, capture_output=True
    )
    return name


def launch(p):
    return p.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )


def open_page(browser, lab, name, errors):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    # A fresh workspace: nothing but this notebook is open.
    page.goto(f"{lab['url']}/lab/workspaces/{uuid.uuid4().hex[:8]}/tree/{name}?reset&token={lab['token']}")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    return page


def page_errors(errors):
    # The closed network refuses some of Chromium's own background requests; those are not the page's.
    return [e for e in errors if "net::ERR" not in e and "Failed to load resource" not in e]


def wait_for_idle_kernel(page):
    page.wait_for_function(
        "window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
        timeout=90_000,
    )


def open_in_browser(lab, name, shot, circuitsvis=True, news=False):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    errors = []
    with sync_playwright() as p:
        browser = launch(p)
        page = open_page(browser, lab, name, errors)
        result = {}
        if circuitsvis:
            page.wait_for_function(
                "document.querySelector('.course-cv') && !document.querySelector('.course-cv img')", timeout=60_000
            )
            cv = page.query_selector(".course-cv")
            cv.scroll_into_view_if_needed()
            result["circuitsvis_children"] = page.evaluate(
                "document.querySelector('.course-cv').querySelectorAll('*').length"
            )
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
        result["plotly_figures"] = page.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length")
        page.wait_for_selector(".jupyter-widgets:visible", timeout=60_000)  # hidden closed progress bars come first
        result["widgets"] = page.evaluate("document.querySelectorAll('.jupyter-widgets').length")
        wait_for_idle_kernel(page)
        if news:  # JupyterLab asks about the news a moment after it starts (the fixture's test looks once)
            page.wait_for_timeout(3_000)
            result["news_popup"] = NEWS_POPUP in page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / shot), full_page=False)
        browser.close()
    return result, page_errors(errors)


def execute(nb, cwd):
    """Runs ``nb`` and keeps its widgets' state in its metadata, as the course saves its lessons: opened
    later, a widget view then finds its model in the notebook even before (or without) a kernel."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", store_widget_state=True, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return nb


def test_pictures_render_in_jupyterlab_fixture(lab):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(FIXTURE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    execute(nb, ROOT)
    name = trusted_copy(lab, nb, "fixture.ipynb")
    result, errors = open_in_browser(lab, name, "browser-fixture.png", news=True)
    assert result["circuitsvis_children"] > 10, result
    assert result["plotly_figures"] >= 1 and result["widgets"] >= 1, result
    assert not result["news_popup"], "JupyterLab's news question covers the pictures"
    assert errors == [], errors


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_each_lesson_renders_its_pictures_and_widgets_in_jupyterlab(lab, path):
    nb = nbformat.read(path, as_version=4)
    name = trusted_copy(lab, nb, path.name)
    attention_pictures = "course-cv" in path.read_text(encoding="utf-8")  # circuitsvis renders in the lesson
    result, errors = open_in_browser(lab, name, f"browser-{path.stem}.png", circuitsvis=attention_pictures)
    if attention_pictures:
        assert result["circuitsvis_children"] > 10, result
    assert result["plotly_figures"] >= 1 and result["widgets"] >= 1, result
    assert errors == [], errors


LIVE_EXPLORER = """
import ipywidgets as widgets
from IPython.display import display
from utils.pictures import plotting

level = widgets.IntSlider(value=1, min=1, max=5, description="level")
out = widgets.Output()


def redraw(_=None):
    out.clear_output(wait=True)
    with out:
        display(plotting.line([0, level.value], title=f"drawn for level {level.value}", xlabel="x", ylabel="y"))


level.observe(redraw, names="value")
redraw()
display(widgets.VBox([level, out]))
"""


def test_moving_a_slider_redraws_its_picture_with_a_live_kernel(lab):
    from playwright.sync_api import sync_playwright

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(LIVE_EXPLORER)]
    nb.metadata["kernelspec"] = dict(nbs.KERNELSPEC)
    name = trusted_copy(lab, nb, "live.ipynb")
    errors = []
    title = ".js-plotly-plot .gtitle"
    with sync_playwright() as p:
        browser = launch(p)
        page = open_page(browser, lab, name, errors)
        wait_for_idle_kernel(page)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_selector(title, timeout=60_000)
        before = page.text_content(title)
        handle = page.wait_for_selector(".jupyter-widgets .noUi-handle", timeout=30_000)
        handle.focus()
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            f"document.querySelector('{title}') && document.querySelector('{title}').textContent.includes('level 3')",
            timeout=30_000,
        )
        after = page.text_content(title)
        page.screenshot(path=str(ARTIFACTS / "browser-live-slider.png"), full_page=False)
        browser.close()
    assert before == "drawn for level 1" and after == "drawn for level 3", (before, after)
    assert page_errors(errors) == [], errors


def test_opening_an_exercise_notebook_and_letting_it_autosave_changes_no_byte(lab):
    from playwright.sync_api import sync_playwright

    path, text = next(iter(nbs.expected().items()))
    (lab["folder"] / path.name).write_text(text, encoding="utf-8")
    before = (lab["folder"] / path.name).read_bytes()
    errors = []
    with sync_playwright() as p:
        browser = launch(p)
        page = open_page(browser, lab, path.name, errors)
        wait_for_idle_kernel(page)  # the kernel's start is when JupyterLab rewrites the metadata
        page.wait_for_timeout(AUTOSAVE_S * 1000 * 4)
        dirty = page.evaluate("window.jupyterapp.shell.currentWidget.context.model.dirty")
        page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")  # what autosave would write
        page.wait_for_timeout(2_000)
        browser.close()
    after = (lab["folder"] / path.name).read_bytes()
    assert not dirty, "JupyterLab marked the notebook changed on opening it"
    assert after == before, "JupyterLab rewrote the exercise notebook: its format or metadata differ"


def test_a_notebook_reopened_after_its_kernel_stopped_draws_its_widgets_from_the_saved_state(lab):
    """A learner runs an explorer, saves, closes JupyterLab and comes back another day: the explorer must show,
    not "Error displaying widget: model not found" (the course's settings save widget state with the notebook)."""
    import urllib.request

    from playwright.sync_api import sync_playwright

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(LIVE_EXPLORER)]
    nb.metadata["kernelspec"] = dict(nbs.KERNELSPEC)
    name = trusted_copy(lab, nb, "reopened.ipynb")
    errors = []
    with sync_playwright() as p:
        browser = launch(p)
        page = open_page(browser, lab, name, errors)
        wait_for_idle_kernel(page)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_selector(".jupyter-widgets .noUi-handle", timeout=60_000)
        wait_for_idle_kernel(page)
        page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_timeout(2_000)
        page.close()
        # Every kernel stopped, as when JupyterLab is closed: nothing is left that holds the widgets' models.
        sessions = json.load(urllib.request.urlopen(f"{lab['url']}/api/sessions?token={lab['token']}"))
        for session in sessions:
            request = urllib.request.Request(
                f"{lab['url']}/api/sessions/{session['id']}?token={lab['token']}", method="DELETE"
            )
            urllib.request.urlopen(request)
        saved = nbformat.read(lab["folder"] / name, as_version=4)
        page = open_page(browser, lab, name, errors)
        page.wait_for_selector(".jp-OutputArea-output", timeout=60_000)
        page.wait_for_timeout(3_000)
        text = page.inner_text(".jp-Notebook")
        slider = page.query_selector(".jupyter-widgets .noUi-handle")
        page.screenshot(path=str(ARTIFACTS / "browser-reopened.png"), full_page=False)
        browser.close()
    assert saved.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state")
    assert "model not found" not in text, text[-300:]
    assert slider is not None, "the saved explorer is not drawn"


def test_the_start_page_opens_rendered_in_jupyterlab(lab):
    """`make lab` opens notebooks/README.md: with the course's settings JupyterLab shows Markdown as a preview,
    not as source text."""
    from playwright.sync_api import sync_playwright

    (lab["folder"] / "start.md").write_text("# The start page\n\nBegin with [lesson 00](00_orientation.ipynb).\n")
    errors = []
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{lab['url']}/lab/workspaces/{uuid.uuid4().hex[:8]}/tree/start.md?reset&token={lab['token']}")
        page.wait_for_selector(".jp-RenderedMarkdown h1", timeout=60_000)
        heading = page.inner_text(".jp-RenderedMarkdown h1")
        browser.close()
    assert "The start page" in heading
    assert page_errors(errors) == []
