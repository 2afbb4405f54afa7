"""The teaching layer around the lessons, kept in step with the lessons themselves: section markers
and the workshop agendas built from them, paper links and the bibliography, glossary links, each
lesson's investigation, and the facilitator notes whose model answers quote the lessons' outputs."""

from __future__ import annotations

import functools
import re

import nbformat
import pytest

from utils.course import handouts, lesson_times, workshop
from utils.course.start_page import lessons
from utils.paths import ROOT, SOLUTIONS

PATHS = {p.name[:2]: p for p in sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))}
NUMBERS = sorted(PATHS)
GLOSSARY = ROOT / "docs" / "glossary.md"
PAPERS = ROOT / "docs" / "papers.md"
FACILITATOR = ROOT / "docs" / "facilitator"
# Where a paper lives: a link to one of these is a citation and belongs in docs/papers.md.
PAPER_HOSTS = (
    "arxiv.org",
    "transformer-circuits.pub",
    "distill.pub",
    "openreview.net",
    "aclanthology.org",
    "cdn.openai.com",
    "alignmentforum.org",
    "lesswrong.com",
    "doi.org",
    "neelnanda.io",
)
# The most minutes of core sections each lesson may mark: the workshop days are built from them.
CORE_BUDGET = {"00": 80, "01": 110, "02": 80, "04": 85, "05": 90}


def _cells(number: str) -> list:
    return nbformat.read(PATHS[number], as_version=4).cells


def _markdown(number: str) -> list[str]:
    return [c.source for c in _cells(number) if c.cell_type == "markdown"]


def _printed(number: str) -> str:
    """Everything the executed lesson printed or displayed as text, pictures' data left out."""
    out = []
    for cell in _cells(number):
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            data = o.get("data", {})
            out.append(data.get("text/plain", ""))
            out.append(re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", "", data.get("text/html", "")))
    return "\n".join(out).replace("−", "-")


# ---- section markers and the workshop ------------------------------------------------------------


@pytest.mark.parametrize("number", NUMBERS)
def test_every_numbered_section_of_a_lesson_is_marked_core_or_optional(number):
    found = workshop.sections(PATHS[number])  # raises, naming the section, where a marker is missing
    assert found and [s.number for s in found] == list(range(1, len(found) + 1)), [s.number for s in found]


@pytest.mark.parametrize("number", NUMBERS)
def test_a_lessons_stated_time_and_its_sections_minutes_are_the_computed_ones(number):
    lesson = {x.number: x for x in lessons()}[number]
    computed = lesson_times.section_minutes(PATHS[number])
    assert {s.number: s.minutes for s in workshop.sections(PATHS[number])} == computed, (
        "run: python -m utils.course.lesson_times"
    )
    assert lesson.time == lesson_times.time_sentence(PATHS[number]), "run: python -m utils.course.lesson_times"
    assert workshop.stated_minutes(lesson.time) == lesson_times.lesson_minutes(PATHS[number])
    assert sum(computed.values()) <= lesson_times.lesson_minutes(PATHS[number])


def test_a_sections_time_is_its_reading_its_exercises_and_its_given_cells(tmp_path):
    nb = nbformat.v4.new_notebook()
    prose = " ".join(["word"] * 300)  # two minutes at 150 words a minute
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 09 · A lesson\n\n**Time:** about 5 minutes."),
        nbformat.v4.new_markdown_cell(f"## 1 · A section\n*Core · 5 min*\n\n{prose}"),
        nbformat.v4.new_markdown_cell("### Exercise 1 — a task\n\n> Difficulty 🔴⚪⚪ · About 10 minutes"),
        nbformat.v4.new_code_cell("def f():\n    # EXERCISE: do it\n    pass"),  # written, not given
        nbformat.v4.new_code_cell("check_f(f)"),
        nbformat.v4.new_markdown_cell("<details><summary>Hint</summary>\n\n" + prose + "\n</details>"),  # not read
        nbformat.v4.new_code_cell("explorer"),
    ]
    nb.cells[-1].outputs = [
        nbformat.v4.new_output("execute_result", data={"text/plain": "[interactive explorer: x; a live kernel ...]"})
    ]
    path = tmp_path / "09_x.ipynb"
    nbformat.write(nb, path)
    section = next(p for p in lesson_times.parts(path) if p.name == "1")
    assert (section.exercise_minutes, section.given_cells, section.explorers) == (10, 2, 1)
    assert section.words == 300 + 3 + 8  # the prose, the heading and the exercise's statement; not the marker or hint
    assert section.minutes == 20  # 311 words (2.1 min) + 10 + 2 + 5, rounded up to five
    text, changes = lesson_times.rewritten(path)
    assert "*Core · 20 min*" in text and "§1: 5 → 20 min" in changes


