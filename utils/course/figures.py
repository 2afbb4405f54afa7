"""Pictures to project: every lesson's static figures at 200 dpi and its mechanism diagrams, in ``docs/figures/NN/``.

An executed lesson carries a static PNG for every picture it shows: plotly figures and widget
explorers put it in ``text/html`` as ``<img alt="TITLE" src="data:image/png;base64,...">``
(``utils.pictures.plotting``), attention pictures in ``image/png`` as well. Those are drawn at 72 dpi,
which keeps the notebooks small and is too coarse for a projector. This module runs the lesson once
more with ``COURSE_FIGURE_DPI=200`` (a copy in a temporary folder), so that every picture is drawn
again from the same data at 200 dpi, and writes each one to ``docs/figures/NN/<kk>-<slug of the
title>.png`` (``kk``: its order in the lesson); it draws the lesson's mechanism diagrams (SVG,
``utils.pictures.diagrams``) and writes ``docs/figures/NN/README.md``, a page that shows them all with
their titles and sections and records, for each picture, a hash of the notebook picture it was drawn
beside. A workshop teacher or a reading-group host can project the folder as it is.

Re-runnable: a lesson whose page already matches its notebook is left alone (``--force`` draws it
again); pictures the notebook no longer shows are removed (the diagrams and the hand-drawn figures in
``docs/figures/`` itself are never touched); tests keep the folders in step with the notebooks.

    python -m utils.course.figures            # (make figures) the lessons whose pictures changed
    python -m utils.course.figures 05 --force # lesson 05 drawn again whatever its page says
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import shutil
import sys
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from nbformat import NotebookNode

from utils.course.notebooks import execute, read_notebook
from utils.paths import ROOT, SOLUTIONS, shown
from utils.pictures import diagrams
from utils.pictures.plotting import FIGURE_DPI_ENV

FIGURES = ROOT / "docs" / "figures"
PNG_PREFIX = "data:image/png;base64,"
UNTITLED = "untitled figure"
SLUG_LENGTH = 60  # characters of the title kept in a file name
PROJECTOR_DPI = 200  # the pictures in docs/figures; the notebooks keep theirs at 72


class FiguresError(Exception):
    """A lesson's pictures could not be drawn again: the message says why and what to do."""


@dataclass(frozen=True)
class StaticFigure:
    """One static picture of a lesson: its place in the lesson, title, section and PNG bytes."""

    order: int  # 1, 2, ... in the order the lesson shows them
    title: str
    section: str  # the "## k · ..." heading above the cell that shows it ("" before the first)
    png: bytes

    @property
    def filename(self) -> str:
        return f"{self.order:02d}-{slug(self.title)}.png"

    @property
    def source(self) -> str:
        """A short hash of the notebook's own picture, which the page records beside the sharp copy."""
        return hashlib.sha256(self.png).hexdigest()[:16]


def _ascii(char: str) -> str:
    """``char`` if it is ASCII, else its letter without accents (é: e), else a space (–, ρ, ×)."""
    if char.isascii():
        return char
    return unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode() or " "


def slug(title: str) -> str:
    """A file-name form of a title: ASCII letters and digits in lower case, joined by hyphens, cut
    at a word boundary after ``SLUG_LENGTH`` characters (``"figure"`` when nothing is left)."""
    folded = "".join(_ascii(char) for char in re.sub(r"['’]", "", title))  # "key's" is one word
    words = re.findall(r"[a-z0-9]+", folded.lower())
    out = ""
    for word in words:
        if out and len(out) + 1 + len(word) > SLUG_LENGTH:
            break
        out = f"{out}-{word}" if out else word
    return out[:SLUG_LENGTH] or "figure"


