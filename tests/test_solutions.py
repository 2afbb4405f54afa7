"""Every solutions notebook passes nbval in a fresh kernel: every cell runs, and the cells marked
``# NBVAL_CHECK_OUTPUT`` print what the committed notebook shows (ids, addresses, timings and paths
masked by ``tests/sanitize.cfg``).

``make course`` validates every lesson with nbval and keeps each run in ``build/course-runs/``,
stamped with a fingerprint of what it was run from (the notebook, ``utils``, ``data/``, the
installed versions). When that stamp matches this tree the test reads the kept run instead of
executing the lesson again (CI runs ``make course`` just before ``make test``); otherwise it runs
nbval on the notebook itself. Either way the run judged is one of this very tree."""

import configparser
import re

import nbformat
import pytest

from utils.course import notebooks as nbs
from utils.course import validate
from utils.paths import COURSE_RUNS, ROOT, SOLUTIONS

CHECK_OUTPUT = "# NBVAL_CHECK_OUTPUT"
LESSONS = sorted(SOLUTIONS.glob("*.ipynb"))


def compared(cell) -> bool:
    """Does nbval compare this cell's output? (a comment line that is exactly its marker)"""
    return cell.cell_type == "code" and any(line.strip() == CHECK_OUTPUT for line in cell.source.splitlines())


def sanitisers() -> list[tuple[re.Pattern, str]]:
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "tests" / "sanitize.cfg", encoding="utf-8")
    return [(re.compile(config[s]["regex"]), config[s]["replace"]) for s in config.sections()]


def shown_text(cell, masks) -> str:
    """What a code cell printed or displayed as text, masked; a stream the kernel sent in pieces counts
    as one (as nbval counts it)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream" and parts and parts[-1].startswith(f"[{out.name}] "):
            parts[-1] += out.text
        elif out.output_type == "stream":
            parts.append(f"[{out.name}] {out.text}")
        elif out.output_type in ("execute_result", "display_data") and "text/plain" in out.get("data", {}):
            parts.append(f"[{out.output_type}] {out.data['text/plain']}")
        elif out.output_type == "error":
            parts.append(f"[error] {out.ename}: {out.evalue}")
    text = "".join(parts)
    for pattern, replacement in masks:
        text = pattern.sub(replacement, text)
    return text


def checked_differences(committed, ran) -> list[str]:
    """One line per ``# CHECK_OUTPUT`` cell whose masked output differs between two runs."""
    masks, found = sanitisers(), []
    old = [c for c in committed.cells if c.cell_type == "code"]
    new = [c for c in ran.cells if c.cell_type == "code"]
    assert [c.source for c in old] == [c.source for c in new], "the run is not of this notebook"
    for index, (a, b) in enumerate(zip(old, new)):
        if compared(a) and shown_text(a, masks) != shown_text(b, masks):
            found.append(f"code cell {index}: committed {shown_text(a, masks)!r}, now {shown_text(b, masks)!r}")
    return found


def the_run(path, tmp_path):
    """make course's kept run of ``path`` when it is of this tree, else a fresh nbval run of it."""
    kept = nbs.kept_run(path, COURSE_RUNS)
    if kept is not None:
        return kept
    validate.run([path], keep=tmp_path)
    return nbs.kept_run(path, tmp_path)


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_each_solution_runs_through_and_prints_its_checked_outputs(path, tmp_path):
    ran = the_run(path, tmp_path)
    assert ran is not None
    assert ran.metadata[nbs.KEPT_RUN]["error"] is None, f"{path.name} stopped: {ran.metadata[nbs.KEPT_RUN]['error']}"
    assert checked_differences(nbformat.read(path, as_version=4), ran) == []


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_every_lesson_compares_at_least_three_printed_results(path):
    nb = nbformat.read(path, as_version=4)
    assert sum(map(compared, nb.cells)) >= 3


