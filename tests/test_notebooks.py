"""Exercise notebooks are generated from solutions and kept in sync without ever erasing a
learner's answers or handing out a solution; the one executor runs notebooks."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

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
    [problem] = nbs.check()[0]
    assert problem.startswith(f"{exercise} is out of date with solutions/00_x.ipynb and holds a learner's work")


def test_build_refuses_to_overwrite_a_learners_answers(tmp_path, monkeypatch, capsys):
    solution, exercise = course(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    learners = answer(exercise, run=False, add_cell=False)
    nbformat.write(make_nb("#md # A new title", SOLUTION, "check_double(double)"), solution)
    assert nbs.main(["check"]) == 1
    advice = capsys.readouterr().out.strip().splitlines()[-1]
    assert advice.endswith("which build leaves alone; to rebuild it, keeping the learner's notebook next to it, "
                           "run: python -m utils.course.notebooks build --overwrite-answers")  # fmt: skip
    assert nbs.main(["build"]) == 1, "plain build must not erase the answers"
    assert exercise.read_text(encoding="utf-8") == learners
    assert capsys.readouterr().err == (
        f"{exercise} holds a learner's work (answers in cell 2), so it was not rebuilt; to rebuild it anyway, "
        "with a copy kept next to it, run: python -m utils.course.notebooks build --overwrite-answers\n"
    )
    assert [p.name for p in exercise.parent.iterdir()] == ["00_x.ipynb"]


def test_overwriting_answers_keeps_a_copy_next_to_the_notebook_and_says_so(tmp_path, monkeypatch, capsys):
    solution, exercise = course(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    learners = answer(exercise)
    nbformat.write(make_nb("#md # A new title", SOLUTION, "check_double(double)"), solution)
    assert nbs.main(["build", "--overwrite-answers"]) == 0
    [backup] = exercise.parent.glob("00_x.answers-*.ipynb")
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


def test_a_cell_that_outlasts_the_timeout_is_named_in_the_retry_message_and_the_error(tmp_path, capsys):
    from nbclient.exceptions import CellTimeoutError

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("import time\ntime.sleep(30)")]
    nbformat.write(nb, tmp_path / "slow.ipynb")
    with pytest.raises(CellTimeoutError, match=r"^cell 1, 'import time'$"):
        nbs.execute(tmp_path / "slow.ipynb", timeout=2)
    said = capsys.readouterr().err
    assert "slow.ipynb: the kernel stalled or died (CellTimeoutError at cell 1, 'import time')" in said


def test_an_idle_kernel_is_seen_as_stalled_long_before_the_cells_timeout(tmp_path, monkeypatch, capsys):
    from nbclient.exceptions import CellTimeoutError

    monkeypatch.setattr(nbs, "STALL_WINDOW", 3.0)  # a sleeping kernel is as idle as one that lost a message
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("import time\ntime.sleep(60)")]
    nbformat.write(nb, tmp_path / "idle.ipynb")
    start = time.monotonic()
    with pytest.raises(CellTimeoutError, match=r"^cell 1, 'import time': idle for 3 s with no reply"):
        nbs.execute(tmp_path / "idle.ipynb", timeout=120)
    assert time.monotonic() - start < 45  # two runs, each stopped a few seconds into the sleep, not at 60 or 120 s
    assert "idle.ipynb: the kernel stalled or died (CellTimeoutError at cell 1" in capsys.readouterr().err


def test_a_busy_cell_is_never_taken_for_a_stalled_one(tmp_path, monkeypatch):
    monkeypatch.setattr(nbs, "STALL_WINDOW", 3.0)
    monkeypatch.setattr(nbs, "STALL_CPU", 0.1)  # a thirtieth of a core: a spinning kernel uses more on any machine
    nb = nbformat.v4.new_notebook()
    spin = "import time\nend = time.monotonic() + 6\nwhile time.monotonic() < end:\n    pass"
    nb.cells = [nbformat.v4.new_code_cell(spin)]
    nbformat.write(nb, tmp_path / "busy.ipynb")
    result = nbs.execute(tmp_path / "busy.ipynb", timeout=120)
    assert result["error"] is None and result["retried"] is False


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


# ---------------------------------------------------------------------------------------
# Answers are a learner's whether or not git holds them


def git(folder, *args):
    subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=Learner", "-c", "user.email=learner@example.org", *args],
        check=True,
        capture_output=True,
    )


def committed_course(tmp_path, monkeypatch, *sources):
    """``course(...)`` in a git repository of its own (the learner's clone), everything committed."""
    solution, exercise = course(tmp_path, monkeypatch, *sources)
    monkeypatch.setattr(nbs, "ROOT", tmp_path)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "the course")
    return solution, exercise


