"""Exercise notebooks are generated from the solutions: ``python -m utils.course.notebooks build``.

``solutions/NN_topic.ipynb`` is the single source. In a code cell, an exercise looks like::

    def previous_token_scores(pattern):
        # EXERCISE: return each head's mean attention from a position to the one before it
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

The build writes ``notebooks/NN_topic.ipynb`` where the lines between the markers become
``raise NotImplementedError("<the task>")`` (indented like the markers), every output and
execution count is cleared, and a collapsible "Solution" cell holding the solution code is
added after the exercise's check cell (the first later code cell that calls ``check_``).
Cells tagged ``solution-only`` are dropped from the exercise notebook. A code cell with an
``# EXERCISE:`` line but no markers after it stops the build: it would hand out its solution.

Both the build and the executor write what JupyterLab itself writes when it saves (nbformat's
JSON, and the kernelspec JupyterLab sets), so opening a notebook and letting JupyterLab
autosave it changes no byte. Each exercise-notebook cell's id ends in a digest of the source
the build wrote (``exercise-1a2b3c4d`` for a cell holding a stub, ``cell-...`` for the rest):
a cell whose source no longer matches its id was edited by a learner, and a cell without such
an id was added by one. That is read from the notebook alone, so committing the answers to git
changes nothing. ``build`` refuses to overwrite those answers unless given ``--overwrite-answers``,
and then keeps the learner's notebook next to it as ``NN_topic.answers-<time>.ipynb`` (which git
ignores); a notebook the build wrote and nobody typed into, from this build or an older one, is
simply rewritten.

Every file these modules write (a notebook, a kept run, an archive) is written to a temporary name in
its folder and renamed when whole (:func:`write_atomically`), and a folder of notebooks is written
whole or not at all (:func:`write_folder`): a full disk, an unwritable folder or Ctrl-C leaves no cut
file, and :class:`CannotWrite` says what happened in one sentence.

``python -m utils.course.notebooks check`` exits 1 when ``notebooks/`` is out of date with
``solutions/`` (a learner's answers in an exercise notebook do not count), and
``python -m utils.course.notebooks execute`` runs the solutions in place (they are committed executed).
:func:`execute` is the course's one notebook executor: ``make course`` and the records use it
too, for the wall time and the kernel's own peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat

from utils.paths import DATA, NOTEBOOKS, ROOT, SOLUTIONS, shown

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
TASK = re.compile(r"#\s*EXERCISE:\s*(.+)")

# What JupyterLab writes into a notebook's metadata once its kernel starts: ipykernel's own
# kernelspec. A notebook carrying anything else is marked changed on opening and rewritten.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# The ids the build gives exercise-notebook cells: the kind, then a digest of the source.
BUILT_ID = re.compile(r"(cell|exercise)-([0-9a-f]{8})(-\d+)?")
OVERWRITE_FLAG = "--overwrite-answers"
# The copy of a learner's notebook that ``build --overwrite-answers`` keeps next to it.
KEPT_ANSWERS = re.compile(r".+\.answers-\d{8}-\d{6}(-\d+)?\.ipynb")


class NotebookError(ValueError):
    pass


# ---------------------------------------------------------------------------------------
# Writing files whole or not at all


class CannotWrite(OSError):
    """A write that failed and left nothing half-written; ``str()`` is one sentence that names the folder
    (and, for a full disk, how much space the write needs); ``errno`` and ``strerror`` are the failure's."""

    def __init__(self, error: OSError, folder: Path, what: str = "the file", needed: int | None = None):
        self.full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        if self.full:
            need = f": {what} {'need' if what.endswith('s') else 'needs'} {_mb(needed)}" if needed else ""
            free = _free_bytes(folder)
            if needed and free is not None and free < needed:
                need += f" and it has {_mb(free)} free"
            sentence = f"the disk holding {shown(folder)} is full{need}; nothing was left half-written"
        else:
            sentence = f"cannot write into {shown(folder)}: {error.strerror or error}"
        super().__init__(error.errno, error.strerror or str(error))
        self.sentence = sentence

    def __str__(self) -> str:
        return self.sentence

    def advice(self, option: str | None = "--out") -> str:
        """The sentence with what to do, for a command whose ``option`` names the folder (None: a command
        that writes where it must)."""
        if option is None:
            return f"{self.sentence}: free some space and run it again" if self.full else self.sentence
        if self.full:
            return f"{self.sentence}: free some space, or pass {option} a folder on another disk"
        return f"{self.sentence}; pass {option} a folder you can write to"


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{max(1, round(size / 1e3))} KB"


