"""Exercise notebooks are generated from solutions and kept in sync; the one executor runs notebooks."""

import nbformat
import pytest

from utils import notebooks as nbs

SOLUTION = '''def double(x):
    """Twice x."""
    # EXERCISE: return twice the input
    ### BEGIN SOLUTION
    y = x * 2
    return y
    ### END SOLUTION'''


def make_nb(*sources, tags=None):
    nb = nbformat.v4.new_notebook()
    for i, s in enumerate(sources):
        cell = nbformat.v4.new_code_cell(s) if not s.startswith("#md ") else nbformat.v4.new_markdown_cell(s[4:])
        if cell.cell_type == "code":
            cell.execution_count = i + 1
            cell.outputs = [nbformat.v4.new_output("stream", text="hello\n")]
        if tags and i in tags:
            cell.metadata["tags"] = tags[i]
        nb.cells.append(cell)
    return nb


def test_solution_region_becomes_a_stub_with_the_task_and_indentation():
    source, snippets = nbs.stub_source(SOLUTION)
    assert '    raise NotImplementedError("return twice the input")' in source
    assert "y = x * 2" not in source and "BEGIN SOLUTION" not in source
    assert snippets == ["y = x * 2\nreturn y"]
    ns = {}
    exec(source, ns)
    with pytest.raises(NotImplementedError, match="twice"):
        ns["double"](3)


def test_exercise_notebook_has_no_outputs_and_a_solution_cell_after_the_check():
    nb = make_nb(
        "#md # Title", SOLUTION, "check_double(double)", "#md <details><summary>Hint</summary>x</details>", "print(1)"
    )
    out = nbs.build_notebook(nb)
    code = [c for c in out.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    kinds = [c.cell_type for c in out.cells]
    assert kinds == ["markdown", "code", "code", "markdown", "markdown", "code"]
    assert "Hint" in out.cells[3].source, "the hint comes before the solution"
    solution = out.cells[4].source
    assert "<summary>Solution</summary>" in solution and "def double(x):" in solution and "y = x * 2" in solution
    assert "BEGIN SOLUTION" not in solution and "EXERCISE:" not in solution
    assert nb.cells[1].outputs, "the solutions notebook itself is not modified"


def test_saved_widget_state_stays_in_the_solutions_notebook():
    nb = make_nb(SOLUTION, "check_double(double)")
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"x": 1}}}
    assert "widgets" not in nbs.build_notebook(nb).metadata
    assert "widgets" in nb.metadata


def test_solution_only_cells_are_dropped():
    nb = make_nb("x = 1", "assert x == 1", tags={1: ["solution-only"]})
    assert [c.source for c in nbs.build_notebook(nb).cells] == ["x = 1"]


@pytest.mark.parametrize(
    "source,problem",
    [
        ("### BEGIN SOLUTION\nx = 1", "without"),
        ("x = 1\n### END SOLUTION", "without"),
        ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "EXERCISE"),
    ],
)
def test_malformed_markers_are_reported(source, problem):
    with pytest.raises(nbs.NotebookError, match=problem):
        nbs.build_notebook(make_nb(source, "check_x(x)"))


def test_an_exercise_without_a_check_is_reported():
    with pytest.raises(nbs.NotebookError, match="no check cell"):
        nbs.build_notebook(make_nb(SOLUTION, "print(2)"))


def test_committed_exercise_notebooks_are_up_to_date():
    assert nbs.stale() == [], "run: python -m utils.notebooks build"


def test_the_executor_reports_the_kernels_own_peak_memory_not_its_parents(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = list(range(1000))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "small.ipynb")
    ballast = b"x" * 1_500_000_000  # the launching process holds 1.5 GB while the kernel runs
    result = nbs.execute(tmp_path / "small.ipynb")
    assert len(ballast) and result["error"] is None
    assert 0 < result["peak_mb"] < 500, result


def test_executing_in_place_keeps_the_outputs_and_a_failure_leaves_the_file_alone(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('hello')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "ok.ipynb")
    assert nbs.execute(tmp_path / "ok.ipynb", save=True)["error"] is None
    saved = nbformat.read(tmp_path / "ok.ipynb", as_version=4)
    assert saved.cells[0].outputs[0]["text"] == "hello\n" and saved.cells[0].execution_count == 1
    nb.cells.append(nbformat.v4.new_code_cell("1 / 0"))
    nbformat.write(nb, tmp_path / "bad.ipynb")
    before = (tmp_path / "bad.ipynb").read_text()
    assert "ZeroDivisionError" in nbs.execute(tmp_path / "bad.ipynb", save=True)["error"]
    assert (tmp_path / "bad.ipynb").read_text() == before


def test_the_executor_runs_output_widgets_whether_or_not_it_saves(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import ipywidgets as widgets\nout = widgets.Output()\ndisplay(out)\nwith out:\n    print('inside')"
        )
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "widget.ipynb")
    assert nbs.execute(tmp_path / "widget.ipynb")["error"] is None
    assert nbs.execute(tmp_path / "widget.ipynb", save=True)["error"] is None
    saved = nbformat.read(tmp_path / "widget.ipynb", as_version=4)
    assert "application/vnd.jupyter.widget-state+json" in saved.metadata.get("widgets", {})
