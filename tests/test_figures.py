"""docs/figures/NN/ (``make figures``, ``python -m utils.course.figures``): every static picture a lesson shows,
exported byte for byte, a page per lesson listing them, and mechanism diagrams that draw the same
bytes again."""

import base64
import re

import matplotlib
import nbformat
import pytest

from utils.course import figures, versions
from utils.course.figures import FIGURES
from utils.course.notebooks import read_notebook
from utils.paths import ROOT
from utils.pictures import diagrams

LESSONS = {path.name[:2]: path for path in figures.lessons()}
FIX = "run: make figures (python -m utils.course.figures)"


@pytest.fixture(scope="module")
def shown() -> dict[str, tuple[dict, list[figures.StaticFigure]]]:
    """Each lesson's notebook and the static pictures it shows, by lesson number."""
    out = {}
    for number, path in LESSONS.items():
        notebook = read_notebook(path)
        out[number] = notebook, figures.static_figures(notebook)
    return out


def _inline_pngs(notebook: dict) -> int:
    """How many static PNGs the lesson's outputs hold, counted without utils.course.figures: each inline
    ``<img>`` in an output's HTML, or its ``image/png`` when its HTML has none."""
    count = 0
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            inline = "".join(data.get("text/html", "")).count('src="data:image/png;base64,')
            count += inline or int("image/png" in data)
    return count


# The exported pictures and the pages that list them


@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_every_static_figure_in_a_lesson_is_exported_unchanged(lesson, shown):
    notebook, pictures = shown[lesson]
    assert pictures and len(pictures) == _inline_pngs(notebook)
    for picture in pictures:
        exported = FIGURES / lesson / picture.filename
        assert exported.is_file(), f"{picture.title!r} is not exported as docs/figures/{lesson}/{exported.name}: {FIX}"
        assert exported.read_bytes() == picture.png, f"docs/figures/{lesson}/{exported.name} is stale: {FIX}"


@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_a_lesson_folder_holds_no_picture_the_lesson_no_longer_shows(lesson, shown):
    _, pictures = shown[lesson]
    on_disk = sorted(p.name for p in (FIGURES / lesson).glob("*.png"))
    assert on_disk == [p.filename for p in pictures], FIX


@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_each_lesson_page_lists_its_figures_with_their_titles_and_sections(lesson, shown):
    notebook, pictures = shown[lesson]
    page = (FIGURES / lesson / "README.md").read_text(encoding="utf-8")
    assert page == figures.readme(LESSONS[lesson], notebook, pictures), f"docs/figures/{lesson}/README.md: {FIX}"
    for picture in pictures:
        assert f"**{picture.order:02d} · {picture.title}**\n\n![" in page
        assert page.index(f"\n## {picture.section}\n") < page.index(f"]({picture.filename})")
    for draw in diagrams.for_lesson(lesson):
        assert f"**{diagrams.title(draw)}**" in page and f"]({diagrams.filename(draw)})" in page


@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_every_picture_a_lesson_page_shows_is_a_file_beside_it(lesson):
    folder = FIGURES / lesson
    links = re.findall(r"\]\(([^)]+)\)", (folder / "README.md").read_text(encoding="utf-8"))
    assert links
    assert [link for link in links if not (folder / link).is_file()] == []


def test_lesson_01s_page_shows_the_hand_drawn_induction_circuit_it_displays():
    page = (FIGURES / "01" / "README.md").read_text(encoding="utf-8")
    assert "**The two-head induction circuit** (drawn by hand; section 5 · " in page
    assert "](../induction-circuit.svg)" in page


# How pictures are found in a notebook


def _cell(*outputs: dict) -> dict:
    return {"cell_type": "code", "source": "", "outputs": list(outputs)}


def _markdown(text: str) -> dict:
    return {"cell_type": "markdown", "source": text}


def _display(bundle: dict) -> dict:
    return {"output_type": "display_data", "data": bundle, "metadata": {}}


PNG = b"\x89PNG\r\n\x1a\n fake"
PNG_B64 = base64.b64encode(PNG).decode()


