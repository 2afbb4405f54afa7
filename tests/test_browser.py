"""Real-browser test: JupyterLab on loopback, headless Debian Chromium driven by Playwright.

Opens every executed lesson and asserts that its circuitsvis attention picture (where it has
one), a plotly figure and an ipywidgets widget render (not blank), with no JavaScript error in
the console and no pop-up over them. A screenshot of each is kept in ``test-artifacts/``. With a live kernel, a
widget's slider redraws its picture; and an exercise notebook opened and left to autosave
keeps every byte. Skipped, with the reason, only where no Chromium is installed (``.ci/run``
installs Debian's).

No call waits without a bound: Playwright's waits have their timeouts, the browser session and its closing are
bounded by ``chromium_deadline`` (tests/conftest.py), and a save is started without waiting on its promise, then
watched: a dialog that JupyterLab opens instead (the file changed on disk, a kernel to choose) fails the test by its
text, with a screenshot, where waiting for the save would wait for an answer for ever.

The server runs with the course's JupyterLab settings, which ``make setup`` installs into the
environment (``scripts/jupyterlab-overrides.json``); the autosave test gives its page a short autosave interval.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from tests.conftest import CHROMIUM
from utils.course import notebooks as nbs
from utils.paths import ROOT

ARTIFACTS = ROOT / "test-artifacts"
COURSE_SETTINGS = Path(sys.prefix, "share", "jupyter", "lab", "settings", "overrides.d", "handson-mechinterp.json")
AUTOSAVE_S = 2
NEWS_POPUP = "official Jupyter news"
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
    settings = folder / ".config" / "lab" / "user-settings"
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
    yield {"folder": folder, "url": f"http://127.0.0.1:{port}", "token": token, "env": env, "settings": settings}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)


@contextlib.contextmanager
def autosaving(lab, seconds: int = AUTOSAVE_S):
    """Pages opened inside the block autosave every ``seconds`` (JupyterLab reads its settings when a page loads).
    Outside it JupyterLab keeps its default of two minutes, which no page here lives to see: on a busy machine an
    autosave every 2 s of a lesson just opened was seen to meet a save of its own still on its way, and JupyterLab
    then asks whether to overwrite the file."""
    docmanager = lab["settings"] / "@jupyterlab" / "docmanager-extension"
    docmanager.mkdir(parents=True, exist_ok=True)
    (docmanager / "plugin.jupyterlab-settings").write_text(json.dumps({"autosaveInterval": seconds}))
    try:
        yield
    finally:
        (docmanager / "plugin.jupyterlab-settings").unlink()


def trusted_copy(lab, nb, name):
    path = lab["folder"] / name
    nbformat.write(nb, path)
    subprocess.run(
        [sys.executable, "-m", "jupyter", "trust", str(path)],
        env=lab["env"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return name


def dialog_text(page) -> str | None:
    """The text of the dialog JupyterLab shows over the page (a question waiting for an answer), or None."""
    dialog = page.query_selector(".jp-Dialog")
    return " ".join(dialog.inner_text().split()) if dialog is not None else None


@contextlib.contextmanager
def no_dialog(page, doing: str, shot: str):
    """Fails the test, naming the dialog and keeping a screenshot, where JupyterLab opened one while ``doing``: either
    a wait in the block ran out because the dialog stood in the way, or the dialog is there when the block ends."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        yield
    except PlaywrightTimeout as error:
        if dialog_text(page) is None:
            page.screenshot(path=str(ARTIFACTS / shot), full_page=False)
            raise AssertionError(f"{error} while {doing} (screenshot: test-artifacts/{shot})") from error
    text = dialog_text(page)
    if text is not None:
        page.screenshot(path=str(ARTIFACTS / shot), full_page=False)
        pytest.fail(f"JupyterLab opened a dialog while {doing}: {text!r} (screenshot: test-artifacts/{shot})")


