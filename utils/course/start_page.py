"""The course's start page, ``notebooks/README.md``, written from the lessons themselves.

Each lesson's first cell gives its title, its time and the lessons it builds on ("**Prerequisites:**
lessons 00 (hooks) and 04 ..."); this module reads them from ``solutions/``, draws the lesson graph
from the prerequisites, lays out the three tracks and says, for each lesson, which lesson comes next.
The "Next:" line that ends every lesson's summary is ``next_line(lesson)``; a test keeps the
notebooks and this page in step.

    python -m utils.course.start_page      # rewrite notebooks/README.md
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from utils.course.notebooks import read_notebook
from utils.paths import NOTEBOOKS, SOLUTIONS

START_PAGE = NOTEBOOKS / "README.md"

# The three paths through the course, as lesson numbers in order.
TRACKS = {
    "Circuits": ["00", "01", "02", "03", "11", "09"],
    "Representations": ["00", "01", "04", "05", "10", "06", "07"],
    "Capstone": ["00", "01", "02", "03", "04", "05", "08"],
    "Beyond the zoo (nnsight, NDIF)": ["00", "01", "02", "03", "04", "05", "A1"],
}
# Where to go after each lesson, with why (the track it continues).
NEXT = {
    "00": [("01", "every track")],
    "01": [("02", "circuits, and on to the capstone"), ("04", "representations")],
    "02": [("03", "circuits")],
    "03": [
        ("11", "circuits: attribution graphs, held against this lesson's circuit"),
        ("04", "on to the capstone, which also needs lessons 04 and 05"),
    ],
    "04": [("05", "representations and the capstone")],
    "05": [("10", "representations"), ("08", "the capstone")],
    "10": [("06", "representations: the sparse autoencoders the toy models prepare for")],
    "06": [("07", "representations")],
    "07": [("08", "the capstone")],
    "08": [("A1", "an appendix: the road to models beyond the zoo")],
    "09": [("04", "representations, and on to the capstone")],
    "11": [("09", "circuits: testing an algorithm with interchange interventions")],
    "A1": [],
}
LEARN_FIRST = [
    ("The Illustrated Transformer (Jay Alammar)", "https://jalammar.github.io/illustrated-transformer/"),
    (
        "A Mathematical Framework for Transformer Circuits (Elhage et al. 2021)",
        "https://transformer-circuits.pub/2021/framework/index.html",
    ),
    (
        "3Blue1Brown's videos on neural networks, the chapters on transformers",
        "https://www.3blue1brown.com/topics/neural-networks",
    ),
]


@dataclass
class Lesson:
    number: str  # "00"
    title: str
    time: str
    needs: list[str]  # lesson numbers from its prerequisites
    path: Path  # the exercise notebook
    exercises: int

    @property
    def short_time(self) -> str:
        """The time without its breakdown: "about 115 minutes (1 h 55 min)"."""
        return re.split(r"[,:]", self.time, maxsplit=1)[0]


def lessons(folder: Path = SOLUTIONS) -> list[Lesson]:
    """Every lesson, read from its solutions notebook's first cell."""
    out = []
    for path in sorted(folder.glob("[0-9A][0-9]_*.ipynb")):  # the lessons, then the appendices (A1, ...)
        nb = read_notebook(path)
        head = nb.cells[0].source
        title = head.splitlines()[0].lstrip("# ").split("·", 1)[-1].strip()
        time = re.search(r"\*\*Time:\*\*\s*(.+?)\.(\s|$)", head)
        needs = re.search(r"\*\*Prerequisites:\*\*(.+?)\*\*", head, re.S)
        # a clause of the prerequisites that calls a lesson optional background does not make it a prerequisite
        required = [part for part in needs.group(1).split(";") if "optional" not in part] if needs else []
        numbers = re.findall(r"\b(\d\d)\b", ";".join(required))
        exercises = sum(
            len(re.findall(r"^###\s+Exercise\b", c.source, re.M)) for c in nb.cells if c.cell_type == "markdown"
        )
        out.append(
            Lesson(
                path.name[:2],
                title,
                time.group(1) if time else "",
                sorted(set(numbers)),
                NOTEBOOKS / path.name,
                exercises,
            )
        )
    return out


