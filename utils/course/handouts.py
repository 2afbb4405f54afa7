"""Handouts written from the lessons: one question sheet per lesson for a reading group.

The questions live in the notebooks (each lesson's "Discussion questions" list); this module copies
them, with the lesson's title and time, into ``docs/questions/NN.md``, a page to print or project.
A test keeps the sheets equal to what this writes.

    python -m utils.course.handouts      # rewrite docs/questions/
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from utils.course.notebooks import read_notebook
from utils.course.start_page import Lesson, lessons
from utils.paths import ROOT, SOLUTIONS

QUESTIONS = ROOT / "docs" / "questions"


def discussion_questions(path: Path) -> list[str]:
    """The numbered discussion questions of one lesson, each as one paragraph."""
    for cell in read_notebook(path).cells:
        text = cell.source
        if cell.cell_type != "markdown" or "Discussion questions" not in text:
            continue
        block = text[text.index("Discussion questions") :].split("\n", 1)[1]
        items = re.split(r"\n(?=\d+\. )", "\n" + block.strip())
        return [" ".join(item.split()) for item in items if re.match(r"\d+\. ", item.strip())]
    return []


def question_sheet(path: Path, lesson: Lesson) -> str:
    questions = discussion_questions(path)
    return "\n".join(
        [
            f"# {lesson.number} · {lesson.title}: questions for discussion",
            "",
            f"<!-- written by python -m utils.course.handouts from {path.relative_to(ROOT)}: "
            "edit the notebook, not this -->",
            "",
            f"Lesson: [{path.name}](../../notebooks/{path.name}) ({lesson.short_time}).",
            "Before the session, run the sections your host names (the [facilitator guide](../facilitator/README.md)'s",
            "plan lists them), or read their",
            f"outputs in [the solutions notebook](../../solutions/{path.name}).",
            "",
            *[f"{q}\n" for q in questions],
        ]
    )


def sheets() -> dict[Path, str]:
    """{sheet path: its text} for every lesson."""
    by_number = {lesson.number: lesson for lesson in lessons()}
    return {
        QUESTIONS / f"{path.name[:2]}.md": question_sheet(path, by_number[path.name[:2]])
        for path in sorted(SOLUTIONS.glob("[0-9A][0-9]_*.ipynb"))
    }


def main(argv: list[str] | None = None) -> int:
    QUESTIONS.mkdir(parents=True, exist_ok=True)
    for path, text in sheets().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