def _free_bytes(folder: Path) -> int | None:
    for where in (Path(folder), *Path(folder).parents):
        try:
            return shutil.disk_usage(where).free
        except OSError:
            continue
    return None


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def _default_mode(kind: int = 0o666) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return kind & ~mask


@contextlib.contextmanager
def atomic_file(path: Path, what: str = "the file", needed: int | None = None) -> Iterator:
    """A binary file to write ``path`` through: it is a temporary file in the same folder, renamed to
    ``path`` once the block ends without error and removed otherwise (Ctrl-C included), so ``path`` is
    either its old self or whole. An OSError becomes :class:`CannotWrite` (``what`` and ``needed``, the
    size in bytes, go into its sentence). The file keeps the mode of the one it replaces."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        mode = path.stat().st_mode & 0o7777 if path.is_file() else _default_mode()
        with open(temporary, "xb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException as error:
        _remove(temporary)
        if isinstance(error, OSError) and not isinstance(error, CannotWrite):
            raise CannotWrite(error, path.parent, what, needed) from None
        raise


def write_atomically(path: Path, content: str | bytes, what: str | None = None) -> None:
    """Write ``content`` (text as UTF-8) to ``path`` whole or not at all (see :func:`atomic_file`)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    with atomic_file(path, what or Path(path).name, len(data)) as file:
        file.write(data)


def write_folder(out: Path, files: dict[str, str | bytes], what: str = "the notebooks") -> list[Path]:
    """Write ``files`` ({name: content}) into the folder ``out`` whole or not at all; returns their paths.

    They are written into a temporary folder first: when ``out`` does not exist yet, one next to it that
    is then renamed ``out``; else one inside it, whose files then replace their namesakes in ``out``
    (files of ``out`` the build did not write are left alone). A failure or Ctrl-C while writing removes
    the temporary folder and leaves ``out`` as it was; an OSError becomes :class:`CannotWrite`."""
    out = Path(out)
    needed = sum(len(c.encode("utf-8") if isinstance(c, str) else c) for c in files.values())
    fresh = not out.exists()
    if not fresh and not out.is_dir():
        raise NotebookError(f"--out {shown(out)} is a file, not a folder")
    staging = None
    try:
        if fresh:
            out.parent.mkdir(parents=True, exist_ok=True)
        staging = (out.parent if fresh else out) / f".{out.name}.{secrets.token_hex(4)}.part"
        staging.mkdir()
        for name, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            with open(staging / name, "xb") as file:
                file.write(data)
        if fresh:
            os.chmod(staging, _default_mode(0o777))
            os.rename(staging, out)
        else:
            for name in files:
                os.replace(staging / name, out / name)
            staging.rmdir()
    except BaseException as error:
        if staging is not None:
            _remove(staging)
        if isinstance(error, OSError):
            raise CannotWrite(error, out, what, needed) from None
        raise
    return [out / name for name in files]


# The cells of a lesson's "On a real model" section (SmolLM2-135M, loaded by its own name whatever MODEL says).
REAL_MODEL_TAG = "real-model"