def test_docs_list_every_compared_cell_and_no_other():
    listed = set(re.findall(r"^\| (\w\d) \| (\d+) \|", (ROOT / "docs" / "validation.md").read_text(), re.M))
    marked = set()
    for path in LESSONS:
        code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        marked |= {(path.name[:2], str(i)) for i, cell in enumerate(code) if compared(cell)}
    assert marked - listed == set(), "compared in a lesson, missing from docs/validation.md"
    assert listed - marked == set(), "listed in docs/validation.md, not compared in the lesson"


def small_notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = dict(nbs.KERNELSPEC)
    nbformat.write(nb, path)
    return path


def test_a_changed_checked_output_is_named_with_both_texts(tmp_path):
    path = small_notebook(tmp_path / "x.ipynb", f"{CHECK_OUTPUT}\nprint(41 + 1)", "print('free to change')")
    nbs.execute(path, save=True)
    nbs.execute(path, keep=tmp_path / "runs")
    ran = nbs.kept_run(path, tmp_path / "runs")
    assert checked_differences(nbformat.read(path, as_version=4), ran) == []
    ran.cells[1].outputs[0].text = "changed, but not checked\n"
    assert checked_differences(nbformat.read(path, as_version=4), ran) == []
    ran.cells[0].outputs[0].text = "43\n"
    (difference,) = checked_differences(nbformat.read(path, as_version=4), ran)
    assert "'[stdout] 42\\n'" in difference and "'[stdout] 43\\n'" in difference


def test_a_stream_printed_in_pieces_reads_as_one():
    one, two = nbformat.v4.new_code_cell(""), nbformat.v4.new_code_cell("")
    one.outputs = [nbformat.v4.new_output("stream", name="stdout", text="knocked out 96%\n")]
    two.outputs = [nbformat.v4.new_output("stream", name="stdout", text=t) for t in ("knocked ", "out 96%\n")]
    assert shown_text(one, []) == shown_text(two, []) == "[stdout] knocked out 96%\n"


def test_masks_hide_addresses_and_paths_but_not_numbers():
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="<obj at 0x7f3a> in /tmp/abc 0.731\n")]
    assert shown_text(cell, sanitisers()) == "[stdout] <obj at 0xADDRESS> in PATH 0.731\n"


def test_a_kept_run_counts_only_while_nothing_it_was_run_from_has_changed(tmp_path):
    path = small_notebook(tmp_path / "x.ipynb", "print(1)")
    result = nbs.execute(path, keep=tmp_path / "runs")
    assert result["error"] is None and nbs.kept_run(path, tmp_path / "runs") is not None
    small_notebook(path, "print(2)")  # the notebook changed since
    assert nbs.kept_run(path, tmp_path / "runs") is None
    assert nbs.kept_run(tmp_path / "never-run.ipynb", tmp_path / "runs") is None


def test_a_failed_run_is_kept_with_its_error(tmp_path):
    path = small_notebook(tmp_path / "x.ipynb", "raise ValueError('the claim no longer holds')")
    nbs.execute(path, keep=tmp_path / "runs")
    assert "the claim no longer holds" in nbs.kept_run(path, tmp_path / "runs").metadata[nbs.KEPT_RUN]["error"]


def test_the_fingerprint_follows_the_code_the_data_and_the_fresh_sample_switch(tmp_path, monkeypatch):
    from utils import seeds

    path = small_notebook(tmp_path / "x.ipynb", "print(1)")
    before = nbs.fingerprint(path)
    assert nbs.fingerprint(path) == before
    monkeypatch.setenv(seeds.FRESH_SAMPLE_ENV, "3")
    assert nbs.fingerprint(path) != before
    monkeypatch.delenv(seeds.FRESH_SAMPLE_ENV)
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    (data / "models" / "card.json").write_text("{}")
    monkeypatch.setattr(nbs, "DATA", data)
    moved = nbs.fingerprint(path)
    assert moved != before
    (data / "models" / "card.json").write_text('{"gap": 0.05}')
    assert nbs.fingerprint(path) != moved
