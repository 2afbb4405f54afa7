"""Real-browser test: JupyterLab on loopback, headless Debian Chromium driven by Playwright.

Opens executed notebooks and asserts that the circuitsvis attention picture, a plotly figure
and an ipywidgets widget render (not blank), with no JavaScript error in the console. A
screenshot of each is kept in ``test-artifacts/``. Skipped, with the reason, only where no
Chromium is installed (``.ci/run`` installs Debian's).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import nbformat
import pytest

from utils.paths import ROOT

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LESSON_01 = ROOT / "solutions" / "01_induction_heads.ipynb"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")

FIXTURE = """
import torch, ipywidgets as widgets
from utils import plotting
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


def open_in_browser(lab, name, shot):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
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
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        # A fresh workspace: nothing but this notebook is open.
        page.goto(f"{lab['url']}/lab/workspaces/{uuid.uuid4().hex[:8]}/tree/{name}?reset&token={lab['token']}")
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        result = {}
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
        page.wait_for_selector(".jupyter-widgets", timeout=60_000)
        result["widgets"] = page.evaluate("document.querySelectorAll('.jupyter-widgets').length")
        page.screenshot(path=str(ARTIFACTS / shot), full_page=False)
        browser.close()
    # The closed network refuses some of Chromium's own background requests; those are not the page's.
    page_errors = [e for e in errors if "net::ERR" not in e and "Failed to load resource" not in e]
    return result, page_errors


def execute(nb, cwd):
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def test_pictures_render_in_jupyterlab_fixture(lab):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(FIXTURE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    execute(nb, ROOT)
    name = trusted_copy(lab, nb, "fixture.ipynb")
    result, errors = open_in_browser(lab, name, "browser-fixture.png")
    assert result["circuitsvis_children"] > 10, result
    assert result["plotly_figures"] >= 1 and result["widgets"] >= 1, result
    assert errors == [], errors


def test_lesson_01_renders_in_jupyterlab(lab):
    nb = nbformat.read(LESSON_01, as_version=4)
    name = trusted_copy(lab, nb, LESSON_01.name)
    result, errors = open_in_browser(lab, name, "browser-lesson-01.png")
    assert result["circuitsvis_children"] > 10, result
    assert result["plotly_figures"] >= 1 and result["widgets"] >= 1, result
    assert errors == [], errors