def open_page(browser, lab, name, errors, shot="browser-dialog.png"):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    # A fresh workspace: nothing but this notebook is open.
    page.goto(f"{lab['url']}/lab/workspaces/{uuid.uuid4().hex[:8]}/tree/{name}?reset&token={lab['token']}")
    with no_dialog(page, f"opening {name}", shot):
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        # JupyterLab has read the file from disk: what the test wrote before opening it, nothing older.
        page.wait_for_function(
            "window.jupyterapp && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.shell.currentWidget.context"
            " && window.jupyterapp.shell.currentWidget.context.isReady",
            timeout=60_000,
        )
    # Whether a save of JupyterLab's own (autosave) is under way: "started" until it has "completed" or "failed".
    page.evaluate(
        "() => { const context = window.jupyterapp.shell.currentWidget.context; window.courseSaveState = 'none';"
        " context.saveState.connect((_, state) => { window.courseSaveState = state; }); }"
    )
    return page


def page_errors(errors):
    # The closed network refuses some of Chromium's own background requests; those are not the page's.
    return [e for e in errors if "net::ERR" not in e and "Failed to load resource" not in e]


def wait_for_idle_kernel(page, shot="browser-dialog.png"):
    with no_dialog(page, "waiting for the kernel", shot):
        page.wait_for_function(
            "window.jupyterapp && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.shell.currentWidget.sessionContext.session"
            " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
            " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
            timeout=90_000,
        )


def save(page, shot: str) -> None:
    """Saves the open notebook as autosave would, without waiting on the command's promise (it waits for the
    learner's answer when JupyterLab asks a question): waits up to a minute for the save to end or a dialog to show,
    and fails on a dialog by its text, or on a save that failed by its error.

    It first waits until no save of JupyterLab's own is under way: a second save started beside an autosave finds
    the file changed on disk under it and asks whether to overwrite it (seen once in four runs on a busy machine)."""
    with no_dialog(page, "waiting for an autosave to end", shot):
        page.wait_for_function("window.courseSaveState !== 'started'", timeout=60_000)
    page.evaluate(
        "() => { window.courseSave = 'saving';"
        " window.jupyterapp.commands.execute('docmanager:save').then("
        "  () => { window.courseSave = 'saved'; }, e => { window.courseSave = 'failed: ' + e; }); }"
    )
    with no_dialog(page, "saving", shot):
        page.wait_for_function(
            "window.courseSave !== 'saving' || !!document.querySelector('.jp-Dialog')", timeout=60_000
        )
    state = page.evaluate("window.courseSave")
    assert state == "saved", f"JupyterLab's save of the notebook ended {state!r}"


# ipywidgets' JupyterLab manager has a race (jupyter-widgets/ipywidgets#3231): when the kernel's connection opens, it
# restores the widgets from the kernel alone and marks itself restored; an output drawn before the notebook's saved
# state is loaded then shows this for good, or logs "widget model not found" before the saved state draws it after
# all. Both come on a busy machine (each in about one run of this file in four under load); reloading the page, what a
# learner would do, draws the widget, and a widget drawn after all leaves only the logged error, which is not counted.
WIDGET_RACE = "Error displaying widget: model not found"


def open_in_browser(chromium, lab, name, shot, circuitsvis=True, news=False):
    """Opens ``name`` and waits for its pictures and widgets; reloads once where ipywidgets' race above hid a widget
    (``result["reloaded"]``). Returns what it found and the page's errors."""
    with chromium() as browser:
        for attempt in ("first", "reloaded"):
            errors = []
            page = open_page(browser, lab, name, errors, shot)
            result = {"reloaded": attempt == "reloaded"}
            with no_dialog(page, f"waiting for {name}'s pictures", shot):
                if circuitsvis:
                    page.wait_for_function(
                        "document.querySelector('.course-cv') && !document.querySelector('.course-cv img')",
                        timeout=60_000,
                    )
                    cv = page.query_selector(".course-cv")
                    cv.scroll_into_view_if_needed()
                    result["circuitsvis_children"] = page.evaluate(
                        "document.querySelector('.course-cv').querySelectorAll('*').length"
                    )
                page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
                result["plotly_figures"] = page.evaluate(
                    "document.querySelectorAll('.js-plotly-plot .main-svg').length"
                )
                page.wait_for_selector(".jupyter-widgets:visible", timeout=60_000)  # closed progress bars are hidden
            wait_for_idle_kernel(page, shot)
            result["widgets"] = page.evaluate("document.querySelectorAll('.jupyter-widgets').length")
            result["widget_errors"] = page.inner_text(".jp-Notebook").count(WIDGET_RACE)
            raced = [e for e in page_errors(errors) if "widget model not found" in e]
            if attempt == "first" and result["widget_errors"] and raced == page_errors(errors):
                page.close()
                continue
            if not result["widget_errors"]:  # the race's error, logged before the saved state drew the widget
                errors[:] = [e for e in errors if e not in raced]
            break
        if news:  # JupyterLab asks about the news a moment after it starts (the fixture's test looks once)
            page.wait_for_timeout(3_000)
            result["news_popup"] = NEWS_POPUP in page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / shot), full_page=False)
    return result, page_errors(errors)