def test_an_exercise_without_its_minutes_is_named(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("## 1 · S\n*Core · 5 min*"),
        nbformat.v4.new_markdown_cell("### Exercise 1"),
    ]
    nbformat.write(nb, tmp_path / "09_x.ipynb")
    with pytest.raises(ValueError, match="without 'About N minutes'"):
        lesson_times.parts(tmp_path / "09_x.ipynb")


@pytest.mark.parametrize("number", sorted(CORE_BUDGET))
def test_a_lessons_core_sections_fit_its_share_of_a_workshop_day(number):
    core = sum(s.minutes for s in workshop.sections(PATHS[number]) if s.core)
    assert 0 < core <= CORE_BUDGET[number], core


def test_a_section_without_a_marker_is_named_in_the_error(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("## 1 · Tokens\n\nText.")]
    path = tmp_path / "09_x.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(workshop.MarkerError, match=r"section 1 \(Tokens\) needs a marker"):
        workshop.sections(path)


def test_a_lessons_stated_time_reads_as_minutes():
    assert [workshop.stated_minutes(t) for t in ("about 45 minutes", "about 2 hours", "about two hours")] == [
        45,
        120,
        120,
    ]
    assert workshop.stated_minutes("about two and a half hours, 85 minutes of it the exercises") == 150


def test_the_workshop_agendas_are_the_ones_the_lessons_markers_give():
    text = workshop.WORKSHOP.read_text(encoding="utf-8")
    assert workshop.rewrite(text) == text, "run: python -m utils.course.workshop"


@pytest.mark.parametrize("day", sorted(workshop.DAYS))
def test_each_workshop_day_ends_on_time_with_its_breaks(day):
    all_sections = {n: workshop.sections(p) for n, p in PATHS.items()}
    by_number = {lesson.number: lesson for lesson in lessons()}
    rows = workshop.schedule(workshop.DAYS[day], all_sections, workshop.bridges(workshop.DAYS[day], by_number))
    assert workshop.day_end(rows) <= workshop.DAY_END, workshop.day_end(rows)
    kinds = [what for _, what, _ in rows]
    assert kinds.count("Lunch") == 1 and kinds.count("Break") >= 2, kinds
    assert all(start + m == after for (start, _, m), (after, _, _) in zip(rows, rows[1:], strict=False))


# ---- papers --------------------------------------------------------------------------------------


def _paper_links(text: str) -> set[str]:
    return {url for url in re.findall(r"\]\((https?://[^)\s]+)\)", text) if any(h in url for h in PAPER_HOSTS)}


