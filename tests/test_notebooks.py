"""Exercise notebooks are generated from solutions and kept in sync without ever erasing a
learner's answers or handing out a solution; the one executor runs notebooks."""

import json
import subprocess
import sys
import warnings

import nbformat
import pytest

from utils.course import notebooks as nbs
from utils.paths import NOTEBOOKS, ROOT, SOLUTIONS

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


def test_a_stubs_task_with_quotes_is_written_as_the_formatter_writes_it():
    for task, literal in [
        ('the drink ("unknown" if none)', """'the drink ("unknown" if none)'"""),
        ("the model's answer", '"the model\'s answer"'),
        ("""both ' and \"""", '"both \' and \\""'),
    ]:
        source, _ = nbs.stub_source(SOLUTION.replace("return twice the input", task))
        assert f"raise NotImplementedError({literal})" in source, source
        ns = {}
        exec(source, ns)
        with pytest.raises(NotImplementedError) as raised:
            ns["double"](3)
        assert str(raised.value) == task


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
    problems, notes = nbs.check()
    for note in notes:  # a learner's answers: shown in the summary, never a failure
        warnings.warn(note, stacklevel=1)
    assert problems == [], "\n".join([*problems, nbs.FIX_STALE])


# ---------------------------------------------------------------------------------------
# What JupyterLab writes: opening and autosaving a notebook changes nothing


def test_built_notebooks_are_written_as_jupyterlabs_server_saves_them(tmp_path):
    from jupyter_server.services.contents.filemanager import FileContentsManager

    text = nbs.render(nbs.build_notebook(make_nb("#md # Title\n\nTwo lines", SOLUTION, "check_double(double)")))
    manager = FileContentsManager(root_dir=str(tmp_path))
    manager.save({"type": "notebook", "format": "json", "content": json.loads(text)}, "saved.ipynb")
    assert (tmp_path / "saved.ipynb").read_text(encoding="utf-8") == text


def test_notebooks_carry_the_kernelspec_jupyterlab_sets_on_opening_them():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert nbs.KERNELSPEC == {"display_name": spec.display_name, "language": spec.language, "name": "python3"}
    nb = make_nb(SOLUTION, "check_double(double)")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    assert nbs.build_notebook(nb).metadata["kernelspec"] == nbs.KERNELSPEC


# ---------------------------------------------------------------------------------------
# A learner's answers are never erased


def course(tmp_path, monkeypatch, *sources):
    """A course in tmp_path with one solutions notebook made of ``sources``; returns its two paths."""
    solutions, notebooks = tmp_path / "solutions", tmp_path / "notebooks"
    solutions.mkdir()
    monkeypatch.setattr(nbs, "SOLUTIONS", solutions)
    monkeypatch.setattr(nbs, "NOTEBOOKS", notebooks)
    nbformat.write(make_nb(*sources), solutions / "00_x.ipynb")
    assert nbs.build() == ([f"wrote {notebooks / '00_x.ipynb'}"], [])
    return solutions / "00_x.ipynb", notebooks / "00_x.ipynb"


def answer(exercise_path, *, run=True, add_cell=True):
    """What a learner does in JupyterLab: fills in the stub, runs the cells, adds a cell of their own."""
    nb = nbformat.read(exercise_path, as_version=4)
    cell = next(c for c in nb.cells if "NotImplementedError" in c.source)
    cell.source = cell.source.replace('raise NotImplementedError("return twice the input")', "return x + x")
    if run:
        cell.execution_count = 1
        cell.outputs = [nbformat.v4.new_output("stream", text="ok\n")]
    if add_cell:
        nb.cells.append(nbformat.v4.new_code_cell("double(21)"))
    exercise_path.write_text(nbs.render(nb), encoding="utf-8")
    return exercise_path.read_text(encoding="utf-8")


