"""make course: checks the zoo and runs every lesson, and leaves the tree exactly as it was."""

import os
import subprocess
import sys

import nbformat

from utils.course import notebooks as nbs
from utils.course import runner as course
from utils.paths import ROOT


def notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def tree_state() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout


def test_running_the_course_prints_the_table_writes_nothing_tracked_and_keeps_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(course, "COURSE_RUNS", tmp_path / "runs")
    before = tree_state()
    ok = notebook(tmp_path / "00_ok.ipynb", "x = 1")
    assert course.main(["--skip-zoo", str(ok)]) == 0
    assert "| 00_ok.ipynb |" in capsys.readouterr().out
    assert tree_state() == before
    assert nbs.kept_run(ok, tmp_path / "runs") is not None, "the tests read the run make course kept"


def test_a_failing_notebook_fails_the_course_and_names_the_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(course, "COURSE_RUNS", tmp_path / "runs")
    bad = notebook(tmp_path / "01_bad.ipynb", "x = 1", "raise ValueError('the claim no longer holds')")
    assert course.main(["--skip-zoo", str(bad)]) == 1
    assert "FAILED: ValueError: the claim no longer holds" in capsys.readouterr().out


def test_every_built_zoo_model_loads_and_agrees_with_its_card(capsys):
    assert course.check_zoo() == 0, capsys.readouterr().out


def run_course(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "utils.course", *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_bad_fresh_sample_stops_the_course_in_one_line_before_anything_runs():
    r = run_course("--skip-zoo", "solutions/00_orientation.ipynb", COURSE_FRESH_SAMPLE="0")
    assert r.returncode == 1 and r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line.startswith("python -m utils.course: error: COURSE_FRESH_SAMPLE=0 is not a fresh sample's number")
