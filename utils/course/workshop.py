"""One-day workshop agendas, written from the sections each lesson marks as core or optional.

Every numbered section of a lesson (``## 3 · Attention and MLP outputs``) carries, on the line after
its heading, a marker the notebooks keep and this module reads::

    *Core · 20 min*
    *Core · 20 min · if behind, skip: <what learners lose, and what to show instead>*
    *Optional · 15 min*

A workshop day runs the core sections of its lessons in order, with breaks, lunch and a wrap-up;
the optional ones are left for home. ``python -m utils.course.workshop`` rewrites the agendas between the
markers in ``docs/workshop.md``; a test keeps them equal to what this writes and checks that each
day ends on time.

    python -m utils.course.workshop      # rewrite the agendas in docs/workshop.md
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from utils.course.notebooks import read_notebook, write_atomically
from utils.course.records import recorded_notebooks
from utils.course.start_page import Lesson, lessons
from utils.paths import ROOT, SOLUTIONS

WORKSHOP = ROOT / "docs" / "workshop.md"
BEGIN, END = "<!-- agendas: written by python -m utils.course.workshop -->", "<!-- agendas: end -->"

HEADING = re.compile(r"^## (\d+) · (.+)$")
MARKER = re.compile(r"^\*(Core|Optional) · (\d+) min(?: · if behind, skip: (.+))?\*$")
# Headings that close a lesson rather than open a section of it.
UNNUMBERED = ("Summary", "Going further", "Discussion questions", "Investigation", "Open problems", "On a real model")

# The two days: which lessons, in order.
# Three lessons a day: at the lessons' computed times (utils/course/lesson_times.py) the core sections of four do
# not fit between 09:30 and 16:30; lessons 03 and 06 make a second day or the homework.
DAYS = {
    "Circuits day": ["00", "01", "02"],
    "Representations day": ["00", "04", "05"],
}
DAY_START, DAY_END = 9 * 60 + 30, 16 * 60 + 30  # 09:30 to 16:30
WELCOME, WRAP_UP, BREAK, LUNCH, BRIDGE = 20, 20, 15, 60, 5  # minutes
BLOCK = 80  # at most this many minutes of sections between two breaks; lunch is the second break


@dataclass
class Section:
    lesson: str  # "03"
    number: int
    title: str
    core: bool
    minutes: int
    skip: str  # the "if behind, skip:" clause, or ""


class MarkerError(ValueError):
    """A lesson's section heading lacks its marker, or the marker is malformed."""


def sections(path: Path) -> list[Section]:
    """The numbered sections of one lesson with their markers, in order."""
    out = []
    for cell in read_notebook(path).cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("## "):
                continue
            heading = HEADING.match(line)
            if not heading:
                if not line[3:].startswith(UNNUMBERED):
                    raise MarkerError(
                        f"{path.name}: the heading {line!r} is neither numbered ('## k · Title') nor "
                        f"one of {', '.join(UNNUMBERED)}"
                    )
                continue
            rest = [x for x in lines[i + 1 :] if x.strip()]
            marker = MARKER.match(rest[0].strip()) if rest else None
            if not marker:
                raise MarkerError(
                    f"{path.name}: section {heading.group(1)} ({heading.group(2)}) needs a marker "
                    "such as '*Core · 20 min*' or '*Optional · 15 min*' on the line after its heading"
                )
            out.append(
                Section(
                    path.name[:2],
                    int(heading.group(1)),
                    heading.group(2).strip(),
                    marker.group(1) == "Core",
                    int(marker.group(2)),
                    (marker.group(3) or "").strip(),
                )
            )
    return out


def stated_minutes(time: str) -> int:
    """A lesson's stated time in minutes: "about 90 minutes" → 90, "about two and a half hours" → 150."""
    words = {"one": 1, "two": 2, "three": 3, "four": 4}
    minutes = re.match(r"about (\d+) minutes", time)
    if minutes:
        return int(minutes.group(1))
    hours = re.match(r"about (\d+|one|two|three|four)( and a half)? hours?", time)
    if not hours:
        raise ValueError(f"cannot read a time from {time!r}")
    n = int(hours.group(1)) if hours.group(1).isdigit() else words[hours.group(1)]
    return int(60 * (n + (0.5 if hours.group(2) else 0)))


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def bridges(day: list[str], by_number: dict[str, Lesson]) -> dict[str, list[str]]:
    """{lesson: the lessons it builds on that the day leaves out}."""
    return {n: [need for need in by_number[n].needs if need not in day] for n in day}


