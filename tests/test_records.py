"""Recorded measurements: only make record writes them; the README shows exactly what was recorded."""

import json

from utils.course import records
from utils.paths import README, SOLUTIONS

RESTORE = records.RESTORE


def test_the_recorded_table_lists_exactly_the_solutions_notebooks_all_ok():
    rows = records.recorded_notebooks()
    assert [r["notebook"] for r in rows] == sorted(p.name for p in SOLUTIONS.glob("*.ipynb")), RESTORE
    assert all(r["error"] is None for r in rows), rows
    assert all(r["seconds"] > 0 and r["peak_mb"] > 0 for r in rows), rows


def test_readme_notebook_table_is_the_rendering_of_the_recorded_json():
    assert records.readme_problems() == []


def test_a_changed_readme_table_is_restored_with_git_not_re_recorded(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text().replace("| ok |", "| ok, changed |", 1))
    monkeypatch.setattr(records, "README", readme)
    [problem] = records.readme_problems()
    assert problem == (
        "README.md's notebook table is not the rendering of notebooks.json and robustness.json: restore the "
        "recorded files: git checkout -- README.md benchmarks/notebooks.json benchmarks/robustness.json "
        "(only a maintainer who means to re-measure and publish new numbers runs make record)"
    )
    assert problem.index("git checkout") < problem.index("make record")


def test_recording_writes_the_json_and_renders_the_readme_table_from_it(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{records.NOTEBOOK_TABLE[0]}\nold\n{records.NOTEBOOK_TABLE[1]}\noutro\n")
    monkeypatch.setattr(records, "README", readme)
    monkeypatch.setattr(records, "BENCHMARKS", tmp_path)
    monkeypatch.setattr(records, "NOTEBOOKS_JSON", tmp_path / "notebooks.json")
    rows = [
        {"notebook": "00_x.ipynb", "seconds": 1.5, "peak_mb": 300, "error": None, "real_model_seconds": 0.7},
        {"notebook": "01_y.ipynb", "seconds": 2.0, "peak_mb": None, "error": "NameError: x"},
    ]
    sweep = {"00_x.ipynb": {"fresh_samples_held": 4, "fresh_samples": 5}}
    monkeypatch.setattr(records.robustness, "recorded", lambda: sweep)
    records.record_notebooks(rows)
    assert json.loads((tmp_path / "notebooks.json").read_text()) == rows
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "\nold\n" not in text
    assert "| 00_x.ipynb | 1.5 | 0.7 | 300 | ok | 4/5 |" in text
    assert "| 01_y.ipynb | 2.0 | – | ? | FAILED: NameError: x | not run |" in text
