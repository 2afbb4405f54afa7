"""Every test has a time limit, set by its kind in tests/conftest.py: a hang fails one test, with every thread's
stack, and the suite goes on; a browser call that would wait for ever is stopped with Chromium."""

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import CHROMIUM, chromium_processes
from utils.paths import ROOT

MEASURED = ROOT / "benchmarks" / "test-durations.json"

HANGING = """
import threading
import time


def test_that_hangs():
    threading.Thread(target=time.sleep, args=(60,), name="a-helper-thread", daemon=True).start()
    time.sleep(600)


def test_that_runs_after_it():
    assert True
"""


def test_every_collected_test_has_a_time_limit(request):
    """Every test this session collected (in make test, the whole suite: each pytest-xdist worker collects all of it,
    not only what it runs) has a limit, and pytest-timeout is there to enforce it."""
    assert request.config.pluginmanager.hasplugin("timeout"), "pytest-timeout is not installed (make setup)"
    items = request.session.items
    assert request.node in items
    unbounded = [item.nodeid for item in items if not (item.get_closest_marker("timeout") or [0]).args]
    assert unbounded == [], unbounded[:5]
    assert all(item.get_closest_marker("timeout").args[0] > 0 for item in items)


def test_each_kind_is_told_apart_and_anything_else_falls_to_the_last():
    from tests.conftest import TIME_LIMITS as table
    from tests.conftest import time_limit

    assert time_limit("tests/test_browser.py::test_the_start_page_opens_rendered_in_jupyterlab")[0] == "browser"
    assert time_limit("tests/test_lessons.py::test_each_lessons_claims_hold_on_a_fresh_sample[05_steering]")[0] == (
        "whole-notebook"
    )
    assert time_limit("tests/test_evaluate.py::test_card_metrics_agree_with_a_fresh_small_sample")[0] == "model-card"
    assert time_limit("tests/test_evaluate.py::test_countdown_card_holds_on_fresh_traces[countdown-llama]")[0] == (
        "model-card"
    )
    assert time_limit("tests/test_style.py::anything")[0] == table[-1][0]
    assert table[-1][1] == ("",), "the last kind must take every test the others do not name"


def test_each_kinds_limit_is_set_from_its_measured_times():
    """At least two and a half times the longest test of its kind in the measured runs (a busy machine slows a test,
    and a stalled kernel costs a lesson a minute and a second run), and no more than five times it, or five minutes:
    a limit far above what was measured would make a hang cost the run most of its time."""
    from tests.conftest import TIME_LIMITS as table

    runs = json.loads(MEASURED.read_text(encoding="utf-8"))["runs"]
    for kind, _, seconds in table:
        measured = [run["kinds"][kind]["longest_s"] for run in runs if kind in run["kinds"]]
        assert measured, f"no measured times for {kind} tests in {MEASURED.name}: make test DURATIONS={MEASURED.name}"
        longest = max(measured)
        assert seconds >= 2.5 * longest, f"{kind} tests: a limit of {seconds} s is too close to {longest} s measured"
        assert seconds <= max(300, 5 * longest), f"{kind} tests: a limit of {seconds} s, far above {longest} s"


def test_a_test_that_hangs_fails_at_its_limit_with_every_threads_stack_and_the_next_one_runs(tmp_path):
    """The suite's own conftest, its kinds' table replaced by one kind of 3 s, in a pytest of its own with two
    workers (as make test runs): the hanging test fails at 3 s, the message (not only a terminal, which a worker does
    not have) holds where each thread was, and the other test passes."""
    conftest = (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")
    (tmp_path / "conftest.py").write_text(conftest + '\nTIME_LIMITS = (("hanging", ("",), 3),)\n', encoding="utf-8")
    (tmp_path / "test_probe.py").write_text(HANGING, encoding="utf-8")
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-o", "timeout_method=signal", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    took = time.monotonic() - started
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-2000:]
    assert "1 failed, 1 passed" in out, out[-2000:]
    assert "test_that_hangs was still running at its time limit of 3 s (a hanging test's limit" in out, out[-2000:]
    assert "--- thread a-helper-thread ---" in out and "time.sleep(600)" in out, out[-3000:]
    assert took < 120, f"the run took {took:.0f} s"


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")
def test_a_browser_call_that_never_returns_is_stopped_at_the_sessions_deadline(chromium):
    """``evaluate`` waits for the promise it is given and has no timeout of its own: the session's deadline stops
    Chromium, the call returns with an error, and the test fails naming what waited. No Chromium is left running."""
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="the browser session was still waiting on Chromium after 5 s"):
        with chromium(seconds=5) as browser:
            page = browser.new_page()
            page.evaluate("new Promise(() => {})")  # never settles
    assert time.monotonic() - started < 60
    time.sleep(1)
    assert chromium_processes() == []
