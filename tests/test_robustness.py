"""The robustness sweep: lessons run on fresh samples, asserts recorded with the values they compared."""

import json

import nbformat
import pytest

from utils import seeds
from utils.course import records, robustness
from utils.course import runner as course
from utils.paths import SOLUTIONS


def notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# a lesson")] + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_a_fresh_sample_swaps_every_lesson_seed_for_a_held_out_one_never_a_lessons_own():
    own = {name: getattr(seeds, name) for name in seeds.lesson_seed_names()}
    all_fresh = [seed for k in range(1, 6) for seed in seeds.fresh_sample_seeds(k).values()]
    assert len(set(all_fresh)) == len(all_fresh)
    assert all(seeds.is_held_out(s) and s in seeds.FRESH_SAMPLES for s in all_fresh)
    assert not set(all_fresh) & set(own.values())
    assert set(seeds.fresh_sample_seeds(1)) == set(own)


def test_the_checks_seeds_are_not_swapped():
    assert not any(name.endswith("_CHECKS") for name in seeds.lesson_seed_names())
    assert "LESSON_02_CHECKS" in vars(seeds) and "LESSON_02" in seeds.lesson_seed_names()


def test_an_unknown_sample_number_says_which_exist():
    with pytest.raises(ValueError, match="numbered 1 to 12, not 0"):
        seeds.fresh_sample_seeds(0)


def test_a_claim_that_holds_only_on_the_lessons_own_sample_is_reported_with_its_values(tmp_path):
    path = notebook(
        tmp_path / "02_x.ipynb",
        "from utils import seeds",
        "assert seeds.LESSON_02 == 9502, 'the lesson drew its own sample'\nassert 1 < 2",
    )
    own, fresh = (robustness.run_sample(path, k) for k in (robustness.OWN, 2))
    assert own["error"] is None and [c["held"] for c in own["claims"]] == [True, True]
    claim = fresh["claims"][0]
    assert not claim["held"] and claim["values"] == {"0": seeds.fresh_sample_seeds(2)["LESSON_02"], "1": 9502}
    assert claim["message"] == "the lesson drew its own sample" and (claim["cell"], claim["line"]) == (2, 1)
    assert fresh["claims"][1]["held"], "a failed assert is recorded and the cell goes on"
    summary = robustness.summarise("02_x.ipynb", [own, fresh])
    assert (summary["fresh_samples_held"], summary["fresh_samples"], summary["own_sample_holds"]) == (0, 1, True)
    text = robustness.report(summary)
    assert "FAILS on 2  cell 2 line 1: seeds.LESSON_02 == 9502" in text
    assert f"values across samples: 9502 to {seeds.fresh_sample_seeds(2)['LESSON_02']} | 9502" in text


def test_an_assert_in_a_loop_is_recorded_once_per_run_and_comprehensions_are_left_alone(tmp_path):
    path = notebook(tmp_path / "x.ipynb", "for v in (1, 5):\n    assert v < 3 and all(w > 0 for w in [v])")
    run = robustness.run_sample(path, robustness.OWN)
    assert [(c["held"], c["values"]) for c in run["claims"]] == [(True, {"0": 1, "1": 3}), (False, {"0": 5, "1": 3})]
    rows = robustness.claim_table([run])
    assert [r["nth"] for r in rows] == [0, 1]


def test_a_run_repeated_after_a_stall_records_the_repeats_claims_alone(tmp_path, monkeypatch):
    from nbclient.exceptions import CellTimeoutError

    from utils.course import notebooks as nbs

    path = notebook(tmp_path / "x.ipynb", "assert 1 == 1", "assert 2 == 2")
    real, calls = nbs._execute_once, []

    def stalls_after_running_once(*args):
        calls.append(real(*args))  # the first kernel records both claims, then is taken as stalled
        if len(calls) == 1:
            raise CellTimeoutError("cell 2, 'assert 2 == 2'")
        return calls[-1]

    monkeypatch.setattr(nbs, "_execute_once", stalls_after_running_once)
    run = robustness.run_sample(path, robustness.OWN)
    assert len(calls) == 2 and run["error"] is None
    assert [(c["cell"], c["held"]) for c in run["claims"]] == [(1, True), (2, True)]  # not four


def test_a_run_that_stops_with_an_error_does_not_hold(tmp_path):
    path = notebook(tmp_path / "x.ipynb", "assert 1 == 1", "raise ValueError('boom')", "assert 2 == 2")
    runs = [robustness.run_sample(path, k) for k in (robustness.OWN, 1)]
    summary = robustness.summarise("x.ipynb", runs)
    assert summary["fresh_samples_held"] == 0 and summary["own_sample_holds"] is False
    assert "stopped with an error: ValueError: boom" in robustness.report(summary)


def test_the_sweep_records_its_result_and_the_readme_column(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"{records.NOTEBOOK_TABLE[0]}\nold\n{records.NOTEBOOK_TABLE[1]}\n")
    (tmp_path / "notebooks.json").write_text(
        json.dumps([{"notebook": "05_x.ipynb", "seconds": 1.0, "peak_mb": 100, "error": None}])
    )
    monkeypatch.setattr(records, "README", readme)
    monkeypatch.setattr(records, "NOTEBOOKS_JSON", tmp_path / "notebooks.json")
    monkeypatch.setattr(robustness, "BENCHMARKS", tmp_path)
    monkeypatch.setattr(robustness, "ROBUSTNESS_JSON", tmp_path / "robustness.json")
    path = notebook(tmp_path / "05_x.ipynb", "from utils import seeds", "assert seeds.LESSON_05 > 0")
    assert course.main(["--reseed", "2", str(path)]) == 0
    assert "05_x.ipynb: 1 asserted claims; all hold on 2/2 fresh samples" in capsys.readouterr().out
    recorded = json.loads((tmp_path / "robustness.json").read_text())
    assert recorded["lessons"]["05_x.ipynb"]["fresh_samples_held"] == 2
    assert recorded["lessons"]["05_x.ipynb"]["code_digest"] == robustness.code_digest(path)  # the code it ran
    assert "| 05_x.ipynb | 1.0 | – | 100 | ok | 2/2 |" in readme.read_text()  # no SmolLM2 section: a dash


def test_the_recorded_sweep_covers_every_lesson_on_ten_samples_with_margins_and_its_current_code():
    recorded = robustness.recorded()
    assert sorted(recorded) == sorted(p.name for p in SOLUTIONS.glob("*.ipynb")), "run: make robustness"
    fewer = [name for name, s in recorded.items() if s["fresh_samples"] != 10]
    assert not fewer, f"make robustness runs ten fresh samples; swept on fewer: {fewer}"
    without = [name for name, s in recorded.items() if not any("margin" in row for row in s["claims"])]
    assert not without, f"no margins recorded for {without}: run make robustness"
    stale = [name for name, s in recorded.items() if s.get("code_digest") != robustness.code_digest(SOLUTIONS / name)]
    assert not stale, f"the code of {stale} changed after its sweep: sweep it again (make robustness)"


def test_a_notebooks_code_digest_ignores_its_prose_and_outputs_but_not_its_code(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("Some prose."), nbformat.v4.new_code_cell("x = 1\nassert x == 1")]
    path = tmp_path / "a.ipynb"
    nbformat.write(nb, path)
    before = robustness.code_digest(path)
    nb.cells[0].source = "Other prose."
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="printed")]
    nbformat.write(nb, path)
    assert robustness.code_digest(path) == before
    nb.cells[1].source = "x = 1\nassert x == 2"
    nbformat.write(nb, path)
    assert robustness.code_digest(path) != before
