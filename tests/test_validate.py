"""nbval is the notebooks' validator: the bare ``pytest --nbval-lax`` works from the repository with the
course's sanitiser, and ``utils.course.validate`` keeps runs and records time and memory from that run."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from utils.course import notebooks as nbs
from utils.course import validate
from utils.paths import ROOT

MARK = "# NBVAL_CHECK_OUTPUT"


def executed_notebook(path, *sources):
    """A notebook of ``sources``, executed and saved as a lesson is committed."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = dict(nbs.KERNELSPEC)
    nbformat.write(nb, path)
    nbs.execute(path, save=True)
    return path


@pytest.fixture
def inside_the_repository():
    """A scratch folder under build/ (ignored by git): pytest finds the project's configuration from the
    notebooks' folder, as it does for solutions/."""
    (ROOT / "build").mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="validate-test-", dir=ROOT / "build"))
    yield folder
    shutil.rmtree(folder)


def bare_nbval(*args) -> subprocess.CompletedProcess:
    """``pytest --nbval-lax ...`` typed in the repository's root, as a maintainer would."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_bare_nbval_command_compares_only_marked_cells_through_the_courses_sanitiser(inside_the_repository):
    # a path and an object address change from run to run: the sanitiser masks them; the number does not change
    path = executed_notebook(
        inside_the_repository / "x.ipynb",
        f"{MARK}\nimport tempfile\nprint(41 + 1, tempfile.mkdtemp(), object())",
        "import random\nprint(random.random())",  # not compared: free to change
    )
    r = bare_nbval(path)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "2 passed" in r.stdout


def test_the_bare_nbval_command_fails_on_a_changed_compared_output_and_names_the_cell(inside_the_repository):
    path = executed_notebook(inside_the_repository / "x.ipynb", "x = 1", f"{MARK}\nprint(41 + x)")
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs[0].text = "43\n"  # the committed output says 43; the lesson now prints 42
    nbformat.write(nb, path)
    r = bare_nbval(path)
    assert r.returncode == 1
    assert "Cell 1" in r.stdout and "Cell outputs differ" in r.stdout and "1 failed, 1 passed" in r.stdout


def test_a_validated_run_is_kept_for_the_tests_and_recorded_with_its_time_memory_and_error(tmp_path):
    good = executed_notebook(tmp_path / "00_good.ipynb", f"{MARK}\nprint('kept')")
    bad = executed_notebook(tmp_path / "01_bad.ipynb", "x = 1")
    nb = nbformat.read(bad, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("raise ValueError('the claim no longer holds')"))
    nbformat.write(nb, bad)
    rows = validate.run([good, bad], keep=tmp_path / "runs")
    assert [r["notebook"] for r in rows] == ["00_good.ipynb", "01_bad.ipynb"]
    assert rows[0]["error"] is None and rows[0]["seconds"] > 0 and rows[0]["peak_mb"] > 10
    assert rows[1]["error"] == "ValueError: the claim no longer holds (code cell 1)"
    kept = nbs.kept_run(good, tmp_path / "runs")
    assert kept is not None and kept.cells[0].outputs[0].text == "kept\n"
    assert nbs.kept_run(bad, tmp_path / "runs").metadata[nbs.KEPT_RUN]["error"] == rows[1]["error"]


def test_the_real_model_sections_time_is_recorded_apart_from_the_rest_of_its_notebook(tmp_path):
    path = executed_notebook(tmp_path / "00_x.ipynb", "import time\ntime.sleep(0.2)", "time.sleep(0.6)")
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].metadata["tags"] = [nbs.REAL_MODEL_TAG]
    nbformat.write(nb, path)
    [row] = validate.run([path], keep=tmp_path / "runs")
    assert 0.6 <= row["real_model_seconds"] < 0.6 + 0.5 and row["seconds"] >= 0.8


def test_make_validate_records_the_device_the_versions_and_each_notebook(tmp_path):
    path = executed_notebook(tmp_path / "00_x.ipynb", f"{MARK}\nprint(6 * 7)")
    record = tmp_path / "validate.json"
    r = subprocess.run(
        [sys.executable, "-m", "utils.course.validate", str(path), "--record", str(record)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "device cpu, torch" in r.stdout and "00_x.ipynb" in r.stdout and "1 of 1 notebooks passed" in r.stdout
    saved = json.loads(record.read_text())
    assert saved["device"] == "cpu" and saved["torch"] and saved["threads_per_kernel"] >= 1
    (row,) = saved["notebooks"]
    assert row["notebook"] == "00_x.ipynb" and row["error"] is None and row["failed_cells"] == 0


def test_the_docs_quote_the_recorded_validation_runs():
    docs = (ROOT / "docs" / "validation.md").read_text() + (ROOT / "docs" / "teaching-on-colab.md").read_text()
    for name in ("validate-cpu.json", "validate-h100.json"):
        run = json.loads((ROOT / "benchmarks" / name).read_text())
        seconds = [n["seconds"] for n in run["notebooks"]]
        assert run["cells_failed"] == 0 and all(n["error"] is None for n in run["notebooks"])
        assert (
            f"{run['cells_passed']} of {run['cells_passed']} cells passed, {run['wall_seconds']:.0f} s in all" in docs
        )
        assert f"{min(seconds):.0f}–{max(seconds):.0f} s a lesson" in docs
