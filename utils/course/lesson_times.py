"""A learner's time for each lesson and each of its sections, computed from what the lesson asks of them.

A section takes the time to read its prose, to do its exercises and to run and read its given cells:

* reading: its Markdown's words at ``WORDS_PER_MINUTE`` (hints left out: they are part of an exercise's time);
* exercises: the minutes each exercise's rating line states ("About 10 minutes");
* given cells: ``MINUTES_PER_CELL`` for each code cell the learner runs and reads but does not write (checks
  included), and ``MINUTES_PER_EXPLORER`` more for each explorer, which is there to be played with.

A section's time is rounded up to five minutes. A lesson's time adds its opening, its numbered sections, the part on
a real model, its summary, further reading and discussion questions; the open investigation is left out (it has no
end), and the sentence says so. The numbers are written where a learner and a teacher read them: ``python -m
utils.course.lesson_times`` rewrites each section's marker (``*Core · 25 min*``) and the ``**Time:**`` sentence of
each lesson's first cell in ``solutions/``; the start page, the handouts, the workshop agendas and the facilitator
plan are written from those, and a test keeps them equal to what this computes.

    python -m utils.course.lesson_times           # rewrite the markers and the times in solutions/
    python -m utils.course.lesson_times solutions/03_*.ipynb   # one lesson
    python -m utils.course.lesson_times --check   # list what differs, change nothing
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from utils.course.notebooks import TASK, read_notebook, render, write_atomically
from utils.course.workshop import HEADING, MARKER
from utils.paths import SOLUTIONS, shown

WORDS_PER_MINUTE = 150  # careful reading of technical prose
MINUTES_PER_CELL = 1  # run a given cell, read its code and its output
MINUTES_PER_EXPLORER = 5  # try an explorer's controls
ROUND_TO = 5

EXERCISE = re.compile(r"^###\s+Exercise\b", re.M)
EXERCISE_MINUTES = re.compile(r"About (\d+) minutes")
EXPLORER_OUTPUT = "[interactive explorer:"
EXTRA = ("Investigation", "Open problems")  # open-ended: left out of the lesson's time, and said so
TIME = re.compile(r"\*\*Time:\*\*\s*(.+?)\.(?=\s|$)", re.S)


@dataclass
class Part:
    """One part of a lesson (its opening, a numbered section, a closing part) and what it asks of a learner."""

    name: str  # "opening", "3", "Summary", ...
    words: int = 0
    exercise_minutes: int = 0
    given_cells: int = 0
    explorers: int = 0

    @property
    def exact_minutes(self) -> float:
        return (
            self.words / WORDS_PER_MINUTE
            + self.exercise_minutes
            + MINUTES_PER_CELL * self.given_cells
            + MINUTES_PER_EXPLORER * self.explorers
        )

    @property
    def minutes(self) -> int:
        return max(ROUND_TO, ROUND_TO * math.ceil(self.exact_minutes / ROUND_TO - 1e-9))


def _words(markdown: str) -> int:
    text = re.sub(r"<[^>]+>", " ", markdown)  # HTML tags
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    text = re.sub(r"^\*(Core|Optional) · .*\*$", "", text, flags=re.M)  # the section's own marker
    return len(re.findall(r"[\w'’-]+", text))


def parts(path: Path) -> list[Part]:
    """The parts of one lesson in order: ``opening``, then one per ``## `` heading (numbered sections by number)."""
    found = [Part("opening")]
    for cell in read_notebook(path).cells:
        source = cell.source
        if cell.cell_type == "markdown":
            for line in source.splitlines():
                if line.startswith("## "):
                    heading = HEADING.match(line)
                    found.append(Part(heading.group(1) if heading else line[3:].split("·")[0].strip()))
            if "<summary>Hint</summary>" in source:
                continue
            part = found[-1]
            part.words += _words(source)
            if EXERCISE.search(source):
                minutes = EXERCISE_MINUTES.search(source)
                if not minutes:
                    raise ValueError(f"{path.name}: an exercise without 'About N minutes' in its rating line")
                part.exercise_minutes += int(minutes.group(1))
        elif cell.cell_type == "code":
            part = found[-1]
            if TASK.search(source):
                continue  # the learner writes it: counted in the exercise's minutes
            part.given_cells += 1
            shown_outputs = " ".join(str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))
            part.explorers += shown_outputs.count(EXPLORER_OUTPUT)
    return found