def schedule(
    day: list[str], all_sections: dict[str, list[Section]], left_out: dict[str, list[str]] | None = None
) -> list[tuple[int, str, int]]:
    """(start minute, what, minutes) for one day: welcome, the core sections with breaks, wrap-up;
    before a lesson that builds on one the day leaves out, five minutes on what it takes from it."""
    rows = [(DAY_START, "Welcome; everyone runs the first cell of lesson 00 (Colab installs the course)", WELCOME)]
    now, since_break, breaks = DAY_START + WELCOME, 0, 0
    for lesson in day:
        items = [
            (f"What {lesson} takes from lesson {need}, which the day leaves out", BRIDGE)
            for need in (left_out or {}).get(lesson, [])
        ]
        items += [(f"{lesson} §{s.number} · {s.title}", s.minutes) for s in all_sections[lesson] if s.core]
        for what, minutes in items:
            if since_break + minutes > BLOCK:
                pause, length = ("Lunch", LUNCH) if breaks == 1 else ("Break", BREAK)
                rows.append((now, pause, length))
                now, since_break, breaks = now + length, 0, breaks + 1
            rows.append((now, what, minutes))
            now, since_break = now + minutes, since_break + minutes
    rows.append((now, "Wrap-up: what each lesson showed, questions, what to do at home", WRAP_UP))
    return rows


def day_end(rows: list[tuple[int, str, int]]) -> int:
    start, _, minutes = rows[-1]
    return start + minutes


def agenda(name: str, day: list[str], all_sections: dict[str, list[Section]], by_number: dict[str, Lesson]) -> str:
    left_out = bridges(day, by_number)
    rows = schedule(day, all_sections, left_out)
    core = sum(s.minutes for n in day for s in all_sections[n] if s.core)
    lines = [
        f"### {name}: " + ", ".join(f"{n} · {by_number[n].title.split(':')[0]}" for n in day),
        "",
        f"{_clock(DAY_START)} to {_clock(day_end(rows))}: {core} minutes of core sections, "
        f"{sum(m for _, w, m in rows if w in ('Break', 'Lunch'))} of breaks and lunch.",
        "",
    ]
    seconds = {row["notebook"][:2]: row["seconds"] for row in recorded_notebooks()}
    lines += [
        "Running every cell of these lessons, exercises solved, takes "
        + " + ".join(f"{seconds[n]:.0f} s" for n in day)
        + " on the two-core CPU of the README's table: the day's time goes to reading and exercises, not waiting.",
        "",
    ]
    for n, needs in left_out.items():
        for need in needs:
            lines += [
                f"Lesson {n} builds on lesson {need}, which this day leaves out: the agenda gives five minutes before "
                f"it to say what {n} takes from {need} (its first cell's prerequisites name it).",
                "",
            ]
    lines += ["| time | what | min |", "|---|---|---:|"]
    lines += [f"| {_clock(t)} | {what} | {m} |" for t, what, m in rows]
    skips = [s for n in day for s in all_sections[n] if s.core and s.skip]
    if skips:
        lines += ["", "**If behind**, skip in this order (latest first):", ""]
        lines += [
            f"- {s.lesson} §{s.number} · {s.title} (section of {s.minutes} min): {s.skip}" for s in reversed(skips)
        ]
    home = [s for n in day for s in all_sections[n] if not s.core]
    if home:
        lines += [
            "",
            "**For home** (optional sections): "
            + "; ".join(f"{s.lesson} §{s.number} · {s.title} ({s.minutes} min)" for s in home)
            + ".",
        ]
    return "\n".join(lines)


def agendas() -> str:
    by_number = {lesson.number: lesson for lesson in lessons()}
    all_sections = {p.name[:2]: sections(p) for p in sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))}
    every = [s for found in all_sections.values() for s in found]
    total = (
        f"All the lessons' sections add up to {sum(s.minutes for s in every) / 60:.1f} hours, "
        f"{sum(s.minutes for s in every if s.core) / 60:.1f} of them core, before the investigations."
    )
    return "\n\n".join([total, *(agenda(name, day, all_sections, by_number) for name, day in DAYS.items())])


def rewrite(text: str) -> str:
    """``text`` (docs/workshop.md) with its agendas block replaced by what ``agendas()`` writes."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"docs/workshop.md lacks the lines {BEGIN} and {END} around its agendas")
    head, rest = text.split(BEGIN, 1)
    return f"{head}{BEGIN}\n\n{agendas()}\n\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    write_atomically(WORKSHOP, rewrite(WORKSHOP.read_text(encoding="utf-8")))  # whole, or left as it was
    print(f"wrote the agendas in {WORKSHOP.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