def without_real_model(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` without the cells tagged ``real-model``: a run that swaps the ``MODEL`` line tests
    the lesson on that model, and the real-model section (which ignores ``MODEL``) adds nothing there but
    time. The lesson's own run (``make course``) and ``make robustness``'s fresh samples run the section;
    the test suite's fresh-sample run leaves it out for time."""
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if REAL_MODEL_TAG not in c.get("metadata", {}).get("tags", [])]
    return nb


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """The notebook at ``path``; a NotebookError naming the file when it is not one."""
    where = shown(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise NotebookError(f"{where} is not a Jupyter notebook: it is not UTF-8 text") from None
    except OSError as error:
        raise NotebookError(f"{where} cannot be read: {error.strerror or error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise NotebookError(
            f"{where} is not a Jupyter notebook: it is not JSON ({error.msg}, line {error.lineno})"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("nbformat"), int):
        raise NotebookError(f"{where} is not a Jupyter notebook: its JSON has no nbformat version")
    try:
        return nbformat.reads(text, as_version=4)
    except Exception as error:  # nbformat raises many kinds for a malformed notebook
        raise NotebookError(f"{where} is not a valid Jupyter notebook ({error})") from None


LINE_LENGTH = 120  # the formatter's (pyproject.toml)


def stub_source(source: str, where: str = "cell") -> tuple[str, list[str]]:
    """Replace every marked solution region; returns (exercise source, solution snippets)."""
    lines = source.split("\n")
    out: list[str] = []
    solutions: list[str] = []
    task = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = TASK.search(line)
        if m:
            task = m.group(1).strip()
        if line.strip() == BEGIN:
            indent = line[: len(line) - len(line.lstrip())]
            try:
                j = next(k for k in range(i + 1, len(lines)) if lines[k].strip() == END)
            except StopIteration:
                raise NotebookError(f"{where}: {BEGIN} without {END}") from None
            if task is None:
                raise NotebookError(f"{where}: a solution region needs a '# EXERCISE: <task>' line before it")
            solutions.append(textwrap.dedent("\n".join(lines[i + 1 : j])))
            stub = f"{indent}raise NotImplementedError({_string_literal(task)})"
            if len(stub) > LINE_LENGTH:  # as the formatter breaks a call too long for one line
                stub = f"{indent}raise NotImplementedError(\n{indent}    {_string_literal(task)}\n{indent})"
            out.append(stub)
            task = None
            i = j + 1
            continue
        if line.strip() == END:
            raise NotebookError(f"{where}: {END} without {BEGIN}")
        out.append(line)
        i += 1
    if task is not None:
        raise NotebookError(
            f"{where}: '# EXERCISE: {task}' has no {BEGIN} ... {END} region after it, "
            "so its solution would be copied into the exercise notebook"
        )
    return "\n".join(out), solutions


def _string_literal(text: str) -> str:
    """``text`` as a Python literal, as the formatter writes strings: double-quoted, or single-quoted
    when the text holds double quotes and no single ones."""
    text = text.replace("\\", "\\\\")
    if '"' in text and "'" not in text:
        return "'" + text + "'"
    return '"' + text.replace('"', '\\"') + '"'


def solution_code(source: str) -> str:
    """The solution cell as a learner should read it: markers and the task line removed."""
    keep = [l for l in source.split("\n") if l.strip() not in (BEGIN, END) and not TASK.search(l)]
    return "\n".join(keep).strip("\n")


def solution_cell(snippets: list[str]) -> nbformat.NotebookNode:
    code = "\n\n".join(s.strip("\n") for s in snippets)
    return nbformat.v4.new_markdown_cell(
        "<details><summary>Solution</summary>\n\n```python\n" + code + "\n```\n\n</details>"
    )


def build_notebook(nb: nbformat.NotebookNode, name: str = "notebook", solutions: bool = True) -> nbformat.NotebookNode:
    """The exercise version of a solutions notebook (``solutions=False``: without the solution cells,
    for a workshop that hands them out later)."""
    out = copy.deepcopy(nb)
    cells = []
    exercises: list[nbformat.NotebookNode] = []  # the cells holding stubs
    pending: list[str] = []  # solutions waiting for their check cell
    ready: list[str] = []  # checked solutions, shown after the hint that follows the check
    for k, cell in enumerate(nb.cells):
        if "solution-only" in cell.get("metadata", {}).get("tags", []):
            continue
        cell = copy.deepcopy(cell)
        is_hint = cell.cell_type == "markdown" and "<summary>Hint</summary>" in cell.source
        if ready and not is_hint:
            if solutions:
                cells.append(solution_cell(ready))
            ready = []
        if cell.cell_type == "code":
            original = cell.source
            cell.source, snippets = stub_source(cell.source, f"{name} cell {k}")
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
            if snippets:
                pending.append(solution_code(original))
                exercises.append(cell)
            elif pending and "check_" in cell.source:
                ready, pending = pending, []
        cells.append(cell)
    if ready and solutions:
        cells.append(solution_cell(ready))
    if pending:
        raise NotebookError(f"{name}: an exercise has no check cell after it (a code cell calling check_...)")
    seen: dict[str, int] = {}
    for cell in cells:  # ids from the content: stable across builds, and they reveal a learner's edits
        kind = "exercise" if any(cell is e for e in exercises) else "cell"
        base = f"{kind}-{_digest(cell.source)}"
        seen[base] = seen.get(base, 0) + 1
        cell["id"] = base if seen[base] == 1 else f"{base}-{seen[base]}"
    out.cells = cells
    out.metadata.pop("widgets", None)  # saved widget views belong to the executed outputs
    out.metadata["kernelspec"] = dict(KERNELSPEC)
    return out


def _digest(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:8]


def render(nb: nbformat.NotebookNode) -> str:
    """The notebook's text exactly as JupyterLab saves it: jupyter_server writes with nbformat
    (one-space indent, sorted keys, sources and outputs split into lines) and ends the file
    with a newline."""
    return nbformat.writes(nb, version=nbformat.NO_CONVERT) + "\n"


def learners_work(nb: nbformat.NotebookNode) -> dict[str, list[int]]:
    """The cells (numbered from 1) of an exercise notebook that a learner typed into:
    ``answers`` (exercise cells whose source differs from the stub), ``edited`` (other cells
    whose source differs from what the build wrote) and ``added`` (cells the build never wrote).
    Outputs and execution counts are not work: running the notebook again makes them."""
    work: dict[str, list[int]] = {"answers": [], "edited": [], "added": []}
    for number, cell in enumerate(nb.cells, 1):
        built = BUILT_ID.fullmatch(cell.get("id") or "")
        if built is None:
            work["added"].append(number)
        elif _digest(cell.source) != built.group(2):
            work["answers" if built.group(1) == "exercise" else "edited"].append(number)
    return work


def describe_work(work: dict[str, list[int]]) -> str:
    """``answers in cells 12, 20; 1 added cell``, or "" when there is none."""
    parts = []
    for key, label in (("answers", "answers in"), ("edited", "edits in"), ("added", "added")):
        cells = work[key]
        if cells:
            numbers = ", ".join(str(n) for n in cells)
            parts.append(f"{label} cell{'s' if len(cells) > 1 else ''} {numbers}")
    return "; ".join(parts)


def _built_ids(nb: nbformat.NotebookNode) -> list[str]:
    return [c.get("id") for c in nb.cells if BUILT_ID.fullmatch(c.get("id") or "")]


def expected_notebooks() -> dict[Path, nbformat.NotebookNode]:
    """{exercise notebook path: the notebook the build writes} for every solutions notebook."""
    return {
        NOTEBOOKS / path.name: build_notebook(read_notebook(path), path.name)
        for path in sorted(SOLUTIONS.glob("*.ipynb"))
    }


def expected() -> dict[Path, str]:
    """{exercise notebook path: its exact contents} for every solutions notebook."""
    return {path: render(nb) for path, nb in expected_notebooks().items()}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def build(overwrite_answers: bool = False) -> tuple[list[str], list[str]]:
    """Write every exercise notebook that differs from its solutions notebook's build.

    Returns (what was done, what was refused): a notebook holding a learner's work (answers,
    edits, added cells, or a file that is no longer a notebook), committed to git or not, is left
    alone unless ``overwrite_answers``, and then copied to ``NN_topic.answers-<time>.ipynb`` first.
    A notebook the build wrote, now or in an older version, that nobody typed into is rewritten.
    """
    try:
        NOTEBOOKS.mkdir(exist_ok=True)
    except OSError as error:
        raise CannotWrite(error, NOTEBOOKS) from None
    done, refused = [], []
    for path, text in expected().items():
        current = _read_text(path) if path.exists() else None
        if current == text:
            continue
        if path.exists():
            try:
                work = describe_work(learners_work(read_notebook(path)))
            except NotebookError as error:
                work = str(error)
            if work:
                if not overwrite_answers:
                    refused.append(
                        f"{shown(path)} holds a learner's work ({work}), so it was not rebuilt; "
                        f"to rebuild it anyway, with a copy kept next to it, run: "
                        f"python -m utils.course.notebooks build {OVERWRITE_FLAG}"
                    )
                    continue
                backup = kept_answers_path(path)
                write_atomically(backup, path.read_bytes(), "the copy of the learner's notebook")
                shutil.copystat(path, backup)
                done.append(f"kept the learner's work ({work}) from {shown(path)} in {shown(backup)}")
        write_atomically(path, text)
        done.append(f"wrote {shown(path)}")
    return done, refused


def kept_answers_path(path: Path) -> Path:
    """Where ``build --overwrite-answers`` keeps a learner's ``NN_topic.ipynb``: next to it, as
    ``NN_topic.answers-<time>.ipynb`` (a notebook JupyterLab opens; git ignores it), never over another."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidates = (f"{path.stem}.answers-{stamp}{'' if n == 1 else f'-{n}'}.ipynb" for n in range(1, 1000))
    return next(path.with_name(name) for name in candidates if not path.with_name(name).exists())


def workshop_notebooks(
    first_cell: Callable[[str, str], str] | None = None,
    solutions: Path | None = None,
    markdown: Callable[[str, str], str] | None = None,
) -> dict[str, str]:
    """{file name: text} of every lesson's exercise notebook without its solution cells, built from the
    notebooks in ``solutions`` (default: the course's solutions/). ``first_cell``, when given, rewrites the
    source of each notebook's first code cell, ``first_cell(notebook's name, source)`` (a workshop's
    stamped setup cell); ``markdown``, each Markdown cell's, ``markdown(notebook's name, source)`` (its links
    pointed at the published site)."""
    out = {}
    for path in sorted(Path(solutions or SOLUTIONS).glob("*.ipynb")):
        notebook = build_notebook(read_notebook(path), path.name, solutions=False)
        if first_cell is not None:
            first = next(c for c in notebook.cells if c.cell_type == "code")
            first.source = first_cell(path.name, first.source)
        if markdown is not None:
            for cell in notebook.cells:
                if cell.cell_type == "markdown":
                    cell.source = markdown(path.name, cell.source)
        out[path.name] = render(notebook)
    return out


def build_without_solutions(out: Path, first_cell: Callable[[str, str], str] | None = None) -> list[str]:
    """Write every lesson's exercise notebook without its solution cells into ``out`` (a folder of its
    own: the course's notebooks/ keeps the solutions), all of them or, on a failure, none; returns what
    was written. ``first_cell`` is as for :func:`workshop_notebooks`."""
    out = Path(out)
    if out.resolve() in (NOTEBOOKS.resolve(), SOLUTIONS.resolve()):
        raise NotebookError(f"--no-solutions writes into a folder of its own, not {shown(out)}: pass --out another one")
    if out.exists() and not out.is_dir():
        raise NotebookError(f"--out {shown(out)} is a file, not a folder")
    written = write_folder(out, workshop_notebooks(first_cell))
    return [f"wrote {shown(path)}" for path in written]


def _untouched(nb: nbformat.NotebookNode) -> bool:
    """Is ``nb`` as a build wrote it, as far as a learner goes: no work typed in, no cell run?"""
    ran = any(c.get("outputs") or c.get("execution_count") is not None for c in nb.cells if c.cell_type == "code")
    return not ran and not describe_work(learners_work(nb))


def check() -> tuple[list[str], list[str]]:
    """(problems, notes) for ``notebooks/``.

    A problem is an exercise notebook that differs from what the build writes from
    ``solutions/``. An exercise notebook a learner has worked in differs too: when its cells are
    the ones this build writes (the same ids, in order, with the learner's own cells between
    them), it is up to date and the learner's work is listed as a note, not as a problem. A
    notebook nobody typed into or ran is compared byte for byte. Whether git holds the notebook
    makes no difference. The copies ``build --overwrite-answers`` keeps are neither.
    """
    problems, notes = [], []
    want = expected_notebooks()
    for path, nb in want.items():
        text = render(nb)
        if not path.exists():
            problems.append(f"{shown(path)} is missing")
            continue
        if _read_text(path) == text:
            continue
        try:
            have = read_notebook(path)
        except NotebookError as error:
            problems.append(str(error))
            continue
        built = _built_ids(have)
        work = describe_work(learners_work(have))
        if not _untouched(have) and built and _is_subsequence(built, _built_ids(nb)):
            work = work or "outputs only"
            notes.append(f"{shown(path)} holds a learner's work ({work}); compared only the cells the build writes")
        elif work:
            problems.append(
                f"{shown(path)} is out of date with solutions/{path.name} and holds a learner's work ({work}), which "
                f"build leaves alone; to rebuild it, keeping the learner's notebook next to it, run: "
                f"python -m utils.course.notebooks build {OVERWRITE_FLAG}"
            )
        else:
            problems.append(f"{shown(path)} is out of date with solutions/{path.name}")
    extra = {p for p in NOTEBOOKS.glob("*.ipynb") if not KEPT_ANSWERS.fullmatch(p.name)} - set(want)
    problems += [f"{shown(p)} has no source in solutions/" for p in sorted(extra)]
    return problems, notes


def _is_subsequence(items: list[str], within: list[str]) -> bool:
    rest = iter(within)
    return all(any(item == other for other in rest) for item in items)


def stale() -> list[str]:
    """Problems that make ``notebooks/`` differ from what the build would write."""
    return check()[0]


FIX_STALE = (
    f"run: python -m utils.course.notebooks build (it leaves a notebook holding a learner's answers alone "
    f"unless given {OVERWRITE_FLAG}, and then keeps a copy)"
)


def _fixed_by_build(problem: str) -> bool:
    """Does plain ``build`` fix this problem of :func:`check`'s (not one that says what to run itself)?"""
    return OVERWRITE_FLAG not in problem


ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in IPython's error lines

# Run in the kernel after the notebook: the kernel's own peak resident memory. Linux's VmHWM
# belongs to this process alone; ru_maxrss would carry over the launching process's peak
# across exec. Elsewhere (macOS) ru_maxrss is the best there is (bytes there, KiB on Linux).
PEAK_MEMORY_CODE = """\
def _course_peak_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
import sys
print(f"COURSE_PEAK_MB {_course_peak_mb()}")"""


def execute(
    path: Path,
    *,
    save: bool = False,
    keep: Path | None = None,
    timeout: int = 240,
    env: dict[str, str] | None = None,
    prelude: str = "",
) -> dict:
    """Run a notebook in a fresh kernel, in its own folder; the course's one executor.

    Returns ``{"notebook", "seconds", "peak_mb", "error", "retried"}`` (``error`` is the last
    line of the first failing cell's error, or None). With ``save=True`` the executed notebook is
    written back in place, with its widget state, as the solutions are committed. With ``keep`` (a
    folder) a copy of the executed notebook is kept there, stamped with :func:`fingerprint` and its
    error, for :func:`kept_run` (``make course`` keeps its runs for the test suite). ``env`` adds
    variables to the kernel's environment; ``prelude`` is code the kernel runs before the first
    cell, kept out of the notebook (the robustness sweep uses both).

    ``timeout`` bounds each cell (the slowest lesson cell takes well under a minute). The client is
    :class:`~utils.course.kernel_client.CourseNotebookClient`, which cannot sleep on a reply that has
    already come (nbclient could, after a cell printed into an Output widget). A kernel that still
    stalls or dies is started afresh and the notebook run once more, and ``retried`` says so on stderr
    and in the result (ipykernel 7 lost a message now and then on a busy machine: the course pins
    ipykernel 6, and the retry stays as a guard). A stall is seen without waiting out ``timeout``: a
    kernel that, with its child processes, uses almost no processor time for ``STALL_WINDOW`` seconds
    while a cell is running is idle, not busy (:func:`_stall_watch`). A cell that raises is never
    retried, and a notebook that stalls twice fails.
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    try:
        return {**_execute_once(path, save, keep, timeout, env, prelude), "retried": False}
    except (CellTimeoutError, DeadKernelError, TimeoutError) as e:
        print(
            f"{Path(path).name}: the kernel stalled or died ({type(e).__name__} at {e}); running it once more",
            file=sys.stderr,
        )
        return {**_execute_once(path, save, keep, timeout, env, prelude), "retried": True}


# What would let a lesson's kernel send work elsewhere: nnsight reads NDIF's key and host from the
# environment, else from its own config file (where CONFIG.save() keeps a key), which the kernels skip.
REMOTE_ENV = ("NDIF_API_KEY", "NDIF_HOST")
NNSIGHT_CONFIG = "NNSIGHT_CONFIG"


def kernel_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a lesson's kernel starts with: this process's, without what would send work to
    NDIF (the lessons run offline), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in REMOTE_ENV}
    return {**env, NNSIGHT_CONFIG: os.devnull, **(extra or {})}


def _execute_once(
    path: Path, save: bool, keep: Path | None, timeout: int, env: dict[str, str] | None, prelude: str
) -> dict:
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    from utils.course.kernel_client import CourseNotebookClient

    path = Path(path)
    nb = read_notebook(path)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)  # what JupyterLab would write on opening it
    client = CourseNotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        # Always on: nbclient's Output-widget hook writes into the widget state whether or not
        # it is kept, and fails with a KeyError when it is not stored.
        store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
        # The kernel logs a warning that its local TCP sockets are unencrypted, on every start: true of
        # every Jupyter kernel on one machine, and alarming in a learner's output. Its errors still show.
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
        # The notebook is done by the time the kernel stops: stop it at once (asked to shut down gently while
        # it answers a Ctrl-C, a kernel logs a traceback of its own).
        shutdown_kernel="immediate",
    )
    error, peak = None, None
    t = time.time()
    client.reset_execution_trackers()

    with client.setup_kernel(env=kernel_environment(env)), _stall_watch(client) as stalled:
        info = client.wait_for_reply(client.kc.kernel_info())
        if info is not None and "language_info" in info["content"]:
            nb.metadata["language_info"] = info["content"]["language_info"]
        if prelude:
            nb.cells.insert(0, nbformat.v4.new_code_cell(prelude))
            client.execute_cell(nb.cells[0], 0)
            nb.cells.pop(0)
        try:
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
        except CellExecutionError as e:
            error = ANSI.sub("", str(e)).strip().splitlines()[-1][:300]
        except (CellTimeoutError, DeadKernelError) as e:  # name the cell: the retry's message says where it stalled
            first = (cell.source.strip().splitlines() or [""])[0][:80]
            if stalled.is_set():  # stopped by the watch, not dead of its own accord
                raise CellTimeoutError(
                    f"cell {index}, {first!r}: idle for {STALL_WINDOW:g} s with no reply (stopped by the watch)"
                ) from e
            raise type(e)(f"cell {index}, {first!r}") from e
        seconds = time.time() - t
        nb.cells.append(nbformat.v4.new_code_cell(PEAK_MEMORY_CODE))
        client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
        probe = nb.cells.pop()
        # One print, but the kernel may flush its stream in pieces: read the stdout chunks together.
        printed = "".join(out.get("text", "") for out in probe.get("outputs", []) if out.get("name") == "stdout")
        found = re.search(r"COURSE_PEAK_MB ([\d.]+)", printed)
        peak = float(found.group(1)) if found else None
        if save:
            client.set_widgets_metadata()
    if save and error is None:
        write_atomically(path, render(nb))
    if keep is not None and not env and not prelude:
        nb.metadata[KEPT_RUN] = {"fingerprint": fingerprint(path), "error": error}
        try:
            Path(keep).mkdir(parents=True, exist_ok=True)
        except OSError as failed:
            raise CannotWrite(failed, Path(keep)) from None
        write_atomically(Path(keep) / path.name, render(nb), "the kept run")
    return {
        "notebook": path.name,
        "seconds": round(seconds, 1),
        "peak_mb": round(peak) if peak else None,
        "error": error,
    }


# A kernel at work uses the processor (or its child processes do), however busy the machine: with six
# processes on two cores each gets a third of a core. One that used under STALL_CPU seconds of processor in
# STALL_WINDOW seconds of a running cell is waiting for a message that will not come.
STALL_WINDOW = 60.0  # seconds
STALL_CPU = 0.5  # seconds of processor time, the kernel and its child processes together


@contextlib.contextmanager
def _stall_watch(client) -> Iterator:
    """While inside, a thread reads the kernel's processor time every twelfth of ``STALL_WINDOW``; when
    the kernel has used less than ``STALL_CPU`` seconds of it over the last ``STALL_WINDOW`` seconds, the
    thread stops the kernel, so that the client's wait for a reply ends at once (nbclient sees the kernel
    gone within a second) instead of at the cell's timeout. Yields an Event that is set when it did."""
    import signal
    import threading

    import psutil

    stalled, done = threading.Event(), threading.Event()
    pid = getattr(getattr(client.km, "provisioner", None), "pid", None)

    def used(process: psutil.Process) -> float:
        total = 0.0
        for p in (process, *process.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                total += times.user + times.system
        return total

    def watch() -> None:
        try:
            kernel = psutil.Process(pid)
            readings = [(time.monotonic(), used(kernel))]
            while not done.wait(STALL_WINDOW / 12):
                readings.append((time.monotonic(), used(kernel)))
                # drop the oldest reading while the next one is itself at least a window old
                while len(readings) > 2 and readings[-1][0] - readings[1][0] >= STALL_WINDOW:
                    readings.pop(0)
                (t0, cpu0), (t1, cpu1) = readings[0], readings[-1]
                if t1 - t0 >= STALL_WINDOW and cpu1 - cpu0 < STALL_CPU:
                    stalled.set()
                    os.kill(pid, signal.SIGKILL)
                    return
        except (psutil.Error, ProcessLookupError):  # the kernel is gone already: nbclient says so itself
            return

    thread = threading.Thread(target=watch, name="kernel-stall-watch", daemon=True)
    if pid is not None:
        thread.start()
    try:
        yield stalled
    finally:
        done.set()
        if thread.is_alive():
            thread.join()


KEPT_RUN = "course_run"  # the metadata key of a kept run's stamp


def fingerprint(path: Path) -> str:
    """A digest of everything a notebook's run depends on: its own bytes, every module of
    ``utils``, every file under ``data/``, the installed versions of the packages the course pins
    or ranges, Python's, and the fresh-sample switch of the environment. A kept run is reused
    only while this is unchanged."""
    digest = hashlib.sha256(Path(path).read_bytes())
    for base, pattern in ((ROOT / "utils", "*.py"), (DATA, "*")):
        for file in sorted(p for p in base.rglob(pattern) if p.is_file()):
            digest.update(f"{base.name}/{file.relative_to(base)}".encode() + b"\0" + file.read_bytes())
    from utils.course import versions

    for package in sorted(versions.TESTED):
        digest.update(f"{package}={versions.installed(package)}".encode())
    digest.update(sys.version.encode())
    from utils import seeds

    digest.update(f"{seeds.FRESH_SAMPLE_ENV}={os.environ.get(seeds.FRESH_SAMPLE_ENV)}".encode())
    return digest.hexdigest()


def kept_run(path: Path, folder: Path) -> nbformat.NotebookNode | None:
    """The run of ``path`` kept in ``folder`` by :func:`execute`, if it was made from this very
    notebook, code, data and environment; else None."""
    kept = Path(folder) / Path(path).name
    if not kept.exists():
        return None
    try:
        nb = read_notebook(kept)
    except NotebookError:  # cut off (by a full disk, say): no run to reuse
        return None
    stamp = nb.metadata.get(KEPT_RUN, {})
    return nb if stamp.get("fingerprint") == fingerprint(path) else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m utils.course.notebooks", description="Generate exercise notebooks from solutions/."
    )
    ap.add_argument("command", choices=["build", "check", "execute"])
    ap.add_argument("paths", nargs="*", type=Path, help="with execute: notebooks (default: all solutions)")
    ap.add_argument(
        OVERWRITE_FLAG,
        action="store_true",
        help="with build: rebuild exercise notebooks holding a learner's answers, keeping a .bak copy of each",
    )
    ap.add_argument(
        "--no-solutions",
        action="store_true",
        help="with build: write the exercise notebooks without their solution cells into --out (for a workshop)",
    )
    ap.add_argument("--out", type=Path, help="with build --no-solutions: the folder to write them into")
    args = ap.parse_args(argv)
    try:
        return _command(args)
    except NotebookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except CannotWrite as error:
        print(f"error: {error.advice('--out' if args.out is not None else None)}", file=sys.stderr)
        return 1


def _command(args) -> int:
    if args.command == "execute":
        status = 0
        for path in args.paths or sorted(SOLUTIONS.glob("*.ipynb")):
            read_notebook(path)  # a file that is not a notebook stops here, named
            print(f"executing {path.name}", flush=True)
            result = execute(path, save=True)
            if result["error"]:
                print(f"  FAILED (left unchanged): {result['error']}")
                status = 1
        return status
    if args.paths:
        raise NotebookError(f"{args.command} takes no paths: it works on every notebook in solutions/")
    if args.command == "build" and args.no_solutions:
        if args.out is None:
            raise NotebookError("build --no-solutions needs --out, a folder of its own for the workshop's notebooks")
        for line in build_without_solutions(args.out):
            print(line)
        return 0
    if args.out is not None:
        raise NotebookError(
            "--out goes with build --no-solutions; the exercise notebooks themselves live in notebooks/"
        )
    if args.command == "build":
        done, refused = build(overwrite_answers=args.overwrite_answers)
        for line in done:
            print(line)
        for line in refused:
            print(line, file=sys.stderr)
        return 1 if refused else 0
    problems, notes = check()
    for line in notes:
        print(line)
    for line in problems:
        print(line)
    if any(_fixed_by_build(p) for p in problems):
        print(FIX_STALE)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
