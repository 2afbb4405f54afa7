"""Exercise notebooks are generated from the solutions: ``python -m utils.notebooks build``.

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
Cells tagged ``solution-only`` are dropped from the exercise notebook.

``python -m utils.notebooks check`` exits 1 when ``notebooks/`` is out of date, and
``python -m utils.notebooks execute`` runs the solutions in place (they are committed executed).
:func:`execute` is the course's one notebook executor: ``make course`` and the records use it
too, for the wall time and the kernel's own peak memory.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import textwrap
import time
from pathlib import Path

import nbformat

from utils.paths import NOTEBOOKS, ROOT, SOLUTIONS

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
TASK = re.compile(r"#\s*EXERCISE:\s*(.+)")


class NotebookError(ValueError):
    pass


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
            out.append(f"{indent}raise NotImplementedError({_string_literal(task)})")
            task = None
            i = j + 1
            continue
        if line.strip() == END:
            raise NotebookError(f"{where}: {END} without {BEGIN}")
        out.append(line)
        i += 1
    return "\n".join(out), solutions


def _string_literal(text: str) -> str:
    """``text`` as a double-quoted Python literal, as the formatter writes strings."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def solution_code(source: str) -> str:
    """The solution cell as a learner should read it: markers and the task line removed."""
    keep = [l for l in source.split("\n") if l.strip() not in (BEGIN, END) and not TASK.search(l)]
    return "\n".join(keep).strip("\n")


def solution_cell(snippets: list[str]) -> nbformat.NotebookNode:
    code = "\n\n".join(s.strip("\n") for s in snippets)
    return nbformat.v4.new_markdown_cell(
        "<details><summary>Solution</summary>\n\n```python\n" + code + "\n```\n\n</details>"
    )


def build_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The exercise version of a solutions notebook."""
    out = copy.deepcopy(nb)
    cells = []
    pending: list[str] = []  # solutions waiting for their check cell
    ready: list[str] = []  # checked solutions, shown after the hint that follows the check
    for k, cell in enumerate(nb.cells):
        if "solution-only" in cell.get("metadata", {}).get("tags", []):
            continue
        cell = copy.deepcopy(cell)
        is_hint = cell.cell_type == "markdown" and "<summary>Hint</summary>" in cell.source
        if ready and not is_hint:
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
            elif pending and "check_" in cell.source:
                ready, pending = pending, []
        cells.append(cell)
    if ready:
        cells.append(solution_cell(ready))
    if pending:
        raise NotebookError(f"{name}: an exercise has no check cell after it (a code cell calling check_...)")
    for i, cell in enumerate(cells):  # stable ids: the exercise notebook diffs cleanly
        cell["id"] = f"cell-{i}"
    out.cells = cells
    out.metadata.pop("widgets", None)  # saved widget views belong to the executed outputs
    return out


def render(nb: nbformat.NotebookNode) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def expected() -> dict[Path, str]:
    """{exercise notebook path: its exact contents} for every solutions notebook."""
    out = {}
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        out[NOTEBOOKS / path.name] = render(build_notebook(nb, path.name))
    return out


def build() -> list[Path]:
    NOTEBOOKS.mkdir(exist_ok=True)
    written = []
    for path, text in expected().items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


def stale() -> list[str]:
    """Problems that make ``notebooks/`` differ from what the build would write."""
    want = expected()
    problems = [
        f"{p.relative_to(ROOT)} is out of date" for p, t in want.items() if not p.exists() or p.read_text() != t
    ]
    extra = set(NOTEBOOKS.glob("*.ipynb")) - set(want)
    problems += [f"{p.relative_to(ROOT)} has no source in solutions/" for p in sorted(extra)]
    return problems


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
print("COURSE_PEAK_MB", _course_peak_mb())"""


def execute(path: Path, *, save: bool = False, timeout: int = 600) -> dict:
    """Run a notebook in a fresh kernel, in its own folder; the course's one executor.

    Returns ``{"notebook", "seconds", "peak_mb", "error"}`` (``error`` is the last line of the
    first failing cell's error, or None). With ``save=True`` the executed notebook is written
    back in place, with its widget state, as the solutions are committed.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        # Always on: nbclient's Output-widget hook writes into the widget state whether or not
        # it is kept, and fails with a KeyError when it is not stored.
        store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    error, peak = None, None
    t = time.time()
    client.reset_execution_trackers()
    with client.setup_kernel():
        info = client.wait_for_reply(client.kc.kernel_info())
        if info is not None and "language_info" in info["content"]:
            nb.metadata["language_info"] = info["content"]["language_info"]
        try:
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
        except CellExecutionError as e:
            error = ANSI.sub("", str(e)).strip().splitlines()[-1][:300]
        seconds = time.time() - t
        nb.cells.append(nbformat.v4.new_code_cell(PEAK_MEMORY_CODE))
        client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
        probe = nb.cells.pop()
        for out in probe.get("outputs", []):
            if out.get("name") == "stdout" and "COURSE_PEAK_MB" in out.get("text", ""):
                peak = float(out["text"].split()[1])
        if save:
            client.set_widgets_metadata()
    if save and error is None:
        path.write_text(render(nb))
    return {
        "notebook": path.name,
        "seconds": round(seconds, 1),
        "peak_mb": round(peak) if peak else None,
        "error": error,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m utils.notebooks", description="Generate exercise notebooks from solutions/."
    )
    ap.add_argument("command", choices=["build", "check", "execute"])
    ap.add_argument("paths", nargs="*", type=Path, help="with execute: notebooks (default: all solutions)")
    args = ap.parse_args(argv)
    if args.command == "execute":
        status = 0
        for path in args.paths or sorted(SOLUTIONS.glob("*.ipynb")):
            print(f"executing {path.name}", flush=True)
            result = execute(path, save=True)
            if result["error"]:
                print(f"  FAILED (left unchanged): {result['error']}")
                status = 1
        return status
    if args.command == "build":
        for p in build():
            print(f"wrote {p.relative_to(ROOT)}")
        return 0
    problems = stale()
    for p in problems:
        print(p)
    if problems:
        print("run: python -m utils.notebooks build")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