def execute(nb, cwd):
    """Runs ``nb`` and keeps its widgets' state in its metadata, as the course saves its lessons: opened
    later, a widget view then finds its model in the notebook even before (or without) a kernel."""
    from utils.course.kernel_client import CourseNotebookClient

    client = CourseNotebookClient(
        nb, timeout=300, kernel_name="python3", store_widget_state=True, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return nb


def test_pictures_render_in_jupyterlab_fixture(lab, chromium):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(FIXTURE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    execute(nb, ROOT)
    name = trusted_copy(lab, nb, "fixture.ipynb")
    result, errors = open_in_browser(chromium, lab, name, "browser-fixture.png", news=True)
    assert result["circuitsvis_children"] > 10, result
    assert result["plotly_figures"] >= 1 and result["widgets"] >= 1 and result["widget_errors"] == 0, result
    assert not result["news_popup"], "JupyterLab's news question covers the pictures"
    assert errors == [], errors


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_each_lesson_renders_its_pictures_and_widgets_in_jupyterlab(lab, chromium, path):
    nb = nbformat.read(path, as_version=4)
    name = trusted_copy(lab, nb, path.name)
    attention_pictures = "course-cv" in path.read_text(encoding="utf-8")  # circuitsvis renders in the lesson
    result, errors = open_in_browser(chromium, lab, name, f"browser-{path.stem}.png", circuitsvis=attention_pictures)
    if attention_pictures:
        assert result["circuitsvis_children"] > 10, result
    assert result["plotly_figures"] >= 1 and result["widgets"] >= 1 and result["widget_errors"] == 0, result
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


def test_moving_a_slider_redraws_its_picture_with_a_live_kernel(lab, chromium):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(LIVE_EXPLORER)]
    nb.metadata["kernelspec"] = dict(nbs.KERNELSPEC)
    name = trusted_copy(lab, nb, "live.ipynb")
    errors = []
    title = ".js-plotly-plot .gtitle"
    with chromium() as browser:
        page = open_page(browser, lab, name, errors, "browser-live-slider.png")
        wait_for_idle_kernel(page, "browser-live-slider.png")
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
    assert before == "drawn for level 1" and after == "drawn for level 3", (before, after)
    assert page_errors(errors) == [], errors


def test_opening_an_exercise_notebook_and_letting_it_autosave_changes_no_byte(lab, chromium):
    path, text = next(iter(nbs.expected().items()))
    # A folder of its own: JupyterLab has never seen this file, so no older copy of it (a lesson's solution of the
    # same name, opened by an earlier test) can be newer in its eyes than what is on disk.
    name = f"autosave-{uuid.uuid4().hex[:8]}/{path.name}"
    (lab["folder"] / name).parent.mkdir()
    (lab["folder"] / name).write_text(text, encoding="utf-8")
    before = (lab["folder"] / name).read_bytes()
    errors = []
    with chromium() as browser, autosaving(lab):
        page = open_page(browser, lab, name, errors, "browser-autosave.png")
        wait_for_idle_kernel(page, "browser-autosave.png")  # the kernel's start is when JupyterLab rewrites metadata
        with no_dialog(page, "leaving the notebook open to autosave", "browser-autosave.png"):
            page.wait_for_timeout(AUTOSAVE_S * 1000 * 4)
        dirty = page.evaluate("window.jupyterapp.shell.currentWidget.context.model.dirty")
        save(page, "browser-autosave.png")  # what autosave would write
    after = (lab["folder"] / name).read_bytes()
    assert not dirty, "JupyterLab marked the notebook changed on opening it"
    assert after == before, "JupyterLab rewrote the exercise notebook: its format or metadata differ"


def test_a_dialog_jupyterlab_opens_while_saving_fails_the_test_by_its_text_with_a_screenshot(lab, chromium):
    """What once kept CI waiting for ninety minutes: a save that JupyterLab holds behind a question. The file changes
    on disk after JupyterLab has read it, so saving asks whether to overwrite it; ``save`` fails by the question's
    text and keeps a screenshot, where waiting on the save command would wait for an answer for ever."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1 + 1")]
    nb.metadata["kernelspec"] = dict(nbs.KERNELSPEC)
    name = trusted_copy(lab, nb, "changed-on-disk.ipynb")
    shot = ARTIFACTS / "browser-save-dialog.png"
    shot.unlink(missing_ok=True)
    with chromium() as browser:
        page = open_page(browser, lab, name, [], shot.name)
        wait_for_idle_kernel(page, shot.name)
        nb.cells[0].source = "2 + 2"  # the file changes on disk after JupyterLab read it
        nbformat.write(nb, lab["folder"] / name)
        with pytest.raises(pytest.fail.Exception, match="JupyterLab opened a dialog while saving: '.*changed on disk"):
            save(page, shot.name)
    assert shot.is_file()


def test_a_notebook_reopened_after_its_kernel_stopped_draws_its_widgets_from_the_saved_state(lab, chromium):
    """A learner runs an explorer, saves, closes JupyterLab and comes back another day: the explorer must show,
    not "Error displaying widget: model not found" (the course's settings save widget state with the notebook)."""
    import urllib.request

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(LIVE_EXPLORER)]
    nb.metadata["kernelspec"] = dict(nbs.KERNELSPEC)
    name = trusted_copy(lab, nb, "reopened.ipynb")
    errors = []
    with chromium() as browser:
        page = open_page(browser, lab, name, errors, "browser-reopened.png")
        wait_for_idle_kernel(page, "browser-reopened.png")
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_selector(".jupyter-widgets .noUi-handle", timeout=60_000)
        wait_for_idle_kernel(page, "browser-reopened.png")
        save(page, "browser-reopened.png")
        page.close()
        # Every kernel stopped, as when JupyterLab is closed: nothing is left that holds the widgets' models.
        sessions = json.load(urllib.request.urlopen(f"{lab['url']}/api/sessions?token={lab['token']}", timeout=30))
        for session in sessions:
            request = urllib.request.Request(
                f"{lab['url']}/api/sessions/{session['id']}?token={lab['token']}", method="DELETE"
            )
            urllib.request.urlopen(request, timeout=30)
        saved = nbformat.read(lab["folder"] / name, as_version=4)
        page = open_page(browser, lab, name, errors, "browser-reopened.png")
        page.wait_for_selector(".jp-OutputArea-output", timeout=60_000)
        page.wait_for_timeout(3_000)
        text = page.inner_text(".jp-Notebook")
        slider = page.query_selector(".jupyter-widgets .noUi-handle")
        page.screenshot(path=str(ARTIFACTS / "browser-reopened.png"), full_page=False)
    assert saved.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state")
    assert "model not found" not in text, text[-300:]
    assert slider is not None, "the saved explorer is not drawn"


def test_the_start_page_opens_rendered_in_jupyterlab(lab, chromium):
    """`make lab` opens notebooks/README.md: with the course's settings JupyterLab shows Markdown as a preview,
    not as source text."""
    (lab["folder"] / "start.md").write_text("# The start page\n\nBegin with [lesson 00](00_orientation.ipynb).\n")
    errors = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{lab['url']}/lab/workspaces/{uuid.uuid4().hex[:8]}/tree/start.md?reset&token={lab['token']}")
        page.wait_for_selector(".jp-RenderedMarkdown h1", timeout=60_000)
        heading = page.inner_text(".jp-RenderedMarkdown h1")
    assert "The start page" in heading
    assert page_errors(errors) == []