class _ImageFinder(HTMLParser):
    """Collects ``(alt, base64)`` of every ``<img>`` whose source is an inline PNG."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        src = found.get("src") or ""
        if tag == "img" and src.startswith(PNG_PREFIX):
            self.images.append(((found.get("alt") or UNTITLED).strip(), src[len(PNG_PREFIX) :]))


def output_pictures(output: dict) -> list[tuple[str, bytes]]:
    """``(title, PNG bytes)`` of each static picture one cell output shows: the ``<img>`` fallbacks
    of its HTML, or else its ``image/png`` (an attention picture carries the same PNG in both)."""
    data = output.get("data", {})
    finder = _ImageFinder()
    finder.feed(data.get("text/html", ""))
    finder.close()
    if finder.images:
        return [(alt, base64.b64decode(b64)) for alt, b64 in finder.images]
    if "image/png" in data:
        return [(UNTITLED, base64.b64decode(data["image/png"]))]
    return []


def _code_cells_by_section(notebook: NotebookNode) -> Iterator[tuple[str, NotebookNode]]:
    """Each code cell with the last ``## `` heading above it ("" before the first)."""
    section = ""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            headings = re.findall(r"^## +(.+?)\s*$", cell.source, re.M)
            section = headings[-1] if headings else section
        elif cell.cell_type == "code":
            yield section, cell


def static_figures(notebook: NotebookNode) -> list[StaticFigure]:
    """Every static picture an executed lesson shows, in order, with its section."""
    figures: list[StaticFigure] = []
    for section, cell in _code_cells_by_section(notebook):
        for output in cell.get("outputs", []):
            for title, png in output_pictures(output):
                figures.append(StaticFigure(len(figures) + 1, title, section, png))
    return figures


def hand_drawn(notebook: NotebookNode) -> list[tuple[str, str, str]]:
    """``(file name, title, section)`` of each figure in ``docs/figures/`` itself that the lesson's
    code displays (found by file name); the title is the SVG's own ``<title>``."""
    found = []
    for section, cell in _code_cells_by_section(notebook):
        for svg in sorted(FIGURES.glob("*.svg")):
            if svg.name in cell.source:
                title = re.search(r"<title>(.*?)</title>", svg.read_text(encoding="utf-8"), re.S)
                found.append((svg.name, title.group(1).strip() if title else svg.stem, section))
    return found


def _alt(text: str) -> str:
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def readme(path: Path, notebook: NotebookNode, figures: list[StaticFigure]) -> str:
    """The text of ``docs/figures/NN/README.md`` for the lesson at ``path``."""
    heading = notebook.cells[0].source.splitlines()[0].lstrip("# ").strip()  # "01 · Induction heads"
    drawn = [
        (f"../{name}", title, f"drawn by hand; section {section}") for name, title, section in hand_drawn(notebook)
    ]
    drawn += [
        (diagrams.filename(d), diagrams.title(d), "drawn by utils/pictures/diagrams.py")
        for d in diagrams.for_lesson(path.name[:2])
    ]
    lines = [
        f"# {heading}: figures",
        "",
        f"<!-- written by python -m utils.course.figures from {shown(path)}: edit the notebook, not this -->",
        "",
        f"The pictures of [the lesson](../../../solutions/{path.name}) as files to project: "
        + ("its mechanism diagrams, then " if drawn else "")
        + "every static picture it shows, in order, under the section that shows it (the notebook's",
        "interactive versions need a live kernel). Rewrite with `make figures`.",
    ]
    if drawn:
        lines += ["", "## Diagrams"]
        for target, title, origin in drawn:
            lines += ["", f"**{title}** ({origin})", "", f"![{_alt(title)}]({target})"]
    section = None
    for figure in figures:
        if figure.section != section:
            section = figure.section
            lines += ["", f"## {section or 'Before the first section'}"]
        lines += [
            "",
            f"**{figure.order:02d} · {figure.title}**",
            "",
            f"![{_alt(figure.title)}]({figure.filename})",
            f"<!-- {PROJECTOR_DPI} dpi, drawn beside the notebook's picture {figure.source} -->",
        ]
    return "\n".join(lines) + "\n"


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


def sharp_run(path: Path) -> NotebookNode:
    """The lesson run once more in a temporary copy with its static pictures drawn at ``PROJECTOR_DPI``
    (the same seeds, so the same pictures as the committed notebook's, sharper); the notebook itself is
    not touched."""
    with tempfile.TemporaryDirectory(prefix="course-figures-") as folder:
        copy = Path(folder) / path.name
        shutil.copyfile(path, copy)
        result = execute(copy, save=True, env={FIGURE_DPI_ENV: str(PROJECTOR_DPI)})
        if result["error"] is not None:
            raise FiguresError(
                f"{path.name} did not run to its end to draw its pictures at {PROJECTOR_DPI} dpi: {result['error']}; "
                f"fix the lesson (python -m utils.course.notebooks execute {shown(path)}), then run make figures again"
            )
        return read_notebook(copy)