def _link(lesson: Lesson, text: str | None = None) -> str:
    return f"[{text or f'{lesson.number} · {lesson.title}'}]({lesson.path.name})"


def next_line(number: str, all_lessons: list[Lesson] | None = None) -> str:
    """The line that ends lesson ``number``'s summary, linking the lesson(s) to open next."""
    by_number = {lesson.number: lesson for lesson in all_lessons or lessons()}
    steps = NEXT[number]
    if not steps:
        return "**Next:** this is the last lesson; the [start page](../notebooks/README.md) lists every track."
    parts = [f"{_link(by_number[n])} ({why})" for n, why in steps]
    return "**Next:** " + "; or ".join(parts) + ". The [start page](../notebooks/README.md) shows every track."


def render(all_lessons: list[Lesson] | None = None) -> str:
    all_lessons = all_lessons or lessons()
    by_number = {lesson.number: lesson for lesson in all_lessons}
    graph = ["```mermaid", "graph LR"]
    graph += [f'    L{n.number}["{n.number} · {n.title.split(":")[0]}"]' for n in all_lessons]
    graph += [f"    L{need} --> L{n.number}" for n in all_lessons for need in n.needs if need in by_number]
    graph.append("```")
    rows = [
        f"| {n.number} | {_link(n, n.title)} | {n.short_time} | {', '.join(n.needs) or 'none'} | {n.exercises} |"
        for n in all_lessons
    ]
    tracks = [
        f"- **{name}:** " + " → ".join(_link(by_number[k], k) for k in steps if k in by_number)
        for name, steps in TRACKS.items()
    ]
    learn = [f"- [{text}]({url})" for text, url in LEARN_FIRST]
    return "\n".join(
        [
            "# Start here",
            "",
            "<!-- written by python -m utils.course.start_page from the lessons' first cells: edit those, not this -->",
            "",
            "Eleven lessons and an appendix, Jupyter notebooks with exercises that check themselves, on small models",
            "trained on text whose every planted fact is known. Open a lesson, run its first cell, and work",
            "down; each exercise is followed by a check, a hint and the solution (the full worked notebooks",
            "are in [`../solutions/`](../solutions/)).",
            "",
            "**Before lesson 00** you need Python and a little PyTorch (tensors, indexing, `softmax`), and a",
            "picture of what a transformer computes: tokens, embeddings, attention heads, MLPs, the residual",
            "stream, the unembedding. If that picture is new, read one of these first:",
            "",
            *learn,
            "",
            "## Three tracks",
            "",
            *tracks,
            "",
            "Each lesson ends with a **Next:** line that points along these tracks. The",
            "[glossary](../docs/glossary.md) defines the terms the lessons introduce, with the lessons that",
            "use each, and lists the main hook names the course reads; [papers.md](../docs/papers.md) lists the",
            "papers each lesson reproduces, with what to read first.",
            "",
            "## Hosting a reading group or teaching a workshop",
            "",
            "- **A reading group:** the [facilitator guide](../docs/facilitator/README.md) has a twelve-week",
            "  plan and, for every discussion question, a model answer checked against the lesson's outputs;",
            "  each lesson's questions are on a page of their own in [`docs/questions/`](../docs/questions/),",
            "  and its figures and mechanism diagrams in [`docs/figures/`](../docs/figures/).",
            "- **A one-day workshop on Colab:** [two timed agendas](../docs/workshop.md) built from the",
            "  sections each lesson marks *Core* or *Optional*, with troubleshooting; `make bundle URL=...`",
            "  writes the notebooks to hand out, without solutions, ready to run",
            "  ([teaching on Colab](../docs/teaching-on-colab.md)).",
            "",
            "## Which lesson builds on which",
            "",
            "An arrow means the later lesson uses what the earlier one teaches (from each lesson's",
            "prerequisites).",
            "",
            *graph,
            "",
            "| # | lesson | time | builds on | exercises |",
            "|---|---|---|---|---:|",
            *rows,
            "",
            "A lesson's time is computed from what it asks of you: its prose read at 150 words a minute, the minutes",
            "each exercise states, and a minute for each given cell you run and read (five for an explorer); its",
            "open investigation comes on top. Each section's heading says its own.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    START_PAGE.write_text(render(), encoding="utf-8")
    print(f"wrote {START_PAGE.relative_to(START_PAGE.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