def _timed(every: list[Part]) -> list[Part]:
    """The parts a lesson's time counts: all but its open investigation."""
    return [p for p in every if not p.name.startswith(EXTRA)]


def _section_minutes(every: list[Part]) -> dict[int, int]:
    return {int(p.name): p.minutes for p in every if p.name.isdigit()}


def _time_sentence(every: list[Part]) -> str:
    found = _timed(every)
    lesson = sum(p.minutes for p in found)
    reading = round(sum(p.words for p in found) / WORDS_PER_MINUTE)
    exercises = sum(p.exercise_minutes for p in found)
    hours = (
        "" if lesson < 60 else f" ({lesson // 60} h)" if lesson % 60 == 0 else f" ({lesson // 60} h {lesson % 60} min)"
    )
    aside = ", the open investigation aside" if len(found) < len(every) else ""
    return (
        f"about {lesson} minutes{hours}{aside}: about {reading} of reading, {exercises} of exercises, the rest running "
        "and reading the given cells"
    )


def section_minutes(path: Path) -> dict[int, int]:
    """{section number: its computed minutes}."""
    return _section_minutes(parts(path))


def lesson_minutes(path: Path) -> int:
    """The lesson's minutes, its open investigation left out."""
    return sum(p.minutes for p in _timed(parts(path)))


def time_sentence(path: Path) -> str:
    """What the lesson's first cell says after ``**Time:**`` (without the full stop)."""
    return _time_sentence(parts(path))


def rewritten(path: Path) -> tuple[str, list[str]]:
    """The lesson's text with computed times in its markers and first cell, and what changed."""
    nb = read_notebook(path)
    every = parts(path)
    minutes = _section_minutes(every)
    changes = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        for i, line in enumerate(lines):
            heading = HEADING.match(line)
            if not heading:
                continue
            j = next(k for k in range(i + 1, len(lines)) if lines[k].strip())
            marker = MARKER.match(lines[j].strip())
            number = int(heading.group(1))
            if marker and int(marker.group(2)) != minutes[number]:
                changes.append(f"§{number}: {marker.group(2)} → {minutes[number]} min")
                lines[j] = lines[j].replace(f" · {marker.group(2)} min", f" · {minutes[number]} min", 1)
        cell.source = "\n".join(lines)
    head = nb.cells[0]
    time = TIME.search(head.source)
    if not time:
        raise ValueError(f"{path.name}: its first cell has no '**Time:** ....' sentence")
    wanted = _time_sentence(every)
    if time.group(1) != wanted:
        changes.append(f"time: {time.group(1)!r} → {wanted!r}")
        head.source = head.source[: time.start(1)] + wanted + head.source[time.end(1) :]
    return render(nb), changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.course.lesson_times",
        description="Rewrite each lesson's section markers and its stated time from what the lesson asks of a learner.",
    )
    parser.add_argument("lessons", nargs="*", type=Path, help="solutions notebooks (default: every lesson)")
    parser.add_argument("--check", action="store_true", help="list what differs and change nothing")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    check, named = args.check, args.lessons
    differ = False
    for path in named or sorted(SOLUTIONS.glob("[0-9A][0-9]_*.ipynb")):
        text, changes = rewritten(path)
        if not changes:
            continue
        differ = True
        print(f"{shown(path)}: " + "; ".join(changes))
        if check:
            continue
        original = path.read_text(encoding="utf-8")
        for _ in range(3):  # the new sentence's own words count as reading: settle the count
            write_atomically(path, text)
            text, changes = rewritten(path)
            if not changes:
                break
        else:
            write_atomically(path, original)
            raise RuntimeError(f"{shown(path)}: the lesson's time does not settle: {changes}")
    if check and differ:
        print("lesson times: run python -m utils.course.lesson_times", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