def test_plotly_figures_widgets_and_attention_pictures_each_give_one_png_titled_by_its_alt_text():
    # the display bundles utils.pictures.plotting writes (without importing it: it imports torch)
    def img(alt: str) -> str:
        return f'<img alt="{alt}" src="data:image/png;base64,{PNG_B64}"/>'

    plot = {"application/vnd.plotly.v1+json": {}, "text/html": img("logit &lt;lens&gt; &amp; &#x27;heads&#x27;")}
    widget = {"application/vnd.jupyter.widget-view+json": {}, "text/html": img("explorer (static preview)")}
    attention = {"text/html": f"<div>{img('attention patterns (static preview)')}</div><script/>", "image/png": PNG_B64}
    notebook = {
        "cells": [
            _markdown("# 99 · A lesson\n\nIntro."),
            _cell(_display(plot)),
            _markdown("## 1 · First\n\ntext\n\n### Exercise 1"),
            _cell(_display(attention), {"output_type": "stream", "name": "stdout", "text": "printed"}),
            _markdown("More text, no heading."),
            _cell(_display(widget), _display({"text/html": "<div>a dashboard</div>"})),
            _markdown("## 2 · Second"),
            _cell(_display({"image/png": PNG_B64, "text/plain": "<Figure size 640x480>"})),
        ]
    }
    found = figures.static_figures(nbformat.from_dict(notebook))
    assert [(f.order, f.title, f.section) for f in found] == [
        (1, "logit <lens> & 'heads'", ""),
        (2, "attention patterns (static preview)", "1 · First"),
        (3, "explorer (static preview)", "1 · First"),
        (4, "untitled figure", "2 · Second"),
    ]
    assert all(f.png == PNG for f in found)
    assert [f.filename for f in found] == [
        "01-logit-lens-heads.png",
        "02-attention-patterns-static-preview.png",
        "03-explorer-static-preview.png",
        "04-untitled-figure.png",
    ]


def test_file_names_keep_the_titles_words_in_ascii():
    assert (
        figures.slug("previous-token score (mean over periods 8–40)") == "previous-token-score-mean-over-periods-8-40"
    )
    assert figures.slug("the key's source: ρ = -1.00, café") == "the-keys-source-1-00-cafe"
    assert figures.slug("∅ —") == "figure"
    long = figures.slug("share of the clean logit difference lost by mean-ablating one head (selection prompts)")
    assert long == "share-of-the-clean-logit-difference-lost-by-mean-ablating"
    assert len(long) <= figures.SLUG_LENGTH


def test_exporting_again_removes_stale_pictures_and_never_a_diagram(tmp_path):
    lesson = tmp_path / "solutions" / "09_topic.ipynb"
    lesson.parent.mkdir()
    picture = nbformat.v4.new_output("display_data", data={"image/png": PNG_B64})
    first = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# 09 · Topic"), nbformat.v4.new_code_cell(outputs=[picture])]
    )
    nbformat.write(first, lesson)
    root = tmp_path / "figures"
    (root / "09").mkdir(parents=True)
    kept = [root / "09" / "diagram-mechanism.svg", root / "by-hand.svg"]
    for path in kept:
        path.write_text("<svg/>")
    (root / "09" / "03-a-picture-no-longer-shown.png").write_bytes(PNG)

    written = figures.export_lesson(lesson, root)

    assert sorted(p.name for p in (root / "09").iterdir()) == [
        "01-untitled-figure.png",
        "README.md",
        "diagram-mechanism.svg",
    ]
    assert written == [root / "09" / "01-untitled-figure.png", root / "09" / "README.md"]
    assert all(path.read_text() == "<svg/>" for path in kept)
    assert (root / "09" / "README.md").read_text(encoding="utf-8").startswith("# 09 · Topic: figures\n")


# The mechanism diagrams


def test_every_diagram_in_docs_figures_has_a_function_that_draws_it():
    drawn = {f"{lesson}/{diagrams.filename(draw)}" for lesson, draws in diagrams.LESSONS.items() for draw in draws}
    on_disk = {f"{p.parent.name}/{p.name}" for p in FIGURES.glob("*/diagram-*.svg")}
    assert on_disk == drawn, FIX
    assert (FIGURES / "induction-circuit.svg").is_file(), "lesson 01 displays the hand-drawn circuit"


@pytest.mark.skipif(
    matplotlib.__version__ != versions.TESTED["matplotlib"],
    reason="the diagrams are drawn with the tested matplotlib; another version lays text out differently",
)
def test_the_diagrams_redraw_byte_identically(tmp_path):
    for lesson in diagrams.LESSONS:
        for drawn in diagrams.write_lesson(lesson, tmp_path / lesson):
            committed = FIGURES / lesson / drawn.name
            assert drawn.read_bytes() == committed.read_bytes(), f"docs/figures/{lesson}/{drawn.name}: {FIX}"


def test_a_diagram_is_an_svg_with_its_text_as_text_and_no_date(tmp_path):
    svg = diagrams.ioi_prompt(tmp_path).read_text(encoding="utf-8")
    assert tmp_path.joinpath("diagram-ioi-prompt.svg").is_file()
    assert "<dc:date>" not in svg and str(ROOT) not in svg
    assert "exchange_names(text, a, b)" in svg and "The IOI prompt and its corruption" in svg
    assert (
        diagrams.title(diagrams.ioi_prompt)
        == "The IOI prompt and its corruption: which tokens change, where the answer is read"
    )


def test_diagrams_state_no_measured_numbers():
    """Only names and formulas: a number in a diagram would go stale when a model is retrained."""
    for lesson in diagrams.LESSONS:
        for path in (FIGURES / lesson).glob("diagram-*.svg"):
            texts = re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text(encoding="utf-8"))
            assert [t for t in texts if re.search(r"\d\.\d|\d%", t)] == [], path.name
