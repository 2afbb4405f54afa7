"""docs/figures/NN/ (``make figures``, ``python -m utils.course.figures``): every static picture a lesson shows,
drawn again at 200 dpi for a projector, a page per lesson listing them, and mechanism diagrams that draw the
same bytes again."""

import base64
import io
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


def _size_and_dpi(png: bytes) -> tuple[tuple[int, int], float]:
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    return image.size, image.info.get("dpi", (0, 0))[0]


@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_every_static_figure_in_a_lesson_is_exported_at_200_dpi_with_the_notebooks_shape(lesson, shown):
    notebook, pictures = shown[lesson]
    assert pictures and len(pictures) == _inline_pngs(notebook)
    scale = figures.PROJECTOR_DPI / 72
    for picture in pictures:
        exported = FIGURES / lesson / picture.filename
        where = f"docs/figures/{lesson}/{exported.name}"
        assert exported.is_file(), f"{picture.title!r} is not exported as {where}: {FIX}"
        (width, height), dpi = _size_and_dpi(exported.read_bytes())
        (w72, h72), dpi72 = _size_and_dpi(picture.png)
        assert round(dpi) == figures.PROJECTOR_DPI and round(dpi72) == 72, (where, dpi, dpi72)
        # the same picture drawn 200/72 times finer: each side about 2.78 times longer, the shape kept; text hinted at
        # 72 dpi comes out a little wider, so a small picture with many labels (an attention grid) differs by up to 6%
        sides = (width, height), (w72, h72)
        assert abs(width / w72 - scale) < 0.2 and abs(height / h72 - scale) < 0.2, (where, sides)
        assert abs(width / height - w72 / h72) < 0.08 * w72 / h72, f"{where} is not shaped as the notebook's picture"


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

    written = figures.export_lesson(lesson, root, run=first)  # the lesson's run at 200 dpi (here: itself)

    assert sorted(p.name for p in (root / "09").iterdir()) == [
        "01-untitled-figure.png",
        "README.md",
        "diagram-mechanism.svg",
    ]
    assert written == [root / "09" / "01-untitled-figure.png", root / "09" / "README.md"]
    assert all(path.read_text() == "<svg/>" for path in kept)
    assert (root / "09" / "README.md").read_text(encoding="utf-8").startswith("# 09 · Topic: figures\n")
    assert figures.up_to_date(lesson, root)


def _lesson_drawing(tmp_path, title: str):
    lesson = tmp_path / "solutions" / "09_topic.ipynb"
    lesson.parent.mkdir(parents=True, exist_ok=True)
    code = (
        "from utils.pictures import plotting\n"
        f"plotting.line({{'a': [0, 1, 3]}}, [1, 2, 3], title={title!r}, xlabel='x', ylabel='y')"
    )
    cells = [nbformat.v4.new_markdown_cell("# 09 · Topic"), nbformat.v4.new_code_cell(code)]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, lesson)
    return lesson, nb


def test_make_figures_runs_a_lesson_again_and_draws_its_pictures_at_200_dpi(tmp_path):
    from utils.course import notebooks as nbs

    lesson, _ = _lesson_drawing(tmp_path, "a rising line")
    assert nbs.execute(lesson, save=True)["error"] is None  # the committed notebook: 72 dpi
    committed = lesson.read_bytes()
    root = tmp_path / "figures"
    assert not figures.up_to_date(lesson, root)
    [png, page] = figures.export_lesson(lesson, root)
    assert png.name == "01-a-rising-line.png"
    [picture] = figures.static_figures(read_notebook(lesson))
    (width, height), dpi = _size_and_dpi(png.read_bytes())
    (w72, h72), dpi72 = _size_and_dpi(picture.png)
    assert (round(dpi), round(dpi72)) == (200, 72) and width > 2.7 * w72 and height > 2.7 * h72
    assert f"drawn beside the notebook's picture {picture.source}" in page.read_text(encoding="utf-8")
    assert figures.up_to_date(lesson, root)
    assert lesson.read_bytes() == committed, "the notebook itself is not touched"


def test_a_run_that_draws_other_pictures_than_the_notebook_shows_says_to_execute_the_notebook(tmp_path):
    from utils.course import notebooks as nbs

    lesson, _ = _lesson_drawing(tmp_path, "the old title")

    assert nbs.execute(lesson, save=True)["error"] is None
    newer_lesson, _ = _lesson_drawing(tmp_path / "newer", "a new title")
    assert nbs.execute(newer_lesson, save=True)["error"] is None
    with pytest.raises(figures.FiguresError) as error:
        figures.export_lesson(lesson, tmp_path / "figures", run=read_notebook(newer_lesson))
    message = str(error.value)
    assert "the notebook shows 'the old title', the new run drew 'a new title'" in message
    assert "python -m utils.course.notebooks execute" in message


def test_make_figures_leaves_a_lesson_whose_pictures_have_not_changed_without_running_it(monkeypatch, capsys):
    def no_run(path):
        raise AssertionError(f"{path.name} was run again although its page is current")

    monkeypatch.setattr(figures, "sharp_run", no_run)
    current = [p for p in figures.lessons() if figures.up_to_date(p)]
    assert current, "the committed pages are current (see the tests above)"
    monkeypatch.setattr(figures, "lessons", lambda: current[:1])
    monkeypatch.setattr(figures.diagrams, "write_lesson", lambda lesson, out: [])
    assert figures.main([]) == 0
    assert "(up to date)" in capsys.readouterr().out


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