def _bibliography() -> dict[str, str]:
    """{lesson number: its part of docs/papers.md}."""
    parts = re.split(r"^## (\d\d|A\d) · .*$", PAPERS.read_text(encoding="utf-8"), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("number", NUMBERS)
def test_each_paper_a_lesson_links_is_in_the_bibliography_under_that_lesson(number):
    listed = _bibliography()[number]
    entries = re.findall(r"^- \[\*.+?\*\]\((https?://[^)\s]+)\) — .+\d{4}\. .+", listed, re.M)
    assert entries, f"docs/papers.md lists no paper for lesson {number}"
    assert set(entries) == _paper_links(listed)
    assert _paper_links("\n".join(_markdown(number))) == set(entries)


@pytest.mark.parametrize("number", NUMBERS)
def test_every_title_in_a_lessons_papers_line_is_a_link(number):
    head = _markdown(number)[0]
    if "Papers:" not in head:
        pytest.skip("this lesson's first cell names no papers")
    paragraph = head[head.index("Papers:") :].split("\n\n")[0]
    unlinked = re.findall(r"(?<![*\[])\*[^*\s][^*]*\*(?!\*)", re.sub(r"\[[^\]]*\]\([^)]*\)", "", paragraph))
    assert not unlinked, unlinked


# ---- glossary ------------------------------------------------------------------------------------


def _glossary() -> list[tuple[str, str, list[str]]]:
    """(anchor, term, lesson numbers) for every glossary entry."""
    text = GLOSSARY.read_text(encoding="utf-8")
    return [
        (anchor, term, re.findall(r"\d\d", tags))
        for anchor, term, tags in re.findall(r'^- <a id="([a-z0-9-]+)"></a>\*\*(.+?)\*\* · ([\d, ]+) —', text, re.M)
    ]


def _lesson_text(number: str) -> str:
    """A lesson's markdown and code, outputs left out, lower case."""
    return "\n".join(c.source for c in _cells(number)).lower()


def test_each_glossary_term_is_used_by_the_lessons_it_names():
    entries = _glossary()
    assert len(entries) >= 40, len(entries)
    texts = {n: _lesson_text(n) for n in NUMBERS}
    missing = []
    for _, term, tags in entries:
        key = term.lower().split(" and ")[0].removesuffix(" sae").removesuffix(" correlation").removesuffix(" weights")
        missing += [f"{term} in {n}" for n in tags if key not in texts[n]]
    assert not missing, missing


def test_each_hook_in_the_glossarys_cheat_sheet_is_one_the_lessons_use():
    hooks = re.findall(r"^\| `([\w.{}]+)` \|", GLOSSARY.read_text(encoding="utf-8"), re.M)
    everything = "\n".join(_lesson_text(n) for n in NUMBERS)
    assert hooks and all(
        re.search(re.escape(h.lower()).replace(r"\{l\}", r"(\d+|\{l\}|\{[a-z_]+\})"), everything) for h in hooks
    ), hooks


def test_every_glossary_link_in_a_lesson_names_an_entry():
    anchors = {a for a, _, _ in _glossary()}
    linked = {a for n in NUMBERS for a in re.findall(r"glossary\.md#([\w-]+)\)", "\n".join(_markdown(n)))}
    assert linked <= anchors, linked - anchors


@pytest.mark.parametrize("number", NUMBERS)
def test_a_lesson_links_each_of_its_glossary_terms_where_it_first_uses_it(number):
    cells = _markdown(number)
    wrong = []
    for anchor, term, tags in _glossary():
        if number not in tags:
            continue
        link = f"glossary.md#{anchor})"
        linked = [i for i, c in enumerate(cells) if link in c]
        if not linked:
            wrong.append(f"{term}: never linked")
            continue
        word = re.compile(rf"(?<![\w`]){re.escape(term.lower())}", re.I)
        used = [i for i, c in enumerate(cells) if word.search(re.sub(r"`[^`]*`", "", c))]
        if used and used[0] < linked[0]:
            wrong.append(f"{term}: first used in markdown cell {used[0]}, linked in cell {linked[0]}")
    assert not wrong, wrong


# ---- investigations ------------------------------------------------------------------------------


@pytest.mark.parametrize("number", NUMBERS)
def test_each_lesson_ends_with_an_open_investigation_before_its_summary(number):
    cells = _cells(number)
    starts = [
        i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## Investigation · ")
    ]
    assert len(starts) == 1, "one markdown cell starting '## Investigation · <question>'"
    i = starts[0]
    assert workshop.MARKER.match(cells[i].source.splitlines()[1].strip() or cells[i].source.splitlines()[2].strip())
    assert cells[i + 1].cell_type == "code" and cells[i + 1].source.strip(), "starter code after the question"
    assert cells[i + 2].cell_type == "markdown" and cells[i + 2].source.startswith("**Your conclusion:**")
    summary = [j for j, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## Summary")]
    assert summary and i < summary[0]


# ---- facilitator notes ---------------------------------------------------------------------------


def _notes(number: str) -> tuple[str, list[tuple[int, int, str]]]:
    """(the text before the first question, [(question number, minutes, block)])."""
    text = (FACILITATOR / f"{number}.md").read_text(encoding="utf-8")
    parts = re.split(r"^## Question (\d+) · (\d+) min$", text, flags=re.M)
    blocks = [(int(q), int(m), b) for q, m, b in zip(parts[1::3], parts[2::3], parts[3::3], strict=True)]
    return parts[0], blocks


def _prints(printed: str, number: str) -> bool:
    """Does ``printed`` hold ``number`` as a whole number (not a piece of a longer one, nor without its sign)?"""
    return re.search(rf"(?<![\d.-]){re.escape(number)}(?![\d]|\.\d)", printed) is not None


def _question(text: str) -> str:
    return " ".join(re.sub(r"^\d+\.\s+", "", text.strip()).split())


@pytest.mark.parametrize("number", NUMBERS)
def test_every_discussion_question_has_facilitator_notes_that_point_at_the_lesson(number):
    head, blocks = _notes(number)
    asked = [_question(q) for q in handouts.discussion_questions(PATHS[number])]
    assert [q for q, _, _ in blocks] == list(range(1, len(asked) + 1)), "one block per question, in order"
    assert "Before the session:" in head
    headings = {f"{s.number} · {s.title}" for s in workshop.sections(PATHS[number])}
    for (q, minutes, block), question in zip(blocks, asked, strict=True):
        quoted = _question(" ".join(line[1:] for line in block.splitlines() if line.startswith(">")))
        assert quoted == question, f"question {q} differs from the notebook's"
        points = re.search(r"^\*\*Points at:\*\* section (.+)$", block, re.M)
        assert points and points.group(1).strip() in headings, f"question {q}: {points and points.group(1)}"
        assert "**Model answer.**" in block and "**Common wrong answer.**" in block, f"question {q}"
        assert 5 <= minutes <= 15, f"question {q}: {minutes} min"
    assert 30 <= sum(m for _, m, _ in blocks) <= 90


@pytest.mark.parametrize("number", NUMBERS)
def test_the_facilitator_notes_cover_the_lessons_investigation(number):
    text = (FACILITATOR / f"{number}.md").read_text(encoding="utf-8")
    investigation = text.split("\n## Investigation\n", 1)
    assert len(investigation) == 2, "a '## Investigation' part"
    assert "**What a good answer finds.**" in investigation[1] and "**Where learners go wrong.**" in investigation[1]


@pytest.mark.parametrize("number", NUMBERS)
def test_each_number_the_facilitator_notes_quote_is_one_the_lesson_prints(number):
    text = (FACILITATOR / f"{number}.md").read_text(encoding="utf-8").replace("−", "-")
    printed = _printed(number)
    quoted = re.findall(r"`(-?\d[\d,]*(?:\.\d+)?%?)`", text)
    missing = [q for q in quoted if not _prints(printed, q)]
    assert not missing, f"quoted but not printed by solutions/{PATHS[number].name}: {missing}"


def test_a_number_the_lesson_does_not_print_is_caught():
    printed = "recovers 0.81 of the logit difference; 97% of tokens; -0.20 at layer 3"
    found = [q for q in ("0.81", "97%", "-0.20", "0.8", "81", "0.20", "3.5") if _prints(printed, q)]
    assert found == ["0.81", "97%", "-0.20"]


def test_the_reading_group_plan_covers_every_lesson_and_names_sections_they_have():
    rows = _plan()
    assert [int(r[0]) for r in rows] == list(range(1, 13)), "twelve weeks"
    assert sorted({n for r in rows for n in re.findall(r"\b(\d\d)\b", r[1])}) == NUMBERS
    have = {n: {s.number for s in workshop.sections(p)} for n, p in PATHS.items()}
    for week, lesson, home, live, _, demo in rows:
        own = re.findall(r"\b(\d\d)\b", lesson)
        for column in (home, live, demo):
            for m in SECTIONS_NAMED.finditer(column):
                number = m.group(1) or own[-1]
                wanted = set(range(int(m.group(2)), int(m.group(3) or m.group(2)) + 1))
                assert wanted <= have[number], f"week {week}: lesson {number} has no §{wanted - have[number]}"


# ---- the reading group's plan: each week fits its session ----------------------------------------

# A session: twenty minutes on what people ran at home, the live sections, the week's discussion questions and a
# ten-minute explorer demo, in about two hours.
SESSION = 130
HOME_REVIEW, DEMO = 20, 10
SECTIONS_NAMED = re.compile(r"(?:(\d\d) )?§(\d+)(?:–(\d+))?")
QUESTION_LIST = r"\d+(?:, \d+)*"
QUESTIONS_NAMED = re.compile(rf"^(?:{QUESTION_LIST}|\d\d: {QUESTION_LIST}(?:; \d\d: {QUESTION_LIST})*)$")


def _plan() -> list[list[str]]:
    """The plan's rows: [week, lesson, at home, live, questions, explorer demo]."""
    text = (FACILITATOR / "README.md").read_text(encoding="utf-8")
    return [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if re.match(r"^\| \d+ \|", line)]


@functools.cache
def _section_minutes(number: str) -> dict[int, int]:
    return lesson_times.section_minutes(PATHS[number])


@functools.cache
def _question_minutes_and_sections(number: str) -> dict[int, tuple[int, int]]:
    """{question: (its minutes, the section it points at)}, from the lesson's page."""
    found = {}
    for q, minutes, block in _notes(number)[1]:
        points = re.search(r"^\*\*Points at:\*\* section (\d+) · ", block, re.M)
        found[q] = (minutes, int(points.group(1)) if points else 0)
    return found


def _sections_in(column: str, own: list[str]) -> set[tuple[str, int]]:
    """{(lesson, section)} that a column names: "§1–3", "§4, §6–8", "01 §4–5", "00 (all)"."""
    named = set()
    for m in SECTIONS_NAMED.finditer(column):
        number = m.group(1) or own[-1]
        named |= {(number, s) for s in range(int(m.group(2)), int(m.group(3) or m.group(2)) + 1)}
    for number in re.findall(r"\b(\d\d) \(all\)", column):
        named |= {(number, s) for s in _section_minutes(number)}
    return named


def _questions_in(column: str, own: list[str]) -> dict[str, list[int]]:
    """{lesson: the questions a week names}: "2, 3, 5" in a week of one lesson, "00: 1; 01: 2, 5" in a week of two."""
    assert QUESTIONS_NAMED.match(column), f"questions {column!r}: numbers, as '2, 3, 5' or '00: 1; 01: 2, 5'"
    if ":" not in column:
        assert len(own) == 1, f"questions {column!r}: a week of lessons {own} names the lesson of each question"
        named = {own[0]: column}
    else:
        named = dict(part.split(": ") for part in column.split("; "))
    found = {}
    for number, questions in named.items():
        assert number in own, f"questions {column!r}: lesson {number} is not this week's"
        found[number] = [int(q) for q in questions.split(", ")]
        unknown = set(found[number]) - set(_question_minutes_and_sections(number))
        assert not unknown, f"questions {column!r}: lesson {number}'s page has no question {sorted(unknown)}"
    return found


def _session_minutes(row: list[str]) -> int:
    """Twenty minutes, the live sections' computed minutes, the named questions' minutes and ten minutes."""
    _, lesson, _, live, questions, _ = row
    own = re.findall(r"\b(\d\d)\b", lesson)
    live_minutes = sum(_section_minutes(n)[s] for n, s in _sections_in(live, own))
    asked = _questions_in(questions, own)
    question_minutes = sum(_question_minutes_and_sections(n)[q][0] for n, qs in asked.items() for q in qs)
    return HOME_REVIEW + live_minutes + question_minutes + DEMO


def _questions_on_sections_not_run(rows: list[list[str]]) -> list[str]:
    """Each question a week names whose section the group has run neither at home nor live, that week or before."""
    run: set[tuple[str, int]] = set()
    faults = []
    for week, lesson, home, live, questions, _ in rows:
        own = re.findall(r"\b(\d\d)\b", lesson)
        run |= _sections_in(home, own) | _sections_in(live, own)
        for number, asked in _questions_in(questions, own).items():
            points = {q: s for q, (_, s) in _question_minutes_and_sections(number).items()}
            faults += [
                f"week {week}: lesson {number}'s question {q} points at §{points[q]}"
                for q in asked
                if (number, points[q]) not in run
            ]
    return faults


def test_each_week_of_the_reading_group_plan_fits_its_session():
    minutes = {int(row[0]): _session_minutes(row) for row in _plan()}
    long = {week: m for week, m in minutes.items() if m > SESSION}
    assert not long, f"weeks over {SESSION} minutes (20 + live sections + questions + 10): {long}"


def test_each_question_a_week_names_rests_on_a_section_the_group_has_run():
    faults = _questions_on_sections_not_run(_plan())
    assert not faults, faults


def test_a_week_that_runs_long_or_names_its_questions_loosely_is_caught():
    whole = max(_section_minutes("08"))
    assert _session_minutes(["1", "08", "", f"§1–{whole}", "1", ""]) > SESSION, "a whole lesson live"
    loose = {
        "a range of how many": ("02", "3–4 of them"),
        "words": ("02", "2, 3 and 5"),
        "two lessons, one list": ("00 and 01", "1, 2"),
        "another lesson's": ("02", "03: 1"),
        "a question the page lacks": ("02", "2, 99"),
    }
    missed = []
    for name, (lesson, questions) in loose.items():
        try:
            _session_minutes(["1", lesson, "", "§1", questions, ""])
        except AssertionError:
            continue
        missed.append(name)
    assert not missed, missed
    assert _questions_on_sections_not_run([["1", "02", "§1–3", "§4–6", "6", ""]]), "02's question 6 points at §7"


# ---- facilitator notes: what to steer towards, and the live exercises -----------------------------

KEY_POINT = "**Key point.** "
LISTEN_FOR = "**Listen for:**"
LIVE_EXERCISES = "**Exercises in the live sections:** "


def _steering_faults(block: str, answer: str = "**Model answer.**") -> list[str]:
    """What a block lacks before ``answer``: one one-line key point, then what to listen for, in two bullets."""
    lines = block.splitlines()
    keys = [i for i, line in enumerate(lines) if line.startswith("**Key point.**")]
    listens = [i for i, line in enumerate(lines) if line.strip() == LISTEN_FOR]
    answers = [i for i, line in enumerate(lines) if line.startswith(answer)]
    if len(answers) != 1:
        return [f"one '{answer}' paragraph"]
    if len(keys) != 1 or len(listens) != 1:
        return [f"exactly one key point and one '{LISTEN_FOR}' ({len(keys)} and {len(listens)} here)"]
    key, listen, start = keys[0], listens[0], answers[0]
    faults = []
    if not key < listen < start:
        faults.append(f"the key point, then '{LISTEN_FOR}', then '{answer}'")
    if lines[key + 1].strip() or len(lines[key].removeprefix(KEY_POINT).split()) < 8:
        faults.append("a key point of one line that says something")
    bullets = [line for line in lines[listen + 1 : start] if line.strip()]
    if len(bullets) != 2 or not all(b.startswith("- ") and len(b.split()) >= 4 for b in bullets):
        faults.append(f"two bullets after '{LISTEN_FOR}', not {bullets}")
    wrong = (
        " ".join(block.split("**Common wrong answer.**", 1)[1].split()) if "**Common wrong answer.**" in block else ""
    )
    faults += [f"a bullet that repeats the common wrong answer: {b}" for b in bullets if b[2:].strip('"') in wrong]
    return faults


@pytest.mark.parametrize("number", NUMBERS)
def test_each_model_answer_opens_with_a_key_point_and_what_to_listen_for(number):
    _, blocks = _notes(number)
    own = [(q, block.split("\n## ", 1)[0]) for q, _, block in blocks]  # the last runs on into the investigation
    faults = [f"question {q}: {fault}" for q, block in own for fault in _steering_faults(block)]
    assert not faults, faults


@pytest.mark.parametrize("number", NUMBERS)
def test_the_investigation_notes_open_with_a_key_point_and_what_to_listen_for(number):
    text = (FACILITATOR / f"{number}.md").read_text(encoding="utf-8")
    investigation = text.split("\n## Investigation\n", 1)[1].split("\n## ", 1)[0]
    faults = _steering_faults(investigation, "**What a good answer finds.**")
    assert not faults, faults


def test_a_question_block_without_a_key_point_or_listen_for_is_caught():
    _, blocks = _notes("03")
    good = blocks[0][2].split("\n## ", 1)[0]
    assert not _steering_faults(good)
    head, rest = good.split(KEY_POINT, 1)
    steer, answer = rest.split("**Model answer.**", 1)  # steer: the key point's text, then what to listen for
    key, listen = steer.split(LISTEN_FOR, 1)
    answer = "**Model answer.**" + answer
    late = answer.replace("**Common wrong answer.**", f"{KEY_POINT}{steer}**Common wrong answer.**")
    bad = {
        "no key point": f"{head}{LISTEN_FOR}{listen}{answer}",
        "no listen for": f"{head}{KEY_POINT}{key}{answer}",
        "two key points": f"{head}{KEY_POINT}{steer}{KEY_POINT}A second idea besides the first.\n\n{answer}",
        "one bullet": head + KEY_POINT + re.sub(r"(?m)^- .*\n(?=\n)", "", steer) + answer,
        "after the answer": f"{head}{late}",
    }
    missed = [name for name, block in bad.items() if not _steering_faults(block)]
    assert not missed, missed


def _exercise_sections(number: str) -> dict[int, int]:
    """{exercise number: the number of the section it sits in}, from the lesson's headings."""
    found, section = {}, 0
    for source in _markdown(number):
        for line in source.splitlines():
            if m := re.match(r"^## (\d+) · ", line):
                section = int(m.group(1))
            elif m := re.match(r"^### Exercise (\d+)\b", line):
                found[int(m.group(1))] = section
    return found


def _named_exercises(line: str) -> set[int]:
    named = set()
    for m in re.finditer(r"\bExercises? (\d+)(?: (to|and) (\d+))?", line):
        first, last = int(m.group(1)), int(m.group(3) or m.group(1))
        named |= set(range(first, last + 1)) if m.group(2) == "to" else {first, last}
    return named


def _live_sections() -> dict[str, set[int]]:
    """{lesson: the sections the reading group's plan runs live}, over every week that names the lesson."""
    text = (FACILITATOR / "README.md").read_text(encoding="utf-8")
    live: dict[str, set[int]] = {n: set() for n in NUMBERS}
    for row in (line.split("|")[1:-1] for line in text.splitlines() if re.match(r"^\| \d+ \|", line)):
        own = re.findall(r"\b(\d\d)\b", row[1])
        for m in re.finditer(r"(?:(\d\d) )?§(\d+)(?:–(\d+))?", row[3]):
            live[m.group(1) or own[-1]] |= set(range(int(m.group(2)), int(m.group(3) or m.group(2)) + 1))
    return live


def _live_exercise_faults(head: str, sections: dict[int, int], live: set[int]) -> list[str]:
    """What the opening of a page lacks: one line, in or directly after "Before the session:", naming every
    exercise of the live sections (no exercise the lesson lacks) and the rule for writing them."""
    paragraphs = head.split("\n\n")
    before = [i for i, p in enumerate(paragraphs) if p.startswith("Before the session:")]
    if len(before) != 1:
        return ["one paragraph opening 'Before the session:'"]
    lines = [
        line
        for p in paragraphs[before[0] : before[0] + 2]
        for line in p.splitlines()
        if line.startswith(LIVE_EXERCISES)
    ]
    if len(lines) != 1:
        return [f"one line beginning {LIVE_EXERCISES!r} in or directly after 'Before the session:'"]
    line, faults = lines[0], []
    named = _named_exercises(line)
    due = {e for e, s in sections.items() if s in live}
    if due - named:
        faults.append(f"exercises of the live sections not named: {sorted(due - named)}")
    if named - set(sections):
        faults.append(f"names exercises the lesson does not have: {sorted(named - set(sections))}")
    if not named and "none" not in line:
        faults.append("names no exercise and does not say none")
    if not ("shared screen" in line and "predict" in line and "reveals the solution" in line and "check" in line):
        faults.append("the rule: written together on the shared screen, or the solution revealed and its check read")
    return faults


@pytest.mark.parametrize("number", NUMBERS)
def test_each_lesson_page_names_the_exercises_in_its_live_sections(number):
    head, _ = _notes(number)
    faults = _live_exercise_faults(head, _exercise_sections(number), _live_sections()[number])
    assert not faults, faults


def test_a_page_that_leaves_out_a_live_exercise_is_caught():
    head, _ = _notes("01")
    sections, live = _exercise_sections("01"), _live_sections()["01"]
    assert live and {e for e, s in sections.items() if s in live}, "lesson 01 has exercises in its live sections"
    assert not _live_exercise_faults(head, sections, live)
    line = next(x for x in head.splitlines() if x.startswith(LIVE_EXERCISES))
    without = head.replace(f"\n\n{line}", "")
    bad = {
        "no line": without,
        "a live exercise left out": head.replace(line, line.replace("Exercise 7", "Exercise 11")),
        "no rule": head.replace(line, line.replace("shared screen", "screen")),
        "before the plan": without.replace("Before the session:", f"{line}\n\nBefore the session:"),
    }
    missed = [name for name, page in bad.items() if not _live_exercise_faults(page, sections, live)]
    assert not missed, missed


def test_the_readmes_lesson_table_counts_each_lessons_exercises():
    rows = {
        line.split("|")[1].strip(): line.split("|")[-2].strip()
        for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
        if re.match(r"^\| [0-9A][0-9] \| \[", line)
    }
    counted = {lesson.number: str(lesson.exercises) for lesson in lessons()}
    assert rows == counted


def test_lesson_times_asked_for_help_prints_its_usage_and_rewrites_no_lesson(capsys):
    before = {p: p.read_bytes() for p in PATHS.values()}
    with pytest.raises(SystemExit) as done:
        lesson_times.main(["--help"])
    assert done.value.code == 0
    assert "--check" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        lesson_times.main(["--chek"])
    assert done.value.code == 2 and "unrecognized arguments: --chek" in capsys.readouterr().err
    assert all(p.read_bytes() == text for p, text in before.items())
