"""The setup cell's answer to a cell stopped by an unfinished exercise: one line naming the exercise,
for the cell that calls a stub and for a later cell whose failing line reads what a stopped cell
would have made; every other error, the learner's own, shows as it is."""

import ast

import nbformat

from utils.course import notebook_setup as ns
from utils.course.kernel_client import CourseNotebookClient
from utils.paths import ROOT

SETUP = "from utils.course.notebook_setup import setup\n\nDEVICE = setup(quiet=True)"


def run(*sources: str) -> list:
    """Run the setup cell and then these cells in a real kernel, past their errors; each cell's error
    output (None where it ran)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in (SETUP, *sources)]
    CourseNotebookClient(
        nb, timeout=120, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    return [next((o for o in c.outputs if o.output_type == "error"), None) for c in nb.cells[1:]]


def own(error, ename: str, evalue: str) -> bool:
    """The learner's own error, shown with its traceback."""
    return error.ename == ename and evalue in error.evalue and len(error.traceback) > 1


def needs(error, stub: str) -> bool:
    """The one-line answer: this cell needs what ``stub`` would have made."""
    return (
        error.ename == "Unfinished"
        and len(error.traceback) == 1
        and f"needs what an unfinished exercise would have made: finish `{stub}` first" in error.traceback[0]
    )


STUB = "def steering_vector(values):\n    # EXERCISE: the mean\n    raise NotImplementedError('the mean')"
CALL = (
    "values = [1, 2, 3]\nsettings = {'layer': 3}\nxs = [0, 1, 2]\nvector = steering_vector(values)\nnorm = abs(vector)"
)


def test_the_learners_own_mistakes_show_their_own_errors_while_a_stub_is_unfinished():
    errors = run(
        STUB,
        CALL,
        "print(sum(vlaues))",
        "settings['layr']",
        "xs[5]",
        "assert len(values) == 4, 'my own sanity check failed'",
        "1 / 0",
        "print(vector)",
    )
    stopped, typo, key, index, sanity, zero, dependent = errors[1:]
    assert "`steering_vector` is still the stub" in stopped.traceback[0] and len(stopped.traceback) == 1
    assert own(typo, "NameError", "name 'vlaues' is not defined")
    assert own(key, "KeyError", "'layr'")
    assert own(index, "IndexError", "list index out of range")
    assert own(sanity, "AssertionError", "my own sanity check failed")
    assert own(zero, "ZeroDivisionError", "division by zero")
    assert needs(dependent, "steering_vector"), "the stopped cell would have made `vector`"


def test_what_a_stopped_cell_would_have_made_is_followed_through_the_cells_that_need_it():
    errors = run(
        STUB,
        CALL,
        "doubled = vector * 2\nprint('never printed')",  # stopped in turn: `doubled` is never made
        "print(doubled + 1)",
        "print(norm)",  # after the stub's line in the stopped cell
        "results = {}\nfor layer in range(3):\n    results[layer] = steering_vector([layer])",
        "results[2]",  # half filled: a KeyError
        "def scaled(c):\n    return c * vector",
        "scaled(2)",  # inside a function of the notebook's, the line reads `vector`
        "assert len(values) == 3\nassert results[1] > 0",  # the learner's own check passes; the next line needs it
        "def steering_vector(values):\n    return sum(values) / len(values)",
        "print(doubled)",  # the exercise is done: a missing name is the learner's to fix
    )
    for i in (2, 3, 4, 6, 8, 9):
        assert needs(errors[i], "steering_vector"), (i, errors[i])
    assert "`steering_vector` is still the stub" in errors[5].traceback[0]
    assert errors[7] is None and errors[10] is None
    assert own(errors[11], "NameError", "name 'doubled' is not defined")


def test_a_learners_error_after_a_skipped_exercise_is_blamed_only_on_what_the_exercise_would_have_made():
    tree = ast.parse(
        "values = [1, 2]\n"
        "table = {}\n"
        "vec = stub(values)\n"
        "for k, v in pairs:\n"
        "    table[k] = v\n"
        "    seen.append(k)\n"
        "    grid[0].fill_(0)\n"
        "    obj.attr = 1\n"
        "import numpy as np\n"
        "from os import path\n"
        "with open(f) as handle:\n"
        "    total += 1\n"
        "def helper():\n"
        "    inner = 1\n"
        "squares = [i * i for i in values]\n"
        "print(len(values))\n"
    )
    made = ns.made_by(tree.body[2:])
    assert made == {
        "vec",
        "k",
        "v",
        "table",
        "seen",
        "grid",
        "obj",
        "np",
        "path",
        "handle",
        "total",
        "helper",
        "squares",
    }
    assert ns.used_at(tree, 16) == {"print", "len", "values"}
    assert ns.used_at(tree, 4) == {"k", "v", "pairs"}, "of a for loop's header, the header's names only"
    assert ns.used_at(tree, 5) == {"table", "k", "v"}