def _paired(path: Path, figures: list[StaticFigure], sharp: list[StaticFigure]) -> list[StaticFigure]:
    """``sharp`` checked against the notebook's ``figures``: the same pictures, in the same order."""
    titles, again = [f.title for f in figures], [f.title for f in sharp]
    if titles != again:
        first = next((i for i, (a, b) in enumerate(zip(titles, again)) if a != b), min(len(titles), len(again)))
        shows = titles[first] if first < len(titles) else "nothing more"
        drew = again[first] if first < len(again) else "nothing more"
        raise FiguresError(
            f"{path.name} shows {len(titles)} pictures but drew {len(again)} when run again (picture {first + 1}: "
            f"the notebook shows {shows!r}, the new run drew {drew!r}): the committed notebook is not the lesson's "
            f"last run; execute it (python -m utils.course.notebooks execute {shown(path)}) and run make figures again"
        )
    return sharp


def up_to_date(path: Path, root: Path = FIGURES) -> bool:
    """Whether ``root / NN`` already holds the lesson's page as :func:`readme` writes it now and every
    picture it lists: then no picture of the notebook has changed since they were drawn."""
    notebook = read_notebook(path)
    figures = static_figures(notebook)
    folder = root / path.name[:2]
    page = folder / "README.md"
    return (
        page.is_file()
        and page.read_text(encoding="utf-8") == readme(path, notebook, figures)
        and all((folder / f.filename).is_file() for f in figures)
    )


def export_lesson(path: Path, root: Path = FIGURES, run: NotebookNode | None = None) -> list[Path]:
    """Write the lesson's pictures at ``PROJECTOR_DPI`` and its page into ``root / NN``, and remove PNGs it no
    longer shows. ``run`` is the lesson executed at that resolution (:func:`sharp_run`, which runs it when
    none is given)."""
    notebook = read_notebook(path)
    figures = static_figures(notebook)
    sharp = _paired(path, figures, static_figures(run if run is not None else sharp_run(path)))
    folder = root / path.name[:2]
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f.filename for f in figures}
    for stale in folder.glob("*.png"):
        if stale.name not in wanted:
            stale.unlink()
    for figure, drawn in zip(figures, sharp):
        _write_if_changed(folder / figure.filename, drawn.png)
    _write_if_changed(folder / "README.md", readme(path, notebook, figures).encode())
    return [folder / f.filename for f in figures] + [folder / "README.md"]


def lessons(folder: Path = SOLUTIONS) -> list[Path]:
    """Every lesson's solutions notebook, in order."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def _megabytes(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6


def main(argv: list[str] | None = None) -> int:
    """Draw each lesson's diagrams, and its pictures at 200 dpi where the notebook's have changed."""
    ap = argparse.ArgumentParser(prog="python -m utils.course.figures", description=main.__doc__)
    ap.add_argument("lessons", nargs="*", help="lesson numbers (05) or notebooks; default: every lesson")
    ap.add_argument("--force", action="store_true", help="draw the pictures again even where the page is current")
    args = ap.parse_args(argv)
    every = lessons()
    chosen = [p for p in every if not args.lessons or any(p.name[:2] == Path(a).name[:2] for a in args.lessons)]
    if args.lessons and not chosen:
        ap.error(f"no lesson {', '.join(args.lessons)}: the lessons are {', '.join(p.name[:2] for p in every)}")
    written: list[Path] = []
    try:
        for path in chosen:
            drawn = diagrams.write_lesson(path.name[:2], FIGURES / path.name[:2])
            folder = FIGURES / path.name[:2]
            if not args.force and up_to_date(path):
                exported = sorted(folder.glob("*.png")) + [folder / "README.md"]
                note = "up to date"
            else:
                print(f"{shown(folder)}: running {path.name} again to draw its pictures at {PROJECTOR_DPI} dpi ...")
                exported = export_lesson(path)
                note = "drawn again"
            print(
                f"{shown(folder)}: {len(exported) - 1} figures ({note}), {len(drawn)} diagrams, "
                f"{_megabytes(drawn + exported):.2f} MB"
            )
            written += drawn + exported
    except FiguresError as error:
        print(f"python -m utils.course.figures: error: {error}", file=sys.stderr)
        return 1
    print(f"docs/figures/NN: {len(written)} files, {_megabytes(written):.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
