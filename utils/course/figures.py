"""Pictures to project: every lesson's static figures and its mechanism diagrams, in ``docs/figures/NN/``.

An executed lesson carries a static PNG for every picture it shows: plotly figures and widget
explorers put it in ``text/html`` as ``<img alt="TITLE" src="data:image/png;base64,...">``
(``utils.pictures.plotting``), attention pictures in ``image/png`` as well. This module copies each one,
byte for byte, to ``docs/figures/NN/<kk>-<slug of the title>.png`` (``kk``: its order in the
lesson), draws the lesson's mechanism diagrams (``utils.pictures.diagrams``), and writes
``docs/figures/NN/README.md``, a page that shows them all with their titles and sections. A
workshop teacher or a reading-group host can project the folder as it is.

Re-runnable: pictures the notebook no longer shows are removed (the diagrams and the hand-drawn
figures in ``docs/figures/`` itself are never touched); a test keeps the folders equal to what
this writes.

    python -m utils.course.figures      # (make figures) rewrite docs/figures/NN/ from solutions/
"""

from __future__ import annotations

import base64
import re
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from nbformat import NotebookNode

from utils.course.notebooks import read_notebook
from utils.paths import ROOT, SOLUTIONS, shown
from utils.pictures import diagrams

FIGURES = ROOT / "docs" / "figures"
PNG_PREFIX = "data:image/png;base64,"
UNTITLED = "untitled figure"
SLUG_LENGTH = 60  # characters of the title kept in a file name


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
        lines += ["", f"**{figure.order:02d} · {figure.title}**", "", f"![{_alt(figure.title)}]({figure.filename})"]
    return "\n".join(lines) + "\n"


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


def export_lesson(path: Path, root: Path = FIGURES) -> list[Path]:
    """Write the lesson's PNGs and README into ``root / NN`` and remove PNGs it no longer shows."""
    notebook = read_notebook(path)
    figures = static_figures(notebook)
    folder = root / path.name[:2]
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f.filename for f in figures}
    for stale in folder.glob("*.png"):
        if stale.name not in wanted:
            stale.unlink()
    for figure in figures:
        _write_if_changed(folder / figure.filename, figure.png)
    _write_if_changed(folder / "README.md", readme(path, notebook, figures).encode())
    return [folder / f.filename for f in figures] + [folder / "README.md"]


def lessons(folder: Path = SOLUTIONS) -> list[Path]:
    """Every lesson's solutions notebook, in order."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def _megabytes(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6


def main(argv: list[str] | None = None) -> int:
    """Rewrite every lesson's folder under docs/figures/ and print what it holds."""
    every: list[Path] = []
    for path in lessons():
        drawn = diagrams.write_lesson(path.name[:2], FIGURES / path.name[:2])
        exported = export_lesson(path)
        print(
            f"{shown(exported[-1].parent)}: {len(exported) - 1} figures, {len(drawn)} diagrams, "
            f"{_megabytes(drawn + exported):.2f} MB"
        )
        every += drawn + exported
    print(f"docs/figures/NN: {len(every)} files, {_megabytes(every):.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