@pytest.mark.parametrize("upstream_change", [False, True])
def test_committed_answers_are_kept_by_build_as_uncommitted_ones_are(tmp_path, monkeypatch, capsys, upstream_change):
    solution, exercise = committed_course(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    learners = answer(exercise)
    git(tmp_path, "commit", "-q", "-am", "my answers to lesson 00")
    if upstream_change:
        nbformat.write(make_nb("#md # A new title", SOLUTION, "check_double(double)"), solution)
    assert nbs.main(["build"]) == 1
    assert exercise.read_text(encoding="utf-8") == learners, "the answers are still in the notebook"
    assert [p.name for p in exercise.parent.iterdir()] == ["00_x.ipynb"]
    assert capsys.readouterr().err == (
        f"{exercise} holds a learner's work (answers in cell 2; added cell 5), so it was not rebuilt; to rebuild "
        "it anyway, with a copy kept next to it, run: python -m utils.course.notebooks build --overwrite-answers\n"
    )
    assert nbs.main(["build", "--overwrite-answers"]) == 0
    [kept] = exercise.parent.glob("00_x.answers-*.ipynb")
    assert kept.read_text(encoding="utf-8") == learners


def test_check_counts_committed_answers_as_a_learners_work_and_its_advice_keeps_them(tmp_path, monkeypatch, capsys):
    solution, exercise = committed_course(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    learners = answer(exercise)
    git(tmp_path, "commit", "-q", "-am", "my answers to lesson 00")
    assert nbs.main(["check"]) == 0
    assert capsys.readouterr().out == (
        f"{exercise} holds a learner's work (answers in cell 2; added cell 5); "
        "compared only the cells the build writes\n"
    )
    nbformat.write(make_nb("#md # A new title", SOLUTION, "check_double(double)"), solution)
    assert nbs.main(["check"]) == 1
    printed = capsys.readouterr().out
    assert printed == (
        f"{exercise} is out of date with solutions/00_x.ipynb and holds a learner's work (answers in cell 2; added "
        "cell 5), which build leaves alone; to rebuild it, keeping the learner's notebook next to it, run: "
        "python -m utils.course.notebooks build --overwrite-answers\n"
    )
    assert nbs.main(["build"]) == 1 and exercise.read_text(encoding="utf-8") == learners
    assert nbs.main(["build", "--overwrite-answers"]) == 0
    [kept] = exercise.parent.glob("00_x.answers-*.ipynb")
    assert kept.read_text(encoding="utf-8") == learners and "A new title" in exercise.read_text(encoding="utf-8")
    capsys.readouterr()
    assert nbs.main(["check"]) == 0 and capsys.readouterr().out == "", "the kept copy is not a stale notebook"


@pytest.mark.parametrize("committed", [False, True])
def test_an_untouched_notebook_from_an_older_build_is_rebuilt_without_a_flag(tmp_path, monkeypatch, capsys, committed):
    make = committed_course if committed else course
    solution, exercise = make(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    nbformat.write(make_nb("#md # A new title", SOLUTION.replace("twice", "2 times"), "check_double(double)"), solution)
    assert nbs.main(["check"]) == 1
    assert capsys.readouterr().out == f"{exercise} is out of date with solutions/00_x.ipynb\n{nbs.FIX_STALE}\n"
    assert nbs.main(["build"]) == 0
    assert capsys.readouterr().out == f"wrote {exercise}\n"
    assert exercise.read_text(encoding="utf-8") == nbs.expected()[exercise]
    assert [p.name for p in exercise.parent.iterdir()] == ["00_x.ipynb"]


def test_an_untouched_notebook_that_differs_outside_its_cells_is_out_of_date_not_a_learners_work(tmp_path, monkeypatch):
    _, exercise = course(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    nb = nbformat.read(exercise, as_version=4)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    exercise.write_text(nbs.render(nb), encoding="utf-8")  # what an older build wrote: the same cells
    assert nbs.check() == ([f"{exercise} is out of date with solutions/00_x.ipynb"], [])
    assert nbs.build() == ([f"wrote {exercise}"], [])


def test_the_kept_copy_of_a_learners_answers_opens_as_a_notebook_and_git_ignores_it(tmp_path, monkeypatch):
    solution, exercise = course(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    answer(exercise)
    nbformat.write(make_nb("#md # A new title", SOLUTION, "check_double(double)"), solution)
    done, refused = nbs.build(overwrite_answers=True)
    [kept] = exercise.parent.glob("*.answers-*.ipynb")
    assert re.fullmatch(r"00_x\.answers-\d{8}-\d{6}\.ipynb", kept.name), kept.name
    assert nbs.read_notebook(kept).cells[1].source.endswith("return x + x")
    assert nbs.check() == ([], []), "a kept copy is neither stale nor a notebook without a source"
    ignored = subprocess.run(["git", "check-ignore", "-q", f"notebooks/{kept.name}"], cwd=ROOT)
    assert ignored.returncode == 0, f"git would offer to commit notebooks/{kept.name}"


def test_two_kept_copies_in_the_same_second_do_not_overwrite_each_other(tmp_path, monkeypatch):
    solution, exercise = course(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    monkeypatch.setattr(nbs.time, "strftime", lambda *args: "20261126-114030")
    for title in ("A new title", "Another title"):
        answer(exercise, add_cell=False)
        nbformat.write(make_nb(f"#md # {title}", SOLUTION, "check_double(double)"), solution)
        nbs.build(overwrite_answers=True)
    names = sorted(p.name for p in exercise.parent.glob("*.answers-*.ipynb"))
    assert names == ["00_x.answers-20261126-114030-2.ipynb", "00_x.answers-20261126-114030.ipynb"]


# ---------------------------------------------------------------------------------------
# A full disk, an unwritable folder, a cut-off file: one sentence, nothing half-written


def test_a_workshop_build_on_a_full_disk_leaves_no_cut_notebook_and_says_so(
    simulated_disk, tmp_path, monkeypatch, capsys
):
    simulated_disk(tmp_path, free=220_000)
    assert nbs.main(["build", "--no-solutions", "--out", str(tmp_path / "ws")]) == 1
    needed = sum(len(text.encode()) for text in nbs.workshop_notebooks().values()) / 1e6
    assert capsys.readouterr().err == (
        f"error: the disk holding {tmp_path / 'ws'} is full: the notebooks need {needed:.1f} MB; nothing was "
        "left half-written: free some space, or pass --out a folder on another disk\n"
    )
    assert list(tmp_path.iterdir()) == []
    usage = shutil.disk_usage(tmp_path)._replace(free=220_000)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage)
    assert nbs.main(["build", "--no-solutions", "--out", str(tmp_path / "ws")]) == 1
    assert f"the notebooks need {needed:.1f} MB and it has 0.2 MB free; " in capsys.readouterr().err


def test_a_workshop_build_that_fills_the_disk_of_an_existing_folder_leaves_it_as_it_was(
    simulated_disk, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "ws"
    out.mkdir()
    (out / "slides.md").write_text("the teacher's own file\n")
    (out / "00_orientation.ipynb").write_text("an older build\n")
    simulated_disk(tmp_path, free=220_000)
    assert nbs.main(["build", "--no-solutions", "--out", str(out)]) == 1
    assert "is full" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["00_orientation.ipynb", "slides.md"]
    assert (out / "00_orientation.ipynb").read_text() == "an older build\n"


@pytest.mark.parametrize("exists", [True, False])
def test_a_workshop_build_into_a_folder_it_may_not_write_says_so_in_one_sentence(
    simulated_disk, tmp_path, monkeypatch, capsys, exists
):
    folder = tmp_path / "read-only"
    folder.mkdir()
    out = folder if exists else folder / "ws"
    simulated_disk(folder, writable=False)
    assert nbs.main(["build", "--no-solutions", "--out", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"error: cannot write into {out}: Permission denied; pass --out a folder you can write to\n"
    )
    assert list(folder.iterdir()) == []


def test_build_on_a_full_disk_keeps_the_old_notebook_whole(simulated_disk, tmp_path, monkeypatch, capsys):
    solution, exercise = course(tmp_path, monkeypatch, "#md # Title", SOLUTION, "check_double(double)")
    before = exercise.read_text(encoding="utf-8")
    nbformat.write(make_nb("#md # A new title", SOLUTION, "check_double(double)"), solution)
    simulated_disk(exercise.parent, free=100)
    assert nbs.main(["build"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: the disk holding {exercise.parent} is full: ") and err.count("\n") == 1
    assert exercise.read_text(encoding="utf-8") == before
    assert [p.name for p in exercise.parent.iterdir()] == ["00_x.ipynb"]


def test_a_kept_run_cut_off_counts_as_no_run(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('hello')")]
    nbformat.write(nb, tmp_path / "x.ipynb")
    (tmp_path / "runs").mkdir()
    nb.metadata[nbs.KEPT_RUN] = {"fingerprint": nbs.fingerprint(tmp_path / "x.ipynb"), "error": None}
    whole = nbs.render(nb)
    (tmp_path / "runs" / "x.ipynb").write_text(whole, encoding="utf-8")
    assert nbs.kept_run(tmp_path / "x.ipynb", tmp_path / "runs") is not None
    for cut in (whole[: len(whole) // 2], "", "\x00\x01"):
        (tmp_path / "runs" / "x.ipynb").write_text(cut, encoding="utf-8")
        assert nbs.kept_run(tmp_path / "x.ipynb", tmp_path / "runs") is None


def test_a_kept_run_that_does_not_fit_on_the_disk_leaves_nothing_behind(simulated_disk, tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('hello ' * 200)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "x.ipynb")
    runs = tmp_path / "runs"
    runs.mkdir()
    simulated_disk(runs, free=1000)
    with pytest.raises(OSError, match=f"the disk holding {runs} is full"):
        nbs.execute(tmp_path / "x.ipynb", keep=runs)
    assert list(runs.iterdir()) == []


def test_every_write_goes_through_a_temporary_file_renamed_when_whole(tmp_path, monkeypatch):
    target = tmp_path / "x.txt"
    target.write_text("old")
    seen = []
    real = os.replace

    def replace(source, destination):
        seen.append((Path(source).parent, Path(destination).name, Path(source).read_text()))
        return real(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    nbs.write_atomically(target, "new")
    assert seen == [(tmp_path, "x.txt", "new")] and target.read_text() == "new"
    with pytest.raises(RuntimeError, match="stopped half-way"):
        with nbs.atomic_file(target) as f:
            f.write(b"half")
            raise RuntimeError("stopped half-way")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_the_workshop_agendas_are_written_whole_or_left_as_they_were(simulated_disk, tmp_path, monkeypatch):
    from utils.course import workshop

    (tmp_path / "docs").mkdir()
    agendas = tmp_path / "docs" / "workshop.md"
    shutil.copy(workshop.WORKSHOP, agendas)
    before = agendas.read_text(encoding="utf-8")
    monkeypatch.setattr(workshop, "WORKSHOP", agendas)
    monkeypatch.setattr(workshop, "ROOT", tmp_path)
    monkeypatch.setattr(workshop, "rewrite", lambda text: text + "a newer agenda\n")
    simulated_disk(tmp_path / "docs", free=100)
    with pytest.raises(OSError, match="is full"):
        workshop.main([])
    assert agendas.read_text(encoding="utf-8") == before
    assert [p.name for p in agendas.parent.iterdir()] == ["workshop.md"]


def test_a_stub_too_long_for_one_line_is_broken_as_the_formatter_breaks_it(tmp_path):
    import subprocess
    import sys

    task = "a task described at such length that its comment fits on one line but its stub would not fit"
    source, _ = nbs.stub_source(SOLUTION.replace("return twice the input", task))
    assert max(len(line) for line in source.splitlines()) <= nbs.LINE_LENGTH
    path = tmp_path / "stub.py"
    path.write_text(source + "\n")
    check = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", "--line-length", "120", str(path)])
    assert check.returncode == 0, source
    ns = {}
    exec(source, ns)
    with pytest.raises(NotImplementedError) as raised:
        ns["double"](3)
    assert str(raised.value) == task


def test_a_cell_that_prints_into_an_output_widget_is_never_waited_on_after_its_reply_came(tmp_path):
    # nbclient sends the widget's state to the kernel while it waits for the cell's reply on the same
    # socket; the plain client then slept on a reply that had come in about one cell in ten of these
    nb = nbformat.v4.new_notebook()
    printing = "for i in range(100):\n    with out:\n        print(i)"
    setup = "import ipywidgets as widgets\nout = widgets.Output()\ndisplay(out)"
    nb.cells = [nbformat.v4.new_code_cell(setup)] + [nbformat.v4.new_code_cell(printing) for _ in range(30)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "printing.ipynb")
    result = nbs.execute(tmp_path / "printing.ipynb", timeout=120)
    assert result["error"] is None and result["retried"] is False
    assert result["seconds"] < 50, f"a cell waited on a reply that had come: {result['seconds']} s in all"