def test_a_learners_answers_count_as_their_work_not_as_a_stale_notebook(tmp_path, monkeypatch):
    _, exercise = course(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    answer(exercise)
    problems, notes = nbs.check()
    assert problems == []
    assert notes == [
        f"{exercise} holds a learner's work (answers in cell 2; added cell 5); compared only the cells the build writes"
    ]


def test_an_exercise_notebook_built_from_other_solutions_is_stale_even_with_answers(tmp_path, monkeypatch):
    solution, exercise = course(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    answer(exercise)
    nbformat.write(make_nb("#md # A new title", SOLUTION, "check_double(double)"), solution)
    assert nbs.check()[0] == [f"{exercise} is out of date with solutions/00_x.ipynb"]


def test_build_refuses_to_overwrite_a_learners_answers(tmp_path, monkeypatch, capsys):
    solution, exercise = course(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    learners = answer(exercise, run=False, add_cell=False)
    nbformat.write(make_nb("#md # A new title", SOLUTION, "check_double(double)"), solution)
    assert nbs.main(["check"]) == 1
    advice = capsys.readouterr().out.strip().splitlines()[-1]
    assert advice == nbs.FIX_STALE and advice.startswith("run: python -m utils.course.notebooks build ")
    assert nbs.main(["build"]) == 1, "following the advice must not erase the answers"
    assert exercise.read_text(encoding="utf-8") == learners
    assert capsys.readouterr().err == (
        f"{exercise} holds a learner's work (answers in cell 2), so it was not rebuilt; to rebuild it anyway, "
        "with a copy kept next to it, run: python -m utils.course.notebooks build --overwrite-answers\n"
    )
    assert list(exercise.parent.glob("*.bak")) == []


def test_overwriting_answers_keeps_a_copy_next_to_the_notebook_and_says_so(tmp_path, monkeypatch, capsys):
    solution, exercise = course(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    learners = answer(exercise)
    nbformat.write(make_nb("#md # A new title", SOLUTION, "check_double(double)"), solution)
    assert nbs.main(["build", "--overwrite-answers"]) == 0
    [backup] = exercise.parent.glob("00_x.ipynb.*.bak")
    assert backup.read_text(encoding="utf-8") == learners
    assert "A new title" in exercise.read_text(encoding="utf-8")
    assert capsys.readouterr().out == (
        f"kept the learner's work (answers in cell 2; added cell 5) from {exercise} in {backup}\nwrote {exercise}\n"
    )


def test_running_the_cells_without_typing_anything_is_not_work_to_keep(tmp_path, monkeypatch):
    solution, exercise = course(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    nb = nbformat.read(exercise, as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="ran\n")]
    exercise.write_text(nbs.render(nb), encoding="utf-8")
    nbformat.write(make_nb("#md # A new title", SOLUTION, "check_double(double)"), solution)
    assert nbs.build() == ([f"wrote {exercise}"], [])


def test_backups_of_a_learners_answers_are_ignored_by_git():
    backup = "notebooks/00_orientation.ipynb.20250101-120000.bak"
    ignored = subprocess.run(["git", "check-ignore", "-q", backup], cwd=ROOT)
    assert ignored.returncode == 0, f"git would offer to commit {backup}"


# ---------------------------------------------------------------------------------------
# A solution never reaches the exercise notebook


def test_an_exercise_cell_without_its_markers_stops_the_build():
    unmarked = SOLUTION.replace("    ### BEGIN SOLUTION\n", "").replace("\n    ### END SOLUTION", "")
    with pytest.raises(nbs.NotebookError, match="would be copied into the exercise notebook"):
        nbs.build_notebook(make_nb(unmarked, "check_double(double)"), "00_x.ipynb")


def solution_only_lines(nb):
    """Lines that the solutions notebook writes only between the markers."""
    inside, outside = set(), set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        within = False
        for line in cell.source.split("\n"):
            if line.strip() in (nbs.BEGIN, nbs.END):
                within = line.strip() == nbs.BEGIN
                continue
            (inside if within else outside).add(line.strip())
    return inside - outside - {""}


@pytest.mark.parametrize("solution", sorted(SOLUTIONS.glob("*.ipynb")), ids=lambda p: p.name)
def test_no_solution_line_reaches_an_exercise_cell(solution):
    secret = solution_only_lines(nbformat.read(solution, as_version=4))
    assert secret, "the lesson has exercises"
    for exercise in (nbs.read_notebook(NOTEBOOKS / solution.name), nbs.expected_notebooks()[NOTEBOOKS / solution.name]):
        code = {line.strip() for c in exercise.cells if c.cell_type == "code" for line in c.source.split("\n")}
        assert code & secret == set()


# ---------------------------------------------------------------------------------------
# A file that is not a notebook


@pytest.mark.parametrize(
    "content,problem",
    [("1", "its JSON has no nbformat version"), ("{not json", "it is not JSON"), ('{"nbformat": 4}', "not a valid")],
)
@pytest.mark.parametrize("command", ["build", "check", "execute"])
def test_a_file_that_is_not_a_notebook_is_named_in_one_sentence(
    tmp_path, monkeypatch, capsys, command, content, problem
):
    monkeypatch.setattr(nbs, "SOLUTIONS", tmp_path)
    monkeypatch.setattr(nbs, "NOTEBOOKS", tmp_path / "notebooks")
    (tmp_path / "00_x.ipynb").write_text(content)
    assert nbs.main([command]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / '00_x.ipynb'} is not ") and problem in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_the_executor_reports_the_kernels_own_peak_memory_not_its_parents(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = list(range(1000))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "small.ipynb")
    ballast = b"x" * 1_500_000_000  # the launching process holds 1.5 GB while the kernel runs
    result = nbs.execute(tmp_path / "small.ipynb")
    assert len(ballast) and result["error"] is None
    assert 0 < result["peak_mb"] < 500, result


def test_the_kernel_says_nothing_about_its_local_sockets_while_the_course_runs(tmp_path, capfd):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys; print('to stderr', file=sys.stderr)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "quiet.ipynb")
    assert nbs.execute(tmp_path / "quiet.ipynb")["error"] is None
    err = capfd.readouterr().err
    assert "without encryption" not in err and "IPKernelApp" not in err, err


def test_executing_in_place_keeps_the_outputs_and_a_failure_leaves_the_file_alone(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('hello')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "ok.ipynb")
    assert nbs.execute(tmp_path / "ok.ipynb", save=True)["error"] is None
    saved = nbformat.read(tmp_path / "ok.ipynb", as_version=4)
    assert saved.cells[0].outputs[0]["text"] == "hello\n" and saved.cells[0].execution_count == 1
    assert saved.metadata["kernelspec"] == nbs.KERNELSPEC, "what JupyterLab sets on opening it"
    assert (tmp_path / "ok.ipynb").read_text(encoding="utf-8") == nbs.render(saved), "as JupyterLab writes it"
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


def test_a_stalled_kernel_is_run_once_more_and_said_so(monkeypatch, capsys):
    from nbclient.exceptions import CellTimeoutError

    calls = []

    def once(path, save, keep, timeout, env, prelude):
        calls.append(path)
        if len(calls) == 1:
            raise CellTimeoutError("no reply from the kernel")
        return {"notebook": "x.ipynb", "seconds": 1.0, "peak_mb": 1, "error": None}

    monkeypatch.setattr(nbs, "_execute_once", once)
    assert nbs.execute("x.ipynb")["retried"] is True and len(calls) == 2
    assert "stalled" in capsys.readouterr().err


def test_a_notebook_that_stalls_twice_fails(monkeypatch):
    from nbclient.exceptions import CellTimeoutError

    def stall(path, save, keep, timeout, env, prelude):
        raise CellTimeoutError("no reply from the kernel")

    monkeypatch.setattr(nbs, "_execute_once", stall)
    with pytest.raises(CellTimeoutError):
        nbs.execute("x.ipynb")


def test_a_workshop_build_leaves_out_every_solution_and_keeps_every_exercise_and_check(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "utils.course.notebooks",
            "build",
            "--no-solutions",
            "--out",
            str(tmp_path / "workshop"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    built = sorted((tmp_path / "workshop").glob("*.ipynb"))
    assert [p.name for p in built] == sorted(p.name for p in SOLUTIONS.glob("*.ipynb"))
    for path in built:
        mine = nbformat.read(path, as_version=4)
        usual = nbformat.read(NOTEBOOKS / path.name, as_version=4)
        assert not any("<summary>Solution</summary>" in c.source for c in mine.cells), path.name
        assert any("<summary>Solution</summary>" in c.source for c in usual.cells), path.name
        stubs = [c.source for c in mine.cells if "raise NotImplementedError(" in c.source]
        assert stubs == [c.source for c in usual.cells if "raise NotImplementedError(" in c.source]
        assert [c.source for c in mine.cells if c.source.startswith("from utils.checks")] == [
            c.source for c in usual.cells if c.source.startswith("from utils.checks")
        ]
    assert not r.stderr and nbs.check()[0] == [], "the course's own notebooks are untouched"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--no-solutions"], "build --no-solutions needs --out"),
        (["--no-solutions", "--out", "notebooks"], "writes into a folder of its own, not notebooks"),
        (["--out", "somewhere"], "--out goes with build --no-solutions"),
    ],
)
def test_a_workshop_build_without_a_folder_of_its_own_is_refused_in_one_sentence(args, message):
    r = subprocess.run(
        [sys.executable, "-m", "utils.course.notebooks", "build", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
